"""The benchmark's data: where it looks for MNIST (an explicit root, $LRSWEEP_DATA, then
../shared/datasets from the current directory, never lrsweep's install location), and that it
generates data when there is none. The grid run itself: test_engine.py -k bench."""
from pathlib import Path

import pytest

from lrsweep import benchmark as bench
from lrsweep.errors import ParameterError, UserError


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory with no ../shared/datasets, and no $LRSWEEP_DATA."""
    work = tmp_path / "nowhere" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv(bench.DATA_ENV, raising=False)
    return work


def tiny_mnist(root: Path) -> Path:
    return bench.write_fake_mnist(root, n_train=20, n_test=10)


def test_an_explicit_data_root_comes_first_and_must_hold_mnist(elsewhere, tmp_path, monkeypatch):
    given = tiny_mnist(tmp_path / "given")
    monkeypatch.setenv(bench.DATA_ENV, str(tmp_path / "no-such-folder"))  # not looked at
    assert bench.find_mnist(given) == given.resolve()
    with pytest.raises(ParameterError, match="no MNIST/raw/train-images-idx3-ubyte in") as e:
        bench.find_mnist(tmp_path / "empty")
    assert e.value.param == "data_root"


def test_lrsweep_data_is_next_then_shared_datasets_beside_the_current_directory(elsewhere, tmp_path, monkeypatch):
    assert bench.find_mnist() is None  # nothing anywhere: generated data
    shared = tiny_mnist(elsewhere.parent / "shared" / "datasets")
    assert bench.find_mnist() == shared.resolve()
    env = tiny_mnist(tmp_path / "env")
    monkeypatch.setenv(bench.DATA_ENV, str(env))
    assert bench.find_mnist() == env.resolve()
    monkeypatch.setenv(bench.DATA_ENV, str(tmp_path / "empty"))
    with pytest.raises(UserError, match=f"{bench.DATA_ENV}: no MNIST"):
        bench.find_mnist()


def test_without_mnist_the_benchmark_generates_its_data(elsewhere, tmp_path):
    lines = []
    report = bench.run_bench(bench.QUICK, (), out=tmp_path / "bench.json", device="cpu", log=lines.append,
                             peak_seconds=0.01)
    assert report["data"]["source"].startswith("generated MNIST-shaped data")
    assert "MNIST not found: generating IDX files of the same shape" in lines
    assert not Path(report["data"]["root"]).exists()  # a temp folder, removed after the run
    assert (tmp_path / "bench.json").is_file() and report["variants"] == {}


def test_variants_are_checked_by_name():
    assert bench.choose_variants(None) == bench.DEFAULT_FULL and bench.choose_variants("all") == bench.DEFAULT_QUICK
    assert bench.choose_variants(None, quick=True) == bench.DEFAULT_QUICK
    assert bench.choose_variants(" plain, auto") == ("plain", "auto")
    with pytest.raises(ParameterError, match="variants: expected some of .* got 'fast'"):
        bench.choose_variants("plain,fast")
