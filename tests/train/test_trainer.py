"""The Trainer against the seed's own training: its 16 recorded optimizer steps replayed step for
step (fixtures/seed_training/README.md), and each semantics' optimizer and loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from twins import create_model
from twins.train import Trainer, build_config, load_config
from twins.train.adam_weight_decay import AdamWeightDecay
from twins.train.loss import build_loss
from twins.weights.mindspore_layout import from_mindspore
from twins.weights.mindspore_proto import read_tags

SEED_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "seed_training"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The replayed run's model (fixtures/seed_training/README.md).
SEED_MODEL = {
    "embed_dims": [16, 32, 40, 64],
    "num_heads": [1, 2, 5, 8],
    "mlp_ratios": [8, 8, 4, 4],
    "depths": [2, 2, 2, 2],
    "sr_ratios": [8, 4, 2, 1],
}
# The seed's twin_s.yaml, shortened as the fixture's run was.
SEED_OVERRIDES = ["epochs=4", "warmup_length=1", "cooldown_epochs=1", "drop_path_rate=0"]
SEED_OVERRIDES += ["num_classes=10", "batch_size=8", "amp_level=O0", "image_size=64"]


def relative_difference(result: torch.Tensor, reference: torch.Tensor) -> float:
    return ((result - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


def seed_tensors(prefix: str) -> dict[str, torch.Tensor]:
    """The final checkpoint's `prefix` entries (model., adam_m., adam_v.) in the official layout."""
    tags = read_tags(SEED_RUN / "seed_final.ckpt", keep=lambda tag: tag.startswith(prefix))
    network = {
        "model." + tag.removeprefix(prefix).removeprefix("model."): t for tag, t in tags.items()
    }
    return from_mindspore(network, family="pcpvt")


RECORDED = json.loads((SEED_RUN / "seed_steps.json").read_text())["steps"]


def replay(overrides: list[str], steps: int) -> tuple[Trainer, list[float], list[float]]:
    """The first `steps` recorded steps through a Trainer of the seed's own, unedited
    twin_s.yaml (shortened as the record's run was, then `overrides`); returns the trainer,
    each step's loss and each step's learning rate."""
    config = load_config(CONFIGS / "twin_s.yaml", [*SEED_OVERRIDES, *overrides])
    model = create_model(
        "pcpvt_small",
        num_classes=10,
        drop_path_rate=0.0,
        pretrained=SEED_RUN / "init.ckpt",
        **SEED_MODEL,
    )
    trainer = Trainer(config, model, steps_per_epoch=4, world_size=1)
    losses, rates = [], []
    for step in range(steps):
        images = torch.from_numpy(np.load(SEED_RUN / f"images_{step % 8}.npy"))
        targets = torch.from_numpy(np.load(SEED_RUN / f"targets_{step % 8}.npy"))
        rates.append(trainer.lr)
        losses.append(trainer.step(images, targets))
    return trainer, losses, rates


@pytest.fixture(scope="module")
def seed_replay() -> tuple[Trainer, list[float], list[float]]:
    return replay([], len(RECORDED))


def test_seed_replay_every_loss_and_learning_rate(seed_replay):
    trainer, losses, rates = seed_replay
    recorded = RECORDED
    assert trainer.module.model_args["act_layer"] == "gelu_tanh"  # the seed's MindSpore GELU
    assert isinstance(trainer.optimizer, AdamWeightDecay)
    assert rates == pytest.approx([r["lr"] for r in recorded], rel=1e-6)
    worst = max(abs(a - r["loss"]) for a, r in zip(losses, recorded, strict=True))
    assert worst < 1e-4, worst  # measured 3.2e-6
    assert trainer.state.step == 16


def test_seed_replay_final_weights_and_moments(seed_replay):
    trainer = seed_replay[0]
    weights = trainer.module.state_dict()
    expected = seed_tensors("model.")
    assert expected.keys() == weights.keys()
    worst = max(relative_difference(weights[n], t) for n, t in expected.items())
    assert worst < 1e-3, worst  # measured 2.5e-5
    # The optimizer's moments are MindSpore's too (no bias correction anywhere).
    params = dict(trainer.module.named_parameters())
    state = trainer.optimizer.state
    for key, prefix in (("exp_avg", "adam_m."), ("exp_avg_sq", "adam_v.")):
        moments = seed_tensors(prefix)
        worst = max(relative_difference(state[params[n]][key], t) for n, t in moments.items())
        assert worst < 1e-3, (key, worst)  # measured 6.1e-5 and 3.7e-5


def test_without_the_seed_optimizer_the_replay_drifts():
    """The check can fail: torch's AdamW (bias-corrected) on the same steps moves the weights
    much less far, and the loss departs from the record."""
    _, losses, _ = replay(["semantics=twins"], 12)
    assert max(abs(a - r["loss"]) for a, r in zip(losses, RECORDED[:12], strict=True)) > 1e-2


def test_adam_weight_decay_is_mindspores_update_rule():
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(5))
    decayed = nn.Parameter(param.detach().clone())
    optimizer = AdamWeightDecay(
        [{"params": [param], "weight_decay": 0.0}, {"params": [decayed], "weight_decay": 0.1}],
        lr=0.01,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    p, q = param.detach().clone(), decayed.detach().clone()
    m = v = torch.zeros(5)
    for _ in range(3):
        grad = torch.randn(5)
        param.grad, decayed.grad = grad.clone(), grad.clone()
        optimizer.step()
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        update = m / (v.sqrt() + 1e-8)
        p, q = p - 0.01 * update, q - 0.01 * (update + 0.1 * q)
    assert torch.allclose(param, p, atol=1e-7) and torch.allclose(decayed, q, atol=1e-7)


@pytest.mark.parametrize(
    ("semantics", "optimizer"),
    [("seed", AdamWeightDecay), ("official", torch.optim.AdamW), ("twins", torch.optim.AdamW)],
)
def test_each_semantics_has_its_optimizer(semantics, optimizer):
    model = create_model("pcpvt_small", num_classes=4, embed_dims=[16, 32, 40, 64], depths=[1] * 4)
    trainer = Trainer(build_config({"semantics": semantics}), model, steps_per_epoch=2)
    assert type(trainer.optimizer) is optimizer
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.05, 0.0]


def test_label_smoothing_of_each_semantics():
    logits = torch.randn(6, 5)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    log_p = F.log_softmax(logits, dim=-1)
    seed = build_loss(build_config({"semantics": "seed", "label_smoothing": 0.1}))
    soft = torch.full((6, 5), 0.1 / 4).scatter_(1, targets[:, None], 0.9)  # eps / (K - 1)
    assert seed(logits, targets).item() == pytest.approx((-soft * log_p).sum(1).mean().item())
    official = build_loss(build_config({"semantics": "official", "label_smoothing": 0.1}))
    soft = torch.full((6, 5), 0.1 / 5).scatter_(1, targets[:, None], 0.9 + 0.1 / 5)  # eps / K
    assert official(logits, targets).item() == pytest.approx((-soft * log_p).sum(1).mean().item())
    # Soft targets (Mixup's, smoothing folded in) take soft-target cross entropy everywhere.
    mixed = torch.softmax(torch.randn(6, 5), dim=-1)
    expected = (-mixed * log_p).sum(1).mean().item()
    assert seed(logits, mixed).item() == pytest.approx(expected)
    assert official(logits, mixed).item() == pytest.approx(expected)


def test_step_takes_class_indices_or_soft_targets_and_lr_is_the_next_steps():
    config = build_config(
        {"semantics": "twins", "warmup_length": 1, "epochs": 2, "warmup_lr": 1e-4, "base_lr": 1e-3}
    )
    model = create_model("pcpvt_small", num_classes=3, embed_dims=[16, 32, 40, 64], depths=[1] * 4)
    trainer = Trainer(config, model, steps_per_epoch=2, world_size=1)
    assert trainer.lr == pytest.approx(1e-4)
    images = torch.randn(4, 3, 32, 32)
    loss = trainer.step(images, torch.tensor([0, 1, 2, 0]))
    assert math.isfinite(loss) and trainer.lr == pytest.approx(trainer.schedule(1))
    loss = trainer.step(images, torch.softmax(torch.randn(4, 3), dim=-1))
    assert math.isfinite(loss) and trainer.state.step == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.schedule(1))
