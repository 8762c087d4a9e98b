"""The engine and the Trainer's step: exact evaluation counts, skipped non-finite steps,
accumulation, clipping and loss scaling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from twins.errors import TwinsError
from twins.tasks.classify.evaluate import evaluate
from twins.train import build_config
from twins.train.distributed import ShardSampler
from twins.train.engine import train_one_epoch
from twins.train.precision import Precision
from twins.train.state import EpochProgress
from twins.train.trainer import Trainer

CPU = Precision(torch.device("cpu"), None)


def linear_data(count: int = 14, classes: int = 6) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(count, 8, generator=generator)
    return TensorDataset(inputs, torch.randint(0, classes, (count,), generator=generator))


def linear_model(classes: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(8, classes)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_shards_hold_every_image_exactly_once(world_size):
    dataset = linear_data(14)
    shards = [list(ShardSampler(dataset, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(14))
    assert [len(s) for s in shards] == [
        len(ShardSampler(dataset, r, world_size)) for r in range(world_size)
    ]


def test_evaluation_counts_every_image_once_across_shards():
    dataset, model = linear_data(), linear_model()
    inputs, targets = dataset.tensors
    with torch.no_grad():
        logits = model(inputs)
    top5 = logits.topk(5, dim=1).indices
    expected_top1 = 100 * (logits.argmax(1) == targets).float().mean().item()
    expected_top5 = 100 * (top5 == targets[:, None]).any(1).float().mean().item()
    expected_loss = F.cross_entropy(logits, targets).item()

    whole = evaluate(model, DataLoader(dataset, batch_size=4), CPU)  # last batch of 2
    assert whole["images"] == 14
    assert whole["top1"] == pytest.approx(expected_top1)
    assert whole["top5"] == pytest.approx(expected_top5)
    assert whole["loss"] == pytest.approx(expected_loss)
    # Three processes' shards (5, 5, 4 images): their sums give exactly the whole.
    parts = [
        evaluate(model, DataLoader(dataset, batch_size=4, sampler=ShardSampler(dataset, r, 3)), CPU)
        for r in range(3)
    ]
    assert [p["images"] for p in parts] == [5, 5, 4]
    assert sum(p["top1"] * p["images"] for p in parts) / 14 == pytest.approx(expected_top1)
    assert sum(p["loss"] * p["images"] for p in parts) / 14 == pytest.approx(expected_loss)


def sgd_trainer(model: nn.Module, precision: Precision | None = None, **settings) -> Trainer:
    """Plain SGD at a constant lr 0.1: the update is 0.1 x the (clipped) gradient."""
    values = {"semantics": "twins", "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}
    values |= {"base_lr": 0.1, "min_lr": 0.0, "warmup_length": 0, "lr_scheduler": "constant_lr"}
    values |= {"log_every": 1, "clip_global_norm_value": 0.0, "label_smoothing": 0.0}
    config = build_config(values | settings)
    return Trainer(config, model, steps_per_epoch=1000, world_size=1, precision=precision)


def run_epoch(model, batches, trainer: Trainer | None = None, **settings):
    trainer = trainer or sgd_trainer(model, **settings)
    logged = []
    stats = train_one_epoch(trainer, batches, log=logged.append)
    trainer.state.progress = EpochProgress()
    return stats | {
        "global_step": trainer.state.step,
        "nonfinite_run": trainer.state.nonfinite_run,
    }, logged


def test_a_step_with_non_finite_gradients_is_skipped_and_counted():
    inputs, targets = linear_data(12).tensors
    poisoned = inputs[4:8].clone()
    poisoned[0, 0] = float("nan")
    model = linear_model()
    before = [p.detach().clone() for p in model.parameters()]
    # Only the poisoned batch: no update at all.
    stats, _ = run_epoch(model, [(poisoned, targets[4:8])])
    assert stats["skipped_steps"] == 1 and stats["steps"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # Among good batches, the good steps apply and the loss stays finite.
    stats, logged = run_epoch(model, [(inputs[:4], targets[:4]), (poisoned, targets[4:8])])
    assert stats["skipped_steps"] == 1 and stats["global_step"] == 2
    assert torch.isfinite(torch.tensor(stats["train_loss"]))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [record["step"] for record in logged] == [1]  # the skipped step logs no loss


def test_non_finite_steps_in_a_row_stop_the_run_and_a_good_step_resets_the_count():
    inputs, targets = linear_data(12).tensors
    good = (inputs[:4], targets[:4])
    poisoned = (inputs[4:8].clone(), targets[4:8])
    poisoned[0][0, 0] = float("nan")
    stats, _ = run_epoch(
        linear_model(), [good, poisoned, poisoned, good, poisoned, poisoned], max_nonfinite_steps=3
    )
    assert stats["skipped_steps"] == 4 and stats["nonfinite_run"] == 2
    with pytest.raises(TwinsError, match="step 7: the last 3 steps in a row") as error:
        run_epoch(
            linear_model(), [good, poisoned, poisoned, good, *[poisoned] * 3], max_nonfinite_steps=3
        )
    assert "\n" not in str(error.value)
    # 0 never stops.
    stats, _ = run_epoch(linear_model(), [poisoned] * 5, max_nonfinite_steps=0)
    assert stats["skipped_steps"] == 5


def test_accumulated_micro_batches_equal_one_large_batch():
    inputs, targets = linear_data(8).tensors
    whole, accumulated = linear_model(), linear_model()
    run_epoch(whole, [(inputs, targets)])
    stats, _ = run_epoch(
        accumulated, [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])], accumulation_step=2
    )
    assert stats["global_step"] == 1
    for a, b in zip(whole.parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradients_are_clipped_to_the_global_norm():
    inputs, targets = linear_data(8).tensors
    model = linear_model()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    run_epoch(model, [(inputs * 100, targets)], clip_global_norm_value=0.5)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # Plain SGD at lr 0.1: the update is 0.1 x the clipped gradient.
    assert (after - before).norm().item() == pytest.approx(0.1 * 0.5, rel=1e-4)


@pytest.mark.parametrize(("fixed_scale", "scale_after"), [(None, 512.0), (1024.0, 1024.0)])
def test_loss_scaler_skips_overflow_and_keeps_or_lowers_the_scale(fixed_scale, scale_after):
    # float16 autocast with a GradScaler, the path of GPUs without bfloat16 (run on the CPU here).
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    fp16 = Precision(torch.device("cpu"), torch.float16, scaler, fixed_scale=fixed_scale)
    inputs, targets = linear_data(8).tensors
    overflowing = inputs[4:].clone()
    overflowing[0, 0] = float("inf")
    model = linear_model()
    trainer = sgd_trainer(model, precision=fp16, clip_global_norm_value=1.0)

    stats, _ = run_epoch(model, [(inputs[:4], targets[:4])], trainer)
    assert stats["skipped_steps"] == 0 and scaler.get_scale() == 1024.0
    before = [p.detach().clone() for p in model.parameters()]
    stats, _ = run_epoch(model, [(overflowing, targets[4:])], trainer)
    assert stats["skipped_steps"] == 1 and scaler.get_scale() == scale_after
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
