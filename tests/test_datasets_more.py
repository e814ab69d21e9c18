"""Your own data: CIFAR-10/100 in the official format, ImageFolder trees, dataset factories
(tensors or Datasets) next to the YAML; each trained through the CLI, and each mistake one line
with exit 2 before anything trains, recording nothing."""
from __future__ import annotations

import json
import os
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from fakedata import COLORS, write_cifar, write_imagefolder
from lrsweep import datasets
from lrsweep.cli import app
from lrsweep.config import DatasetConfig, parse_run_config
from lrsweep.config.grid import build_sweep, load_sweep, run_id
from lrsweep.datasets import check_available, load_data
from lrsweep.errors import ConfigError

from conftest import make_config

runner = CliRunner()

MYDATA = textwrap.dedent('''
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import Dataset

    CALLS = 0

    def features(n=40, d=5):
        global CALLS
        CALLS += 1
        g = torch.Generator().manual_seed(0)
        y = torch.arange(n) % 3
        x = torch.randn(n, d, generator=g) + 2 * y[:, None].float()
        k = n * 3 // 4
        return {"train_x": x[:k], "train_y": y[:k], "val_x": x[k:], "val_y": y[k:]}

    class Squares(Dataset):
        """Solid squares, red level by index, label i % 2; sizes[i] overrides the size."""
        def __init__(self, n, size=8, sizes=None):
            self.n, self.size, self.sizes = n, size, sizes or {}
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            s = self.sizes.get(i, self.size)
            return Image.new("RGB", (s, s), (i * 20 % 256, 0, 0)), i % 2

    def squares(n=12):
        global CALLS
        CALLS += 1
        return Squares(n), Squares(n // 2)

    def gray(n=10):
        x = np.arange(n * 36, dtype=np.uint8).reshape(n, 6, 6)
        return {"train_x": x, "train_y": np.arange(n) % 2, "num_classes": 5}

    def big():
        return {"train": Squares(100000, 64), "val": Squares(1000, 64)}

    def ragged():
        return Squares(6, sizes={3: 9}), Squares(2)

    def not_data():
        return [1, 2]

    def broken():
        raise RuntimeError("no data here")

    def mismatched():
        return {"train_x": torch.zeros(10, 4), "train_y": torch.zeros(9, dtype=torch.long)}

    def other_width():
        return {"train_x": torch.zeros(10, 4), "train_y": torch.arange(10) % 2,
                "val_x": torch.zeros(4, 5), "val_y": torch.arange(4) % 2}

    def float_labels():
        return {"train_x": torch.zeros(10, 4), "train_y": torch.zeros(10)}

    def typo():
        return {"train_x": torch.zeros(10, 4), "train_y": torch.arange(10) % 2, "val_X": torch.zeros(2, 4)}

    def no_val():
        return {"train_x": torch.randn(20, 4), "train_y": torch.arange(20) % 2}
''')


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    datasets.clear_cache()
    monkeypatch.delitem(sys.modules, "mydata", raising=False)  # each test imports its own
    yield
    datasets.clear_cache()


def sweep_file(folder, dataset: dict, **train) -> str:
    raw = make_config(**{"name": "data", "model.hidden": [8], "train.steps": 2, "train.eval_every": 2,
                         "sweep": {"batch_size": [4], "lr": [0.05]}, **{f"train.{k}": v for k, v in train.items()}})
    raw["dataset"] = dataset
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def cli_run(path, out):
    return runner.invoke(app, ["run", path, "--out", str(out), "--workers", "1"])


def results(out):
    return [json.loads(p.read_text()) for p in out.glob("data/*/result.json")]


def trains(tmp_path, dataset: dict) -> dict:
    """Run the one-run sweep on `dataset` through the CLI; its result.json."""
    r = cli_run(sweep_file(tmp_path, dataset), tmp_path / "out")
    assert r.exit_code == 0, r.output
    (res,) = results(tmp_path / "out")
    assert res["status"] == "complete" and res["steps"] == 2
    return res


def refused(tmp_path, dataset: dict, message: str) -> None:
    r = cli_run(sweep_file(tmp_path, dataset), tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1
    assert results(tmp_path / "out") == []  # the user's mistake is not a run result


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("kind, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_files_load_as_torchvision_reads_them(tmp_path, monkeypatch, kind, classes):
    written = write_cifar(tmp_path, kind)
    d = load_data(DatasetConfig(name=kind, root=str(tmp_path)))
    assert d.train_x.dtype == torch.uint8 and d.input_shape == (3, 32, 32) and d.num_classes == classes
    assert len(d.train_y) == (30 if kind == "cifar10" else 6) and len(d.val_y) == 6  # 5 batches x 6, test 6
    assert np.array_equal(d.train_x.numpy(), written["train"][0]) and d.train_y.tolist() == written["train"][1].tolist()
    assert np.array_equal(d.val_x.numpy(), written["test"][0]) and d.val_y.tolist() == written["test"][1].tolist()
    assert d.train_x[0, :, 5, 7].tolist() == list(COLORS[int(d.train_y[0]) % 5])  # channel-major rows, as documented

    import torchvision.datasets.cifar as tvc  # the reference reader (its checksums are of the real files)
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    ref = (tvc.CIFAR10 if kind == "cifar10" else tvc.CIFAR100)(str(tmp_path), train=True)
    assert np.array_equal(ref.data.transpose(0, 3, 1, 2), d.train_x.numpy()) and ref.targets == d.train_y.tolist()


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_trains_through_the_cli(tmp_path, kind):
    write_cifar(tmp_path / "data", kind)
    assert trains(tmp_path, {"name": kind, "root": str(tmp_path / "data")})["dataset"] == kind


def _repickle(path, change):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    change(d)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "missing data_batch_3 under"),
    (lambda p: p.write_bytes(b"garbage"), "data_batch_3: not a CIFAR batch file"),
    (lambda p: _repickle(p, lambda d: d.update(data=d["data"][:, :100])), "data_batch_3: 'data' is uint8 [6, 100], expected uint8 [N, 3072]"),
    (lambda p: _repickle(p, lambda d: d["labels"].pop()), "data_batch_3: 5 labels for 6 images"),
    (lambda p: _repickle(p, lambda d: d["labels"].__setitem__(0, 10)), "data_batch_3: holds label 10; the labels of 10 classes are 0-9"),
    (lambda p: p.write_bytes(b"cos\nsystem\n(S'touch " + str(p.parent / "pwned").encode() + b"'\ntR."),
     "data_batch_3: not a CIFAR batch file (UnpicklingError: it asks for os.system, which a CIFAR file never does)"),
])
def test_a_missing_or_damaged_cifar_file_is_one_line_naming_it(tmp_path, damage, message):
    write_cifar(tmp_path / "data")
    damage(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3")
    refused(tmp_path, {"name": "cifar10", "root": str(tmp_path / "data")}, message)
    assert not (tmp_path / "data" / "cifar-10-batches-py" / "pwned").exists()  # nothing a file asks for runs


def test_no_cifar_files_says_where_and_how(tmp_path):
    with pytest.raises(ConfigError) as e:
        check_available(DatasetConfig(name="cifar100", root=str(tmp_path)))
    assert e.value.path == "dataset.root" and str(tmp_path / "cifar-100-python") in str(e.value)
    assert "no CIFAR-100 files" in str(e.value) and "train, test" in str(e.value) and "download: true" in str(e.value)
    check_available(DatasetConfig(name="cifar100", root=str(tmp_path), download=True))


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_train_and_val_decode_once_into_a_cache(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "imgs", classes=("dog", "cat", "eel"), size=(12, 10))
    Image.new("RGB", (4, 4)).save(root / "train" / "cat" / "notes.txt.gif")  # not an image extension: ignored
    (root / "train" / ".hidden").mkdir()
    (root / "train" / "cat" / "._cat_0.png").write_bytes(b"macOS metadata")
    c = DatasetConfig(name="imagefolder", root=str(root), image_size=8)
    d = load_data(c)
    assert d.train_x.shape == (12, 3, 8, 8) and d.val_x.shape == (6, 3, 8, 8) and d.train_x.dtype == torch.uint8
    assert d.num_classes == 3 and d.input_shape == (3, 8, 8)
    assert d.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and d.val_y.tolist() == [0, 0, 1, 1, 2, 2]
    # sorted class names: cat 0, dog 1, eel 2; a solid colour survives resizing and cropping exactly
    for x, y in zip(d.val_x, d.val_y):
        assert x[:, 3, 3].tolist() == list(COLORS[("dog", "cat", "eel").index(("cat", "dog", "eel")[y])])
    assert {p.name for p in root.glob("lrsweep-cache-*")} == {"lrsweep-cache-train-8.pt", "lrsweep-cache-val-8.pt"}

    datasets.clear_cache()
    with monkeypatch.context() as m:
        m.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded an image despite the cache"))
        again = load_data(c)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.val_y, d.val_y)


def test_imagefolder_without_val_holds_out_a_fraction_and_works_read_only(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=10, val=False)

    def read_only(*a):
        raise PermissionError(13, "Read-only file system")
    monkeypatch.setattr(os, "replace", read_only)
    d = load_data(DatasetConfig(name="imagefolder", root=str(root), image_size=16, val_split=0.25))
    assert len(d.train_y) == 15 and len(d.val_y) == 5 and d.train_x.shape[1:] == (3, 16, 16)
    assert sorted((d.train_y.tolist() + d.val_y.tolist())) == [0] * 10 + [1] * 10
    assert list(root.glob("lrsweep-cache-*")) == []  # no cache, no temp file left


@pytest.mark.parametrize("layout", ["train-val", "fraction"])
def test_imagefolder_trains_through_the_cli(tmp_path, layout):
    root = write_imagefolder(tmp_path / "imgs", val=layout == "train-val")
    ds = {"name": "imagefolder", "root": str(root), "image_size": 8, **({"val_split": 0.25} if layout == "fraction" else {})}
    assert trains(tmp_path, ds)["dataset"] == "imagefolder"


def _unknown_val_class(root):
    (root / "val" / "fox").mkdir()
    Image.new("RGB", (8, 8)).save(root / "val" / "fox" / "f.png")


@pytest.mark.parametrize("change, dataset, message", [
    (_unknown_val_class, {}, "val/fox: a class train/ does not have (its classes: cat, dog, eel)"),
    (lambda r: (r / "val").rename(r / "valid"), {}, "has train/ but no val/"),
    (lambda r: [p.unlink() for p in (r / "train" / "dog").iterdir()], {}, "train/dog: no images"),
    (lambda r: (r / "train" / "cat" / "cat_1.png").write_bytes(b"not a png"), {}, "cannot read image"),
    (lambda r: None, {"max_gib": 1e-6}, "dataset.max_gib: "),
    (lambda r: None, {"root": "/no/such/folder"}, "/no/such/folder: no such folder"),
])
def test_imagefolder_mistakes_are_one_line(tmp_path, change, dataset, message):
    root = write_imagefolder(tmp_path / "imgs")
    change(root)
    refused(tmp_path, {"name": "imagefolder", "root": str(root), "image_size": 8, **dataset}, message)


def test_a_flat_imagefolder_needs_a_fraction(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", val=False)
    with pytest.raises(ConfigError, match="has no train/ and val/ folders: hold out a fraction"):
        check_available(DatasetConfig(name="imagefolder", root=str(root)))


# --------------------------------------------------------------------------- factories


@pytest.fixture
def mydata(tmp_path):
    (tmp_path / "mydata.py").write_text(MYDATA)
    return tmp_path


def test_a_factory_of_tensors_next_to_the_yaml_trains_and_is_called_once(mydata, tmp_path):
    res = trains(tmp_path, {"factory": "mydata:features", "args": {"d": 6}})
    assert res["dataset"] == "mydata:features"
    assert sys.modules["mydata"].CALLS == 1  # preflight loaded it; training in this process reused it
    cfg = json.loads(next((tmp_path / "out").glob("data/*/config.json")).read_text())
    assert cfg["dataset"]["factory_path"] == str(tmp_path) and cfg["dataset"]["args"] == {"d": 6}

    c = load_sweep(sweep_file(tmp_path, {"factory": "mydata:features", "args": {"d": 6}})).runs[0].config.dataset
    d = load_data(c)
    assert d.train_x.shape == (30, 6, 1, 1) and d.val_x.shape == (10, 6, 1, 1) and d.num_classes == 3
    assert d.mean.shape == (1, 6, 1, 1)  # features are normalised one by one
    other = load_data(c.model_copy(update={"args": {"d": 3}}))  # the cache is keyed by the args
    assert other.train_x.shape == (30, 3, 1, 1)


def test_a_factory_of_datasets_is_materialised_once(mydata, tmp_path):
    assert trains(tmp_path, {"factory": "mydata:squares"})["dataset"] == "mydata:squares"
    assert sys.modules["mydata"].CALLS == 1
    d = load_data(DatasetConfig(factory="mydata:squares", args={"n": 8}, factory_path=str(tmp_path)))
    assert d.train_x.shape == (8, 3, 8, 8) and d.train_x.dtype == torch.uint8 and d.val_x.shape == (4, 3, 8, 8)
    assert d.train_x[:, 0, 0, 0].tolist() == [i * 20 for i in range(8)] and d.train_y.tolist() == [0, 1] * 4
    assert d.num_classes == 2


def test_a_factory_of_numpy_images_without_val_takes_a_fraction(mydata, tmp_path):
    c = DatasetConfig(factory="mydata:gray", factory_path=str(tmp_path), val_split=0.2)
    d = load_data(c)
    assert d.train_x.shape == (8, 1, 6, 6) and d.train_x.dtype == torch.uint8 and d.num_classes == 5
    with pytest.raises(ConfigError, match="dataset.val_split: mydata:gray has no validation split of its own"):
        load_data(c.model_copy(update={"val_split": "test"}))


@pytest.mark.parametrize("dataset, message", [
    ({"factory": "nosuchmodule:load"}, "dataset.factory: nosuchmodule:load: cannot import 'nosuchmodule'"),
    ({"factory": "mydata:nothing"}, "dataset.factory: mydata:nothing: module 'mydata' has no 'nothing'"),
    ({"factory": "mydata:broken"}, "dataset.factory: mydata:broken() raised RuntimeError: no data here"),
    ({"factory": "mydata:not_data"}, "dataset.factory: mydata:not_data() returned a list, expected a dict of tensors"),
    ({"factory": "mydata:typo"}, "returned a dict with unexpected key 'val_X'"),
    ({"factory": "mydata:mismatched"}, "mydata:mismatched() gave 10 train_x but 9 train_y"),
    ({"factory": "mydata:other_width"}, "gave val_x of [5, 1, 1] float32 but train_x of [4, 1, 1] float32"),
    ({"factory": "mydata:float_labels"}, "gave train_y as float32, expected integer class labels"),
    ({"factory": "mydata:ragged"}, "mydata:ragged() train[3]'s x is [3, 9, 9] uint8, train[0]'s [3, 8, 8] uint8"),
    ({"factory": "mydata:big"}, "mydata:big() returned Datasets of 100000 + 1000 examples of [3, 64, 64] uint8: "
                                "1.16 GiB as tensors, more than dataset.max_gib (1)"),
    ({"factory": "mydata:features", "args": {"dims": 3}}, "mydata:features(dims=3) raised TypeError"),
    ({"factory": "mydata"}, 'expected "package.module:function"'),
    ({"factory": "mydata:features", "name": "mnist"}, "not both"),
    ({"name": "mnist", "image_size": 32}, "`image_size` is for name: imagefolder"),
])
def test_factory_mistakes_are_one_line_exit_2_before_training(mydata, tmp_path, dataset, message):
    refused(tmp_path, {"max_gib": 1, **dataset}, message)


def test_the_run_id_covers_the_factory_and_args_not_where_it_lives_and_old_ids_stay(mydata, tmp_path):
    base = load_sweep(sweep_file(tmp_path, {"factory": "mydata:features", "args": {"d": 6}})).runs[0]
    other = load_sweep(sweep_file(tmp_path, {"factory": "mydata:features", "args": {"d": 5}})).runs[0]
    raw = yaml.safe_load(open(sweep_file(tmp_path, {"factory": "mydata:features", "args": {"d": 6}})))
    moved = build_sweep(raw, ["dataset.factory_path=/elsewhere", "dataset.max_gib=2"]).runs[0]
    assert base.run_id != other.run_id and moved.run_id == base.run_id
    plain = make_config(sweep=None)
    explicit = make_config(sweep=None, **{"dataset.image_size": 64, "dataset.max_gib": 1, "dataset.args": {}})
    assert run_id(parse_run_config(plain)) == run_id(parse_run_config(explicit))
