"""LR schedules against their closed forms, the run's step count (schedule_steps) and the
optimisers' weight-decay groups."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from freeseg.stages.schedules import decay_groups, poly, schedule_steps, warmup_cosine


def _lrs(make, steps: int, lr: float = 2.0) -> list[float]:
    """The learning rate of each of ``steps`` optimisation steps, as Lightning steps it."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make(optimizer)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_warmup_cosine_matches_the_closed_form(warmup):
    total, lr = 12, 2.0
    expected = []
    for t in range(total + 1):
        if t < warmup:
            expected.append(lr * (t + 1) / warmup)
        else:
            expected.append(lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))))
    got = _lrs(lambda o: warmup_cosine(o, total, warmup), total + 1, lr)
    assert got == pytest.approx(expected, abs=1e-9)
    assert got[-1] == pytest.approx(0.0, abs=1e-12)  # 0 exactly at the end of the run


def test_poly_matches_the_closed_form_and_stays_at_zero():
    total, power, lr = 7, 0.9, 2.0
    expected = [lr * (1 - min(t, total) / total) ** power for t in range(total + 3)]
    assert _lrs(lambda o: poly(o, total, power), total + 3, lr) == pytest.approx(expected, abs=1e-9)


def test_schedules_are_torch_schedulers():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    assert isinstance(warmup_cosine(optimizer, 10), torch.optim.lr_scheduler.CosineAnnealingLR)
    assert isinstance(warmup_cosine(optimizer, 10, 2), torch.optim.lr_scheduler.SequentialLR)
    assert isinstance(poly(optimizer, 10), torch.optim.lr_scheduler.PolynomialLR)


@pytest.mark.parametrize(
    ("estimate", "max_steps", "expected"),
    [(40, -1, 40), (40.0, 100, 40), (float("inf"), 25, 25), (-1, 25, 25)],
)
def test_schedule_steps_from_the_estimate_or_max_steps(estimate, max_steps, expected):
    trainer = SimpleNamespace(estimated_stepping_batches=estimate, max_steps=max_steps)
    assert schedule_steps(trainer) == expected


@pytest.mark.parametrize("estimate", [float("inf"), -1, 0])
def test_schedule_steps_without_length_or_max_steps_names_the_keys(estimate):
    trainer = SimpleNamespace(estimated_stepping_batches=estimate, max_steps=-1)
    with pytest.raises(ValueError, match="trainer.max_steps") as err:
        schedule_steps(trainer)
    assert "epoch_size" in str(err.value)


def test_decay_groups_decay_matrices_only_and_leave_frozen_parameters_out():
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Conv2d(4, 2, 1)
    )
    scale = torch.nn.Parameter(torch.tensor(2.0))  # a temperature: 0-d
    frozen = torch.nn.Parameter(torch.ones(5, 5), requires_grad=False)
    params = [*net.parameters(), scale, frozen]
    decay, rest = decay_groups(params, 0.05)
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    # by hand: Linear.weight (4, 3) and Conv2d.weight (2, 4, 1, 1) decay, in their order
    assert [id(p) for p in decay["params"]] == [id(net[0].weight), id(net[2].weight)]
    expected_rest = [net[0].bias, net[1].weight, net[1].bias, net[2].bias, scale]
    assert [id(p) for p in rest["params"]] == [id(p) for p in expected_rest]
