"""The learning rate of every step, under each semantics, against the records: the seed's whole
lr array, the official PCPVT-S log epoch by epoch, the official rule for the other five, and
this toolkit's schedule at its key steps; the dense recipes' mmcv policies against the six
released UperNet logs at every logged iteration and against mmcv's formulas."""

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


# ----- The dense recipes: mmcv 1.2's poly and step policies with their iteration warmup ----- #

UPERNET_LOGS = json.loads((FIXTURES / "official_logs" / "upernet_lr.json").read_text())
LOG_NAMES = {"pcpvt_s": "pcpvt_small", "pcpvt_b": "pcpvt_base", "pcpvt_l": "pcpvt_large"}
LOG_NAMES |= {"svt_s": "svt_small", "svt_b": "svt_base", "svt_l": "svt_large"}
ADE20K_TRAIN_IMAGES = 20210


@pytest.mark.parametrize("log_name", sorted(LOG_NAMES))
def test_upernet_schedule_is_its_released_log_at_every_logged_iteration(log_name):
    """The lr logged at `iter` is the one of step `iter - 1`, rounded to 5 decimals."""
    log = UPERNET_LOGS[log_name]
    config = load_config(CONFIGS / "dense" / f"upernet_{LOG_NAMES[log_name]}_ade20k.yaml")
    schedule = lr_schedule(config, 1264, world_size=8)
    assert len(log["train_iter"]) == 3190 and schedule.total_steps == 160_000
    for iteration, logged in zip(log["train_iter"], log["lr"], strict=True):
        rate = schedule(iteration - 1)
        assert round(rate, 5) == logged or abs(rate - logged) <= 5e-6, iteration
    # It evaluates where the log evaluated: every eval_every iterations, the last at the end.
    assert log["val_iter"] == list(range(config.eval_every, config.max_iters + 1, 16_000))
    assert config.save_every == config.eval_every == 16_000


@pytest.mark.parametrize("log_name", sorted(LOG_NAMES))
def test_upernet_global_batch_is_the_one_the_logs_epoch_counter_shows(log_name):
    """mmseg's epoch counter is the data pass under way: images seen / ADE20K's 20,210
    training images, plus one; 8 processes of `batch_size` images make a step."""
    config = load_config(CONFIGS / "dense" / f"upernet_{LOG_NAMES[log_name]}_ade20k.yaml")
    log = UPERNET_LOGS[log_name]
    images_per_step = 8 * config.batch_size
    assert log["val_epoch"] == [
        i * images_per_step // ADE20K_TRAIN_IMAGES + 1 for i in log["val_iter"]
    ]
    twice = [i * 2 * images_per_step // ADE20K_TRAIN_IMAGES + 1 for i in log["val_iter"]]
    assert log["val_epoch"] != twice  # the counter tells a batch from its double


def dense_recipe(name: str) -> object:
    return load_config(CONFIGS / "dense" / f"{name}.yaml")


def test_an_iteration_recipe_ignores_steps_per_epoch():
    config = dense_recipe("upernet_svt_small_ade20k")
    schedules = [lr_schedule(config, spe, world_size=w) for spe, w in [(1, 1), (1264, 8), (7, 4)]]
    steps = [0, 1, 749, 1499, 1500, 1501, 80_000, 159_999]
    assert len({tuple(s(step) for step in steps) for s in schedules}) == 1
    assert {s.total_steps for s in schedules} == {160_000}


def test_poly_with_warmup_scales_the_poly_rate_of_the_same_iteration():
    """mmcv: the warmup multiplies the regular (poly) rate of that iteration, not the peak."""
    schedule = lr_schedule(dense_recipe("upernet_pcpvt_base_ade20k"), 100)
    peak, warmup, ratio = 6e-5, 1500, 1e-6

    def poly(i):
        return peak * (1 - i / 160_000)

    for i in (0, 1, 700, 1499):
        assert schedule(i) == pytest.approx(poly(i) * (1 - (1 - i / warmup) * (1 - ratio)))
    assert schedule(0) == pytest.approx(peak * ratio)
    assert schedule(1500) == pytest.approx(poly(1500)) and schedule(159_999) == poly(159_999)
    assert schedule(1499) < poly(1499) < schedule(1500) * (1 + 1e-3)


def test_semantic_fpn_poly_decays_with_power_0_9_to_min_lr_without_warmup():
    schedule = lr_schedule(dense_recipe("semantic_fpn_svt_base_ade20k"), 100)
    peak, low = 1e-4, 1e-6
    assert schedule.total_steps == 80_000 and schedule(0) == peak
    for i in (1, 20_000, 40_000, 79_999):
        assert schedule(i) == pytest.approx((peak - low) * (1 - i / 80_000) ** 0.9 + low)
    assert schedule(79_999) > low


@pytest.mark.parametrize(
    ("recipe", "steps", "epochs"),
    [("retinanet_pcpvt_small_coco_1x", (8, 11), 12), ("maskrcnn_svt_base_coco_3x", (27, 33), 36)],
)
def test_step_recipes_count_epochs_with_steps_per_epoch(recipe, steps, epochs):
    config = dense_recipe(recipe)
    peak = config.base_lr
    for per_epoch in (600, 7330):  # a short warmup-spanning epoch and COCO's 117k / 16
        schedule = lr_schedule(config, per_epoch, world_size=8)
        assert schedule.total_steps == epochs * per_epoch
        for i in (0, 250, 499):  # the warmup: 0.001 x peak, linearly up
            assert schedule(i) == pytest.approx(peak * (1 - (1 - i / 500) * (1 - 0.001)))
        assert schedule(500) == peak
        first, second = (s * per_epoch for s in steps)
        assert schedule(first - 1) == peak and schedule(first) == pytest.approx(peak * 0.1)
        assert schedule(second - 1) == pytest.approx(peak * 0.1)
        assert schedule(second) == pytest.approx(peak * 0.01)
        assert schedule(epochs * per_epoch - 1) == pytest.approx(peak * 0.01)


def test_a_warmup_longer_than_an_epoch_warms_up_the_stepped_rate():
    """mmcv's step policy warms up from the rate of the iteration's epoch, decayed or not."""
    values = {"semantics": "official", "lr_scheduler": "step_lr", "lr_steps": [1], "epochs": 3}
    values |= {"warmup_length": 0, "warmup_iters": 10, "warmup_ratio": 0.5, "base_lr": 1e-3}
    schedule = lr_schedule(build_config(values), 4)
    assert schedule(2) == pytest.approx(1e-3 * (1 - 0.8 * 0.5))
    assert schedule(6) == pytest.approx(1e-4 * (1 - 0.4 * 0.5))
    assert schedule(10) == pytest.approx(1e-4)
