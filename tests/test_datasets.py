from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakedata import COLORS, write_idx, write_tiny_imagenet
from lrsweep import datasets
from lrsweep.config import DatasetConfig, ModelConfig
from lrsweep.datasets import check_available, load_data
from lrsweep.errors import ConfigError
from lrsweep.models import build_model

SHARED = Path(__file__).parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def fresh_cache():
    datasets.clear_cache()
    yield
    datasets.clear_cache()


def cfg(**kw):
    return DatasetConfig(**kw)


# --------------------------------------------------------------------------- MNIST-like


def test_fashion_mnist_idx_files_load(tmp_path):
    written = write_idx(tmp_path, "FashionMNIST", n_train=20, n_test=8)
    d = load_data(cfg(name="fashion-mnist", root=str(tmp_path)))
    assert d.train_x.shape == (20, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert d.val_x.shape == (8, 1, 28, 28) and d.val_y.dtype == torch.int64
    assert np.array_equal(d.train_x[:, 0].numpy(), written["train"][0])
    assert np.array_equal(d.train_y.numpy(), written["train"][1])
    assert np.array_equal(d.val_x[:, 0].numpy(), written["test"][0])
    assert np.array_equal(d.val_y.numpy(), written["test"][1])
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.mean.shape == (1, 1, 1, 1)
    assert d.mean.item() == pytest.approx(written["train"][0].mean(), rel=1e-5)  # units of uint8 pixels
    assert d.std.item() == pytest.approx(written["train"][0].std(), rel=1e-4)
    x = d.normalize(d.train_x)
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1e-4 and x.std().item() == pytest.approx(1, abs=1e-2)
    assert load_data(cfg(name="fashion-mnist", root=str(tmp_path))) is d  # in-process cache


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_missing_mnist_files_name_root_and_files(tmp_path, name, folder):
    c = cfg(name=name, root=str(tmp_path))
    for call in (check_available, load_data):
        with pytest.raises(ConfigError) as e:
            call(c)
        assert e.value.path == "dataset.root"
        msg = str(e.value)
        assert str(tmp_path / folder / "raw") in msg and "dataset.download: true" in msg and "\n" not in msg
        for f in datasets.MNIST_FILES:
            assert f in msg
    check_available(cfg(name=name, root=str(tmp_path), download=True))  # download on: nothing to complain about


def test_partly_missing_mnist_names_the_missing_file(tmp_path):
    write_idx(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match="missing t10k-labels-idx1-ubyte under"):
        check_available(cfg(name="mnist", root=str(tmp_path)))


def test_failed_download_is_one_line_config_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
                           "<urlopen error [Errno -3] Temporary failure in name resolution>\n")
    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(ConfigError) as e:
        load_data(cfg(name="mnist", root=str(tmp_path), download=True))
    msg = str(e.value)
    assert e.value.path == "dataset.download" and "\n" not in msg
    assert "failed" in msg and "Temporary failure in name resolution" in msg and str(tmp_path / "MNIST" / "raw") in msg


def test_real_mnist():
    if not (SHARED / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"no MNIST under {SHARED}")
    d = load_data(cfg(name="mnist", root=str(SHARED)))
    assert d.train_x.shape == (60000, 1, 28, 28) and d.val_x.shape == (10000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and sorted(d.train_y.unique().tolist()) == list(range(10))
    assert d.mean.item() == pytest.approx(0.1307 * 255, abs=0.1)  # the well-known MNIST statistics
    assert d.std.item() == pytest.approx(0.3081 * 255, abs=0.1)


# --------------------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet_loads_and_caches(tmp_path, monkeypatch):
    wnids, val_labels = write_tiny_imagenet(tmp_path, n_classes=3, per_class=4, n_val=6)
    c = cfg(name="tiny-imagenet", root=str(tmp_path))
    d = load_data(c)
    assert d.train_x.shape == (12, 3, 64, 64) and d.train_x.dtype == torch.uint8
    assert d.val_x.shape == (6, 3, 64, 64) and d.num_classes == 3 and d.input_shape == (3, 64, 64)
    assert d.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # class index = order in wnids.txt
    assert d.val_y.tolist() == val_labels
    for x, y in zip(d.val_x, d.val_y):  # solid colours survive JPEG within a few levels
        assert (x.float().mean((1, 2)) - torch.tensor(COLORS[y], dtype=torch.float)).abs().max() < 8
    base = tmp_path / "tiny-imagenet-200"
    assert (base / "lrsweep-cache-train.pt").is_file() and (base / "lrsweep-cache-val.pt").is_file()
    assert not list(base.glob("*.tmp*"))

    datasets.clear_cache()
    with monkeypatch.context() as m:
        m.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded a JPEG despite the cache"))
        d2 = load_data(c)
    for k in ("train_x", "train_y", "val_x", "val_y", "mean", "std"):
        assert torch.equal(getattr(d, k), getattr(d2, k))

    # a new image makes the cache stale; a corrupt cache file is rebuilt
    Image.new("RGB", (64, 64), COLORS[1]).save(base / "train" / wnids[1] / "images" / "extra.JPEG")
    (base / "lrsweep-cache-val.pt").write_bytes(b"garbage")
    datasets.clear_cache()
    d3 = load_data(c)
    assert d3.train_x.shape[0] == 13 and d3.train_y.tolist().count(1) == 5
    assert torch.equal(d3.val_x, d.val_x)
    assert torch.load(base / "lrsweep-cache-val.pt", weights_only=True)["x"].shape == (6, 3, 64, 64)

    # same counts and labels, different file (sorted first in its class): still stale
    (base / "train" / wnids[1] / "images" / "extra.JPEG").unlink()
    Image.new("RGB", (64, 64), COLORS[4]).save(base / "train" / wnids[1] / "images" / "extra2.JPEG")
    datasets.clear_cache()
    d4 = load_data(c)
    assert d4.train_x.shape[0] == 13 and d4.train_x[4].float().mean((1, 2)).tolist() == pytest.approx(COLORS[4], abs=8)


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(ConfigError) as e:
        check_available(cfg(name="tiny-imagenet", root=str(tmp_path)))
    assert e.value.path == "dataset.root"
    assert "wnids.txt" in str(e.value) and "val_annotations.txt" in str(e.value) and "tiny-imagenet-200" in str(e.value)


# --------------------------------------------------------------------------- digits, synthetic


def test_digits_holdout_is_fixed():
    d = load_data(cfg(name="digits"))
    assert d.train_x.shape == (1438, 1, 8, 8) and d.val_x.shape == (359, 1, 8, 8)
    assert d.train_x.dtype == torch.float32 and d.train_x.min() == 0 and d.train_x.max() == 16
    assert d.num_classes == 10 and d.input_shape == (1, 8, 8)
    datasets.clear_cache()
    d2 = load_data(cfg(name="digits", subset_seed=5))  # the test hold-out does not depend on subset_seed
    assert torch.equal(d.val_x, d2.val_x) and torch.equal(d.train_y, d2.train_y)


def test_synthetic_shapes_determinism_and_learnable():
    syn = dict(n_train=600, n_val=200, classes=5, shape=[3, 4, 6], noise=2.0)
    d = load_data(cfg(name="synthetic", synthetic=syn))
    assert d.train_x.shape == (600, 3, 4, 6) and d.val_x.shape == (200, 3, 4, 6) and d.num_classes == 5
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64 and d.mean.shape == (1, 3, 1, 1)
    datasets.clear_cache()
    d2 = load_data(cfg(name="synthetic", synthetic=syn))
    assert d2 is not d and torch.equal(d.train_x, d2.train_x) and torch.equal(d.val_y, d2.val_y)
    d3 = load_data(cfg(name="synthetic", synthetic={**syn, "n_train": 300}))
    assert torch.equal(d3.val_x, d.val_x)  # val does not depend on n_train

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", hidden=[64]), d.input_shape, d.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        idx = torch.randint(600, (64,))
        loss = torch.nn.functional.cross_entropy(model(d.normalize(d.train_x[idx])), d.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(d.normalize(d.val_x)).argmax(1) == d.val_y).float().mean().item()
    assert acc > 0.7  # chance is 0.2


def test_bad_synthetic_shape():
    with pytest.raises(ConfigError, match="dataset.synthetic.shape"):
        load_data(cfg(name="synthetic", synthetic={"shape": [8, 8]}))


# --------------------------------------------------------------------------- splits and subsets


def rows(x):
    return {tuple(r.tolist()) for r in x.flatten(1)}


def test_val_split_fraction_holds_out_part_of_train():
    syn = dict(n_train=400, n_val=50, classes=3, shape=[1, 2, 2])
    full = load_data(cfg(name="synthetic", synthetic=syn))
    d = load_data(cfg(name="synthetic", synthetic=syn, val_split=0.25))
    assert len(d.val_y) == 100 and len(d.train_y) == 300
    assert rows(d.train_x).isdisjoint(rows(d.val_x)) and rows(d.train_x) | rows(d.val_x) == rows(full.train_x)
    assert d.mean == pytest.approx(d.train_x.mean().item())  # stats from the split train part
    datasets.clear_cache()
    again = load_data(cfg(name="synthetic", synthetic=syn, val_split=0.25))
    assert torch.equal(again.val_x, d.val_x)
    other = load_data(cfg(name="synthetic", synthetic=syn, val_split=0.25, subset_seed=1))
    assert not torch.equal(other.val_x, d.val_x)


def test_train_and_val_subsets():
    full = load_data(cfg(name="digits"))
    d = load_data(cfg(name="digits", train_subset=100, val_subset=30))
    assert d.train_x.shape == (100, 1, 8, 8) and d.val_x.shape == (30, 1, 8, 8)
    assert rows(d.train_x) <= rows(full.train_x) and rows(d.val_x) <= rows(full.val_x)
    assert d.mean.item() == pytest.approx(d.train_x.mean().item(), rel=1e-5)
    assert d.std.item() == pytest.approx(d.train_x.std(unbiased=False).item(), rel=1e-4)
    datasets.clear_cache()
    assert torch.equal(load_data(cfg(name="digits", train_subset=100, val_subset=30)).train_x, d.train_x)
    assert not torch.equal(load_data(cfg(name="digits", train_subset=100, subset_seed=1)).train_x, d.train_x)
    with pytest.raises(ConfigError, match="dataset.train_subset.*1438"):
        load_data(cfg(name="digits", train_subset=5000))
