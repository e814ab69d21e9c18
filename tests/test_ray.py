"""Ray executor on a local Ray instance started here (ray.init(num_cpus=2)): the same tables as
local execution, a task whose worker dies is retried, a task that keeps dying is `failed`."""
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from lrsweep import execution as ex
from lrsweep import storage
from lrsweep import sweep as sweep_mod
from lrsweep.cli import app
from lrsweep.config.grid import build_sweep

from conftest import make_config
from test_executor import assert_same_tables

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'lrsweep[ray]')")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module. Its workers inherit CRASH_ONCE_ENV from this process; the
    marker file exists (no crash) unless a test removes it."""
    marker = tmp_path_factory.mktemp("ray") / "crashed"
    marker.touch()
    old = os.environ.get(ex.CRASH_ONCE_ENV)
    os.environ[ex.CRASH_ONCE_ENV] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {ex.CRASH_ONCE_ENV: str(marker), "OMP_NUM_THREADS": "1"}})
    try:
        yield marker
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop(ex.CRASH_ONCE_ENV, None)
        else:
            os.environ[ex.CRASH_ONCE_ENV] = old


def test_a_grid_through_ray_gives_the_same_tables_as_local(local_ray, write_config, tmp_path):
    raw = make_config(sweep={"batch_size": [16, 32], "lr": [0.01, 0.1, 50.0]}, **{"train.steps": 30})
    local = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "local")
    r = CliRunner().invoke(app, ["run", str(write_config(raw)), "--out", str(tmp_path / "ray"), "--executor", "ray"])
    assert r.exit_code == 0, r.output
    assert "6 runs in" in r.output and "4 complete" in r.output and "2 diverged" in r.output
    assert_same_tables(local.sweep_dir, tmp_path / "ray" / "tiny")
    assert ray.is_initialized()  # a Ray the executor did not start is left running


def test_a_ray_task_whose_worker_dies_is_retried_and_the_sweep_completes(local_ray, tmp_path):
    local_ray.unlink()  # the first task to start hard-exits its worker process
    raw = make_config(sweep={"lr": [0.01, 0.03, 0.1]}, **{"train.steps": 10})
    out = sweep_mod.run_sweep(build_sweep(raw), tmp_path, executor=ex.RayExecutor(max_retries=2))
    assert local_ray.exists()  # it did crash once
    index = pd.read_csv(out.sweep_dir / storage.INDEX)
    assert len(index) == 3 and index.run_id.is_unique and set(index.status) == {"complete"}


def test_a_ray_task_that_keeps_failing_is_recorded_failed_and_the_sweep_goes_on(local_ray, tmp_path):
    local_ray.unlink()
    raw = make_config(sweep={"lr": [0.01, 0.03, 0.1]}, **{"train.steps": 10})
    out = sweep_mod.run_sweep(build_sweep(raw), tmp_path, executor=ex.RayExecutor(max_retries=0))
    index = pd.read_csv(out.sweep_dir / storage.INDEX)
    assert out.counts == {"complete": 2, "failed": 1} and len(index) == 3
    assert "Ray task failed after 0 retries" in index[index.status == "failed"].iloc[0]["error"]
    # ... and --retry-failed (retry=('failed',)) redoes just that one
    again = sweep_mod.run_sweep(build_sweep(raw), tmp_path, executor=ex.RayExecutor(), retry=("failed",))
    assert again.counts == {"complete": 1} and again.skipped == 2


def test_gpus_the_cluster_does_not_have_are_a_one_line_error(local_ray, write_config, tmp_path):
    r = CliRunner().invoke(app, ["run", str(write_config()), "--out", str(tmp_path), "--executor", "ray",
                                 "--gpus-per-task", "0.25"])
    assert r.exit_code == 2 and "the Ray cluster has no GPUs" in r.output.replace("\n", ""), r.output
