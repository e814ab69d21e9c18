import pytest
import torch
from torch import nn

from lrsweep.config import ModelConfig
from lrsweep.errors import ConfigError
from lrsweep.models import build_model, count_flops

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 64, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["mlp", "cnn5", "resnet18"])
def test_output_shape(name, shape):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), shape, 7)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_cnn5_is_exactly_the_benchmark_model():
    model = build_model(ModelConfig(name="cnn5"), (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1)), (64, 64, (3, 3), (1, 1))]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    # conv 1*32*9+32, 32*64*9+64, 64*64*9+64; fc 64*3*3*128+128, 128*10+10
    expected = 320 + 18496 + 36928 + 73856 + 1290
    assert sum(p.numel() for p in model.parameters()) == expected == 130890


def test_cnn5_too_small_input():
    with pytest.raises(ConfigError, match="model.name"):
        build_model(ModelConfig(name="cnn5"), (1, 4, 4), 10)


def test_mlp_hidden_widths():
    model = build_model(ModelConfig(name="mlp", hidden=[32, 16]), (1, 8, 8), 10)
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(64, 32), (32, 16), (16, 10)]


def test_resnet18_small_input_stem():
    model = build_model(ModelConfig(name="resnet18"), (1, 28, 28), 10)
    c = model.conv1
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.bias) == (1, 64, (3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.maxpool, nn.Identity) and model.fc.out_features == 10


def test_count_flops():
    mlp = build_model(ModelConfig(name="mlp", hidden=[256, 256]), (1, 28, 28), 10)
    assert count_flops(mlp, (1, 28, 28)) == 2 * (784 * 256 + 256 * 256 + 256 * 10)
    cnn = build_model(ModelConfig(name="cnn5"), (1, 28, 28), 10)
    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 7 * 7 * 64 * 64 * 9 + 576 * 128 + 128 * 10
    assert count_flops(cnn, (1, 28, 28)) == 2 * macs
    resnet = build_model(ModelConfig(name="resnet18"), (3, 8, 8), 10).train()
    assert count_flops(resnet, (3, 8, 8)) > 0 and resnet.training  # 1x1 maps at the end: needs eval mode
