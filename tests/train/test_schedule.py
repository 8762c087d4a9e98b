"""The learning rate schedule at its key steps, against the closed form."""

from __future__ import annotations

import math

import pytest

from twins.train import build_config
from twins.train.schedule import LrSchedule, build_schedule

BASE, WARMUP, MIN = 1e-3, 1e-6, 1e-5


def seed_schedule(steps_per_epoch: int = 10) -> LrSchedule:
    # The seed's twin_s.yaml numbers, shortened: 20 warmup epochs of 300 becomes 2 of 30.
    config = build_config(
        {"base_lr": BASE, "warmup_lr": WARMUP, "min_lr": MIN, "warmup_length": 2, "epochs": 30}
        | {"cooldown_epochs": 3}
    )
    return build_schedule(config, BASE, steps_per_epoch)


def cosine(step: int, warmup: int = 20, end: int = 300) -> float:
    return MIN + 0.5 * (BASE - MIN) * (1 + math.cos(math.pi * (step - warmup) / (end - warmup)))


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, WARMUP),  # warmup starts at warmup_lr
        (10, WARMUP + (BASE - WARMUP) / 2),  # half-way up, linearly
        (19, WARMUP + (BASE - WARMUP) * 19 / 20),
        (20, BASE),  # warmup ends at base_lr
        (21, cosine(21)),
        (160, (BASE + MIN) / 2),  # the cosine's mid-point
        (299, cosine(299)),
        (300, MIN),  # end of `epochs`
        (315, MIN),  # cooldown holds min_lr
        (329, MIN),  # last step of epochs + cooldown_epochs
    ],
)
def test_cosine_schedule_at_key_steps(step, expected):
    assert seed_schedule()(step) == pytest.approx(expected, rel=1e-12)


def test_schedule_is_monotone_in_each_phase():
    schedule = seed_schedule()
    rates = [schedule(step) for step in range(330)]
    assert all(a < b for a, b in zip(rates[:20], rates[1:21], strict=True))
    assert all(a >= b for a, b in zip(rates[20:300], rates[21:301], strict=True))


def test_no_warmup_and_constant_policy():
    assert LrSchedule(BASE, WARMUP, MIN, 0, 100)(0) == BASE
    constant = LrSchedule(BASE, WARMUP, MIN, 10, 100, policy="constant_lr")
    assert constant(5) == pytest.approx((WARMUP + BASE) / 2)
    assert constant(10) == constant(99) == constant(150) == BASE


def test_warmup_over_all_epochs_then_min_lr():
    schedule = LrSchedule(BASE, WARMUP, MIN, 50, 50)
    assert schedule(49) < BASE and schedule(50) == MIN
