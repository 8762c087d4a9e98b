"""The learning rate of every step, under each semantics, against the records: the seed's whole
lr array, the official PCPVT-S log epoch by epoch, the official rule for the other five, and
this toolkit's schedule at its key steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from twins.train import build_config, load_config, lr_schedule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE, WARMUP, MIN = 1e-3, 1e-6, 1e-5

# What the six released logs say (fixtures/official_logs/README.md): peak lr at a global batch
# of 1024, warmup epochs; every run trains 300 epochs.
OFFICIAL_RUNS = {
    "pcpvt_small": (1.25e-3, 5),
    "pcpvt_base": (1.0e-3, 5),
    "pcpvt_large": (1.0e-3, 5),
    "svt_small": (2.0e-3, 5),
    "svt_base": (1.0e-3, 5),
    "svt_large": (1.0e-3, 20),
}


def official_rule(epoch: int, peak: float, warmup: int, epochs: int = 300) -> float:
    """The lr during epoch `epoch` (0-based), as the README states the rule of all six logs."""
    t = max(epoch - 1, 0)
    if t < warmup:
        return WARMUP + t * (peak - WARMUP) / warmup
    return MIN + 0.5 * (peak - MIN) * (1 + math.cos(math.pi * t / epochs))


def test_seed_schedule_is_the_seed_lr_array_step_for_step():
    """The seed's array for its unchanged twin_s.yaml at 8 x 128 images on ImageNet-1k
    (1,251 steps per epoch), 310 epochs long; the seed trains the first 300."""
    expected = np.load(FIXTURES / "seed_training" / "seed_lr_twin_s_imagenet.npy")
    config = load_config(CONFIGS / "twin_s.yaml")
    schedule = lr_schedule(config, 1251, world_size=8)
    rates = np.array([schedule(step) for step in range(len(expected))])
    assert np.abs(rates - expected).max() / expected.max() < 1e-12
    assert np.max(np.abs(rates - expected) / expected) < 1e-12
    assert schedule.total_steps == 300 * 1251  # the cooldown is never trained
    assert schedule(0) == MIN  # clipped below at min_lr: the warmup starts there
    assert max(rates) == pytest.approx(BASE + MIN)  # the cosine's offset


def test_seed_schedule_of_the_replayed_run():
    """The 20-entry array of the 16 replayed steps (4 epochs of 4 steps, 1 warmup epoch,
    1 cooldown epoch), which the seed stored as float32."""
    steps = json.loads((FIXTURES / "seed_training" / "seed_steps.json").read_text())
    config = load_config(
        CONFIGS / "twin_s.yaml",
        ["epochs=4", "warmup_length=1", "cooldown_epochs=1", "batch_size=8"],
    )
    schedule = lr_schedule(config, 4, world_size=1)
    table = steps["lr_table_with_cooldown"]
    assert [schedule(step) for step in range(20)] == pytest.approx(table, rel=1e-6)
    assert schedule.total_steps == len(steps["steps"]) == 16


def test_official_pcpvt_small_schedule_is_its_released_log():
    log = [
        json.loads(line)
        for line in (FIXTURES / "official_logs" / "pcpvt_s.jsonl").read_text().splitlines()
    ]
    config = load_config(CONFIGS / "pcpvt_small.yaml")
    steps_per_epoch = 1251  # 8 x 128 images per step on ImageNet-1k
    schedule = lr_schedule(config, steps_per_epoch, world_size=8)
    assert schedule.total_steps == len(log) * steps_per_epoch == 300 * 1251
    for row in log:
        epoch = row["epoch"]
        # Stepped once per epoch: the first and the last step of each epoch agree.
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            assert schedule(step) == pytest.approx(row["train_lr"], rel=1e-6, abs=0)


@pytest.mark.parametrize("arch", sorted(OFFICIAL_RUNS))
def test_official_configs_follow_the_released_runs(arch):
    peak, warmup = OFFICIAL_RUNS[arch]
    config = load_config(CONFIGS / f"{arch}.yaml")
    assert config.semantics == "official" and config.total_epochs == 300
    # The peak holds at a global batch of 1024 whatever the processes × per-device batch.
    for world in (8, 4):
        batch = 1024 // world
        scaled = build_config(config.to_dict() | {"batch_size": batch})
        schedule = lr_schedule(scaled, 100, world_size=world)
        rates = [schedule(epoch * 100 + 50) for epoch in range(300)]
        assert rates == pytest.approx(
            [official_rule(e, peak, warmup) for e in range(300)], rel=1e-12
        )
    # Half the global batch: half the peak (timm's linear rule).
    half = lr_schedule(build_config(config.to_dict() | {"batch_size": 64}), 100, world_size=8)
    assert half(10 * 100) == pytest.approx(official_rule(10, peak / 2, warmup), rel=1e-12)


def twins_schedule(steps_per_epoch: int = 10, **changes):
    # 2 warmup epochs of 30, then 3 cooldown epochs held at min_lr.
    values = {"semantics": "twins", "base_lr": BASE, "warmup_lr": WARMUP, "min_lr": MIN}
    values |= {"warmup_length": 2, "epochs": 30, "cooldown_epochs": 3} | changes
    return lr_schedule(build_config(values), steps_per_epoch, world_size=1)


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
def test_twins_schedule_at_key_steps(step, expected):
    assert twins_schedule()(step) == pytest.approx(expected, rel=1e-12)


def test_twins_schedule_trains_its_cooldown_and_is_monotone_in_each_phase():
    schedule = twins_schedule()
    assert schedule.total_steps == 330
    rates = [schedule(step) for step in range(330)]
    assert all(a < b for a, b in zip(rates[:20], rates[1:21], strict=True))
    assert all(a >= b for a, b in zip(rates[20:300], rates[21:301], strict=True))


def test_no_warmup_and_constant_policy():
    assert twins_schedule(warmup_length=0)(0) == BASE
    constant = twins_schedule(lr_scheduler="constant_lr", warmup_length=1)
    assert constant(5) == pytest.approx((WARMUP + BASE) / 2)
    assert constant(10) == constant(299) == constant(320) == BASE


@pytest.mark.parametrize("semantics", ["seed", "official", "twins"])
def test_a_run_started_at_start_epoch_continues_the_schedule(semantics):
    values = {"semantics": semantics, "warmup_length": 2, "epochs": 10, "cooldown_epochs": 1}
    whole = lr_schedule(build_config(values), 7, world_size=1)
    later = lr_schedule(build_config(values | {"start_epoch": 3}), 7, world_size=1)
    assert [later(step) for step in range(later.total_steps)] == [
        whole(step) for step in range(3 * 7, whole.total_steps)
    ]


def test_global_batch_scales_the_peak_with_processes_and_accumulation():
    values = {"semantics": "twins", "lr_base_size": 1024, "base_lr": 1e-3, "warmup_length": 0}
    values |= {"batch_size": 64, "accumulation_step": 2}
    schedule = lr_schedule(build_config(values), 10, world_size=4)  # 64 × 4 × 2 = 512
    assert schedule.peak == pytest.approx(5e-4) and schedule(0) == pytest.approx(5e-4)
