"""Your own model: a factory function next to the YAML, torchvision's zoo by name, one-line
errors naming the factory, run ids, and the vectorized engine's fallback."""
from __future__ import annotations

import json
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import build_sweep, load_sweep

from conftest import make_config

runner = CliRunner()
MYNETS = textwrap.dedent('''
    import torch
    from torch import nn

    def tiny(num_classes, input_shape, width=8):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(), nn.Linear(width, num_classes))

    def not_a_module(num_classes, input_shape):
        return [1, 2]

    def broken(num_classes, input_shape):
        raise RuntimeError("no GPU here")

    def wrong_shape(num_classes, input_shape):
        return nn.Linear(3, num_classes)

    class Tied(nn.Module):
        def __init__(self, d, k):
            super().__init__()
            self.a, self.b = nn.Linear(d, d), nn.Linear(d, d)
            self.b.weight = self.a.weight  # shared: cannot be stacked
            self.out = nn.Linear(d, k)
        def forward(self, x):
            x = x.flatten(1)
            return self.out(torch.relu(self.b(torch.relu(self.a(x)))))

    def tied(num_classes, input_shape):
        c, h, w = input_shape
        return Tied(c * h * w, num_classes)
''')


@pytest.fixture
def project(tmp_path):
    """A folder with mynets.py and a sweep file using it, as a user would have."""
    (tmp_path / "mynets.py").write_text(MYNETS)

    def write(model: dict, **changes) -> str:
        raw = make_config(sweep={"batch_size": [16], "lr": [0.01, 0.1]}, **{"train.steps": 4, "train.eval_every": 4,
                                                                           **changes})
        raw["model"] = model
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return str(path)
    return write


def run(path, out, *extra):
    return runner.invoke(app, ["run", path, "--out", str(out), "--workers", "1", *extra])


def results(out):
    return [json.loads(p.read_text()) for p in out.glob("tiny/*/result.json")]


def test_a_factory_next_to_the_yaml_trains_without_installing_anything(project, tmp_path):
    r = run(project({"factory": "mynets:tiny", "args": {"width": 16}}), tmp_path / "out")
    assert r.exit_code == 0, r.output
    res = results(tmp_path / "out")
    assert len(res) == 2 and {x["status"] for x in res} == {"complete"} and {x["model"] for x in res} == {"mynets:tiny"}
    cfg = json.loads(next((tmp_path / "out").glob("tiny/*/config.json")).read_text())
    assert cfg["model"]["args"] == {"width": 16} and cfg["model"]["factory_path"] == str(tmp_path)


@pytest.mark.parametrize("model, message", [
    ({"factory": "nosuchmodule:tiny"}, "model.factory: nosuchmodule:tiny: cannot import 'nosuchmodule'"),
    ({"factory": "mynets:nothing"}, "module 'mynets' has no 'nothing'"),
    ({"factory": "mynets:not_a_module"}, "mynets:not_a_module(num_classes=4, input_shape=(1, 8, 8)) returned a list, expected a torch.nn.Module"),
    ({"factory": "mynets:broken"}, "raised RuntimeError: no GPU here"),
    ({"factory": "mynets:wrong_shape"}, "model: mynets:wrong_shape cannot take inputs of shape [N, 1, 8, 8]"),
    ({"factory": "mynets"}, 'expected "package.module:function"'),
    ({"name": "mlp", "factory": "mynets:tiny"}, "not both"),
    ({"name": "torchvision", "arch": "resnet18", "args": {"weights": "DEFAULT"}}, "model.args.weights: pretrained weights"),
    ({"name": "torchvision", "arch": "nosuchnet"}, "model.arch: unknown torchvision model 'nosuchnet'"),
])
def test_factory_errors_are_one_line_exit_2_and_record_nothing(project, tmp_path, model, message):
    r = run(project(model), tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1
    assert results(tmp_path / "out") == []  # the user's mistake is not a run result


def test_torchvision_zoo_by_name_sets_the_number_of_classes(project, tmp_path):
    path = project({"name": "torchvision", "arch": "resnet18", "args": {"weights": None}},
                   **{"dataset.synthetic.shape": [3, 32, 32], "dataset.synthetic.n_train": 64,
                      "train.steps": 2, "train.eval_every": 2})
    r = run(path, tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert {x["model"] for x in results(tmp_path / "out")} == {"torchvision:resnet18"}


def test_the_run_id_covers_the_factory_and_its_args_not_where_it_lives(project, tmp_path):
    base = load_sweep(project({"factory": "mynets:tiny", "args": {"width": 16}})).runs[0]
    other_args = load_sweep(project({"factory": "mynets:tiny", "args": {"width": 32}})).runs[0]
    other_fn = load_sweep(project({"factory": "mynets:tied"})).runs[0]
    moved = build_sweep(yaml.safe_load(open(project({"factory": "mynets:tiny", "args": {"width": 16}}))),
                        ["model.factory_path=/somewhere/else"]).runs[0]
    assert base.run_id not in (other_args.run_id, other_fn.run_id)
    assert moved.run_id == base.run_id


def test_vectorized_engine_stacks_a_user_model_and_falls_back_with_a_note(project, tmp_path):
    r = run(project({"factory": "mynets:tiny"}), tmp_path / "a", "--engine", "vectorized")
    assert r.exit_code == 0, r.output
    assert {(x["engine"], x["group_size"]) for x in results(tmp_path / "a")} == {("vectorized", 2)}
    r = run(project({"factory": "mynets:tied"}), tmp_path / "b", "--engine", "vectorized")
    assert r.exit_code == 0, r.output
    assert "note: the vectorized engine cannot train mynets:tied" in r.output and "tied weights" in r.output
    res = results(tmp_path / "b")
    assert {x["engine"] for x in res} == {"sequential"} and all("tied weights" in x["engine_note"] for x in res)
    assert {x["status"] for x in res} == {"complete"}
