"""Optimizers: each one trains, SignSGD and sign-like Adam do what the formulas say."""
import pytest
import torch

from lrsweep.config import OPTIMIZERS, OptimizerConfig
from lrsweep.optimizers import OPTIMIZER_HPARAMS, SignSGD, build_optimizer


def least_squares_losses(cfg: OptimizerConfig, lr: float, steps: int = 40) -> list[float]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=g)
    y = X @ torch.randn(5, 1, generator=g) + 0.01 * torch.randn(64, 1, generator=g)
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    opt = build_optimizer(model.parameters(), cfg, lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("cfg,lr", [
    (dict(name="sgd"), 0.1),
    (dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=1e-4), 0.02),
    (dict(name="adam"), 0.05),
    (dict(name="adam", betas=(0.0, 0.0)), 0.02),
    (dict(name="adamw", weight_decay=0.01), 0.05),
    (dict(name="rmsprop", centered=True, momentum=0.5), 0.01),
    (dict(name="adagrad", lr_decay=1e-3), 0.3),
    (dict(name="adafactor"), 0.05),
    (dict(name="signsgd"), 0.02),
    (dict(name="signsgd", momentum=0.9, weight_decay=1e-3), 0.02),
])
def test_every_optimizer_lowers_the_loss(cfg, lr):
    losses = least_squares_losses(OptimizerConfig(**cfg), lr)
    assert losses[-1] < 0.3 * losses[0], losses


def test_hparams_table_names_what_reaches_torch():
    assert set(OPTIMIZER_HPARAMS) == set(OPTIMIZERS)
    cfg = dict(lr=0.123, momentum=0.7, dampening=0.0, nesterov=True, weight_decay=0.03, betas=(0.8, 0.9),
               eps=1e-6, alpha=0.95, centered=True, lr_decay=0.01, beta2_decay=-0.5)
    for name, fields in OPTIMIZER_HPARAMS.items():
        c = OptimizerConfig(name=name, **cfg)
        group = build_optimizer([torch.nn.Parameter(torch.zeros(2))], c, c.lr).param_groups[0]
        for f in fields:
            assert tuple(group[f]) == c.betas if f == "betas" else group[f] == getattr(c, f), (name, f)


def _sign_step(opt, p, grad):
    p.grad = torch.tensor(grad)
    opt.step()


def test_signsgd_update_is_lr_times_sign():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = SignSGD([p], lr=0.1)
    _sign_step(opt, p, [0.5, -3.0, 0.0])
    assert torch.allclose(p.data, torch.tensor([0.9, -1.9, 3.0]))


def test_signum_momentum_and_decoupled_weight_decay():
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    opt = build_optimizer([p], OptimizerConfig(name="signsgd", momentum=0.5), 0.1)
    _sign_step(opt, p, [0.5, -3.0, 0.0])  # buf = 0.5 g = [0.25, -1.5, 0]
    _sign_step(opt, p, [-2.0, 1.0, 1.0])  # buf = [0.125 - 1, -0.75 + 0.5, 0.5] -> signs [-, -, +]
    assert torch.allclose(opt.state[p]["momentum_buffer"], torch.tensor([-0.875, -0.25, 0.5]))
    assert torch.allclose(p.data, torch.tensor([1.0, 1.2, 0.9]))
    q = torch.nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer([q], OptimizerConfig(name="signsgd", weight_decay=0.5), 0.1)
    _sign_step(opt, q, [1.0])  # 1 * (1 - 0.1 * 0.5) - 0.1
    assert q.item() == pytest.approx(0.85)


def test_adam_with_zero_betas_moves_each_coordinate_by_lr():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = build_optimizer([p], OptimizerConfig(name="adam", betas=(0.0, 0.0), eps=1e-12), 0.01)
    for grad in ([0.5, -3.0, 1e-3], [-7.0, 2.0, 0.1]):  # magnitude-free: only the sign matters
        before = p.data.clone()
        _sign_step(opt, p, grad)
        step = before - p.data
        assert torch.allclose(step, 0.01 * torch.sign(torch.tensor(grad)), rtol=1e-5, atol=0)


def test_signsgd_rejects_bad_settings():
    with pytest.raises(ValueError):
        SignSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=1.0)
