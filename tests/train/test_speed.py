"""The speed switches of training (`twins.train.speed`): `channels_last` lays the weights and
images out channels-last and keeps exact resume; `compile` trains through `torch.compile` and
writes checkpoints with the plain model's keys."""

from __future__ import annotations

import pytest
import torch

from factories import EVERY_RANDOM_DRAW, TINY_MODEL, make_config
from killed_runs import fit_killed_at_step, without_timings
from twins import create_model
from twins.tasks import fit
from twins.train import Trainer
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

# 4 steps per epoch, a checkpoint every 2 steps: resumes within an epoch and at its end.
RECIPE = EVERY_RANDOM_DRAW | {"save_every_steps": 2, "log_every": 1}


def convolution_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.dim() == 4}


def test_channels_last_lays_out_weights_and_images_and_trains_as_the_default_layout():
    torch.manual_seed(0)
    model = create_model("pcpvt_small", num_classes=4, **TINY_MODEL)
    plain = create_model("pcpvt_small", num_classes=4, **TINY_MODEL)
    plain.load_state_dict(model.state_dict())
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    losses = []
    for layout, net in ((True, model), (False, plain)):
        trainer = Trainer(make_config(channels_last=layout), net, steps_per_epoch=2)
        losses.append([trainer.step(images, labels) for _ in range(2)])
    weights = convolution_weights(model)
    assert weights and all(
        w.is_contiguous(memory_format=torch.channels_last) for w in weights.values()
    )
    assert all(w.is_contiguous() for w in convolution_weights(plain).values())
    # The same function, computed by convolution kernels of another layout: equal to rounding.
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(weight, plain.state_dict()[name], rtol=1e-4, atol=1e-5)


def test_a_channels_last_run_killed_within_an_epoch_resumes_to_the_unbroken_run(
    imagefolder, tiny_config, tmp_path
):
    unbroken = tmp_path / "unbroken"
    fit(tiny_config(imagefolder, unbroken, channels_last=True, **RECIPE))
    output = tmp_path / "run"
    config = tiny_config(imagefolder, output, channels_last=True, **RECIPE)
    fit_killed_at_step(config, 7)  # after the checkpoint of step 6, within epoch 2
    assert load_checkpoint(output / "checkpoints" / "last.pt")["global_step"] == 6
    fit(config)

    assert without_timings(read_metrics(output / "metrics.jsonl")) == without_timings(
        read_metrics(unbroken / "metrics.jsonl")
    )
    a = load_checkpoint(unbroken / "checkpoints" / "last.pt")
    b = load_checkpoint(output / "checkpoints" / "last.pt")
    for key in ("model", "model_ema"):
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
        # Checkpoints hold the default layout, whatever the run trained in.
        assert all(tensor.is_contiguous() for tensor in b[key].values()), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][index]["exp_avg_sq"])


@pytest.mark.slow  # Inductor compiles the step's forward and backward: minutes on a busy CPU
@pytest.mark.timeout(1800)
def test_a_compiled_run_trains_as_eager_resumes_exactly_and_saves_the_plain_models_keys(
    imagefolder, tiny_config, tmp_path
):
    # 2 steps per epoch at one input size, last.pt after every step, Mixup drawn. No drop
    # path: compiled, its masks come from Inductor's generator, not eager's.
    settings = {"epochs": 2, "batch_size": 32, "save_every_steps": 1, "mix_up": 0.8}
    eager = fit(tiny_config(imagefolder, tmp_path / "eager", **settings))
    unbroken = fit(tiny_config(imagefolder, tmp_path / "unbroken", compile=True, **settings))
    config = tiny_config(imagefolder, tmp_path / "run", compile=True, **settings)
    fit_killed_at_step(config, 4)  # within epoch 2, after the checkpoint of step 3
    resumed = fit(config)

    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    plain = create_model("pcpvt_small", num_classes=4, **TINY_MODEL).state_dict()
    assert list(saved["model"]) == list(plain)  # no `_orig_mod.` prefix
    assert without_timings([resumed]) == without_timings([unbroken])
    reference = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(reference[n], saved["model"][n]) for n in reference)
    # Inductor's kernels round otherwise than eager ones, and nothing more.
    assert unbroken["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
