"""Whole runs on a tiny generated ImageFolder: learning, the output folder, resuming, evaluating."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from factories import EVERY_RANDOM_DRAW, write_imagefolder
from twins import create_model
from twins.atomic import save_torch
from twins.cli.main import main
from twins.errors import TwinsError
from twins.tasks import evaluate_checkpoint, fit
from twins.train import lr_schedule
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TIMINGS = ("epoch_seconds", "images_per_s", "output")


def test_short_run_learns_and_leaves_the_guide_outputs(imagefolder, tiny_config, tmp_path):
    output = tmp_path / "run"
    result = fit(tiny_config(imagefolder, output, epochs=3))
    assert result["val_top1"] >= 75.0  # chance is 25%
    assert result["val_images"] == 14  # every validation image, once
    records = read_metrics(output / "metrics.jsonl")
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    for record in epochs:
        assert {"step", "train_loss", "lr", "val_top1", "val_top5", "val_loss"} <= record.keys()
        assert 0 <= record["val_top1"] <= record["val_top5"] <= 100
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 13))  # 4 steps per epoch, log_every 1
    assert (output / "config.yaml").is_file() and (output / "curves.png").stat().st_size > 0
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (output / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}
    best = load_checkpoint(output / "checkpoints" / "best.pt")
    assert best["best_score"] == max(r["val_top1"] for r in epochs)
    assert best["meta"]["class_names"] == ["class_0", "class_1", "class_2", "class_3"]


def test_stopped_and_restarted_run_ends_as_the_unbroken_one(imagefolder, tiny_config, tmp_path):
    recipe = EVERY_RANDOM_DRAW
    unbroken = fit(tiny_config(imagefolder, tmp_path / "unbroken", **recipe))
    fit(tiny_config(imagefolder, tmp_path / "broken", **recipe), stop_after_epoch=1)
    assert load_checkpoint(tmp_path / "broken" / "checkpoints" / "last.pt")["epoch"] == 1
    # As if killed during epoch 2: lines logged after the checkpoint are dropped on resuming.
    with open(tmp_path / "broken" / "metrics.jsonl", "a") as file:
        file.write('{"kind": "step", "epoch": 2, "step": 5, "train_loss": 9.0, "lr": 0.1}\n{"kin')
    resumed = fit(tiny_config(imagefolder, tmp_path / "broken", **recipe))  # the same command

    def without_timings(records):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]

    assert without_timings([resumed]) == without_timings([unbroken])
    assert without_timings(read_metrics(tmp_path / "broken" / "metrics.jsonl")) == without_timings(
        read_metrics(tmp_path / "unbroken" / "metrics.jsonl")
    )
    a = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "broken" / "checkpoints" / "last.pt")
    for key in ("model", "model_ema"):
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][index]["exp_avg"])
    # A finished run started again has nothing left to do.
    again = fit(tiny_config(imagefolder, tmp_path / "broken", **recipe))
    assert again["epoch"] == 3 and again["val_top1"] == unbroken["val_top1"]


def test_eval_reports_a_saved_checkpoint(imagefolder, tiny_config, tmp_path, capsys):
    output = tmp_path / "run"
    fit(tiny_config(imagefolder, output, epochs=1, warmup_length=0, with_ema=True))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((output / "config.yaml").read_text())
    capsys.readouterr()
    best = output / "checkpoints" / "best.pt"
    code = main(["eval", "-c", str(recipe), "--checkpoint", str(best), "--data", str(imagefolder)])
    assert code == 0
    assert "top-1" in capsys.readouterr().out
    code = main(["eval", "-c", str(recipe), "--checkpoint", str(best), "--json"])
    assert code == 0
    reported = json.loads(capsys.readouterr().out)
    saved = load_checkpoint(output / "checkpoints" / "best.pt")["metrics"]
    assert reported["images"] == 14
    assert reported["top1"] == pytest.approx(saved["val_top1"])
    assert reported["top5"] == pytest.approx(saved["val_top5"])
    assert reported["loss"] == pytest.approx(saved["val_loss"], rel=1e-5)
    assert reported["ema"]["top1"] == pytest.approx(saved["ema_val_top1"])


def test_seed_recipe_runs_unchanged_with_data_and_size_overrides(
    imagefolder, tiny_config, tmp_path, capsys
):
    sized = "num_classes=4 image_size=32 batch_size=8 epochs=1 cooldown_epochs=0 warmup_length=0"
    sized += (
        " num_parallel_workers=0 model_args.embed_dims=[16,32,40,64] model_args.depths=[1,1,1,1]"
    )
    output = tmp_path / "seed"
    recipe = ["-c", str(CONFIGS / "twin_s.yaml"), "--data", str(imagefolder)]
    code = main(["train", *recipe, "--output", str(output), *sized.split()])
    assert code == 0
    out = capsys.readouterr().out
    notices = [line for line in out.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "Ascend" in notices[0]
    assert (
        "\nsemantics: seed, the MindSpore seed's training: tanh GELU, Adam without bias correction, "
        "its label smoothing, square (squash) eval resize (docs/recipes.md)\n"
    ) in out
    # the seed's cosine tops at base_lr + min_lr, the rate its first step after warmup runs at
    assert "peak lr 0.00101 (base_lr as given + min_lr 1e-05, the seed's cosine offset)" in out
    assert load_checkpoint(output / "checkpoints" / "last.pt")["meta"]["arch"] == "pcpvt_small"


def test_pretrained_weights_initialise_and_the_head_is_dropped(imagefolder, tiny_config, tmp_path):
    source = create_model(
        "pcpvt_small", num_classes=7, embed_dims=(16, 32, 40, 64), depths=(1,) * 4
    )
    torch.save(source.state_dict(), tmp_path / "other_task.pth")
    config = tiny_config(
        imagefolder, tmp_path / "run", pretrained=str(tmp_path / "other_task.pth"), epochs=1
    )
    config.base_lr = config.warmup_lr = config.min_lr = 1e-12  # weights stay (nearly) as loaded
    fit(config)
    model = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert model["head.weight"].shape == (4, 64)
    torch.testing.assert_close(
        model["pos_block.0.proj.0.weight"], source.pos_block[0].proj[0].weight
    )


def test_pretrained_true_starts_from_the_variants_hub_weights(
    imagefolder, tiny_config, tmp_path, offline_hub_cache
):
    from hub_cache import add_to_hub_cache
    from twins.weights import StateDict, save_weights

    source = create_model("pcpvt_small", embed_dims=(16, 32, 40, 64), depths=(1,) * 4)
    save_weights(StateDict(source.state_dict()), tmp_path / "in1k.safetensors")
    files = {"model.safetensors": (tmp_path / "in1k.safetensors").read_bytes()}
    add_to_hub_cache(offline_hub_cache, "timm/twins_pcpvt_small.in1k", files)
    config = tiny_config(imagefolder, tmp_path / "run", pretrained=True, epochs=1)
    config.base_lr = config.warmup_lr = config.min_lr = 1e-12  # weights stay (nearly) as loaded
    fit(config)
    model = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    torch.testing.assert_close(
        model["pos_block.0.proj.0.weight"], source.pos_block[0].proj[0].weight
    )
    assert "pretrained: true" in (tmp_path / "run" / "config.yaml").read_text()


def test_output_folder_of_another_model_is_refused(imagefolder, tiny_config, tmp_path):
    state = {"format": "twins-checkpoint", "version": 1, "config": {"arch": "svt_small"}}
    save_torch(state, tmp_path / "run" / "checkpoints" / "last.pt")
    with pytest.raises(TwinsError, match="another output folder"):
        fit(tiny_config(imagefolder, tmp_path / "run"))


def test_wrong_class_count_is_refused_in_one_line(imagefolder, tiny_config, tmp_path):
    with pytest.raises(TwinsError, match="num_classes=4") as error:
        fit(tiny_config(imagefolder, tmp_path / "run", num_classes=5))
    assert "\n" not in str(error.value)


def test_evaluate_checkpoint_refuses_a_class_count_mismatch(imagefolder, tiny_config, tmp_path):
    model = create_model("pcpvt_small", num_classes=3, embed_dims=(16, 32, 40, 64), depths=(1,) * 4)
    torch.save(model.state_dict(), tmp_path / "three.pth")
    config = tiny_config(imagefolder, tmp_path / "run")
    with pytest.raises(TwinsError, match="num_classes"):
        evaluate_checkpoint(config, tmp_path / "three.pth")


def test_a_data_set_salted_with_broken_files_trains_and_reports_them(
    make_imagefolder, tiny_config, tmp_path, capsys, caplog
):
    data = make_imagefolder(tmp_path / "data", 16, [5, 4, 3, 2])
    (data / "train" / "class_0" / "empty.png").write_bytes(b"")
    (data / "train" / "class_1" / "notes.jpg").write_text("not an image\n")
    (data / "val" / "class_2" / "cut.png").write_bytes(
        (data / "val/class_2/0.png").read_bytes()[:60]
    )
    gray = data / "train" / "class_3" / "0.png"
    Image.open(gray).convert("L").save(gray)
    # 66 training files in batches of 6: every file is read once per epoch.
    fit(tiny_config(data, tmp_path / "run", epochs=2, batch_size=6))
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    # 2 unreadable training files and 1 validation file per epoch, counted since the run began.
    assert [r["images_skipped"] for r in epochs] == [3, 6]
    assert [r["images_converted"] for r in epochs] == [1, 2]
    assert [r["val_images"] for r in epochs] == [14, 14]  # the 14 readable ones, once each
    assert "3 unreadable images left out so far" in capsys.readouterr().out
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "unreadable" in r.getMessage()
    ]
    assert len(warned) == 3  # each file named once, not once per epoch
    for name in ("empty.png", "notes.jpg", "cut.png"):
        assert any(name in message for message in warned)


def test_gifs_train_and_files_not_images_are_counted_and_named(tmp_path, tiny_config, capsys):
    data = write_imagefolder(tmp_path / "data", 8, (2, 2, 2, 2))
    write_imagefolder(tmp_path / "gifs", 8, (1, 1, 1, 1), suffix=".gif", seed=1)
    for gif in (tmp_path / "gifs").rglob("*.gif"):  # GIFs beside the PNGs, one class each
        gif.rename(data / gif.relative_to(tmp_path / "gifs").with_name(f"g{gif.name}"))
    (data / "train" / "class_0" / "notes.txt").write_text("where the photos came from")
    (data / "train" / "class_1" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / "val" / "labels.json").write_text("{}")
    fit(tiny_config(data, tmp_path / "run", epochs=1, batch_size=16))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("data:"))
    assert line == (
        f"data: {data} (64 train, 12 val images; 3 files not images left out "
        "(e.g. train/class_0/notes.txt, train/class_1/.DS_Store))"
    )
    recipe = tmp_path / "run" / "config.yaml"
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    assert main(["eval", "-c", str(recipe), "--checkpoint", str(best)]) == 0
    out = capsys.readouterr().out
    assert "(12 images; 1 file not an image left out (e.g. val/labels.json))" in out


def test_logged_lr_is_the_heads_and_a_climbing_cosine_is_announced(
    imagefolder, tiny_config, tmp_path, capsys
):
    # 2e-3 x 16 / 1024 puts the peak (3.125e-5) under min_lr (1e-4): the "cosine" climbs.
    config = tiny_config(imagefolder, tmp_path / "run", epochs=2, layer_decay=0.5)
    config.lr_base_size = 1024
    fit(config)
    out = capsys.readouterr().out
    notice = [line for line in out.splitlines() if line.startswith("notice:")]
    assert notice == [
        "notice: the peak lr 3.13e-05 (base_lr 0.002 × 16 / lr_base_size 1024) is below min_lr "
        "0.0001, so the cosine climbs to min_lr: lower min_lr or raise base_lr"
    ]
    schedule = lr_schedule(config, 4)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 10 and records[-1]["step"] == 8
    for record in records:  # the rate at lr scale 1 (the head's), not the deepest-decayed group's
        assert record["lr"] == schedule(record["step"] - 1)
    assert f"lr {schedule(7):.2e}" in out.splitlines()[-2]


def test_best_is_the_better_of_raw_and_ema_and_each_file_is_read_once(
    tmp_path, tiny_config, capsys
):
    data = write_imagefolder(tmp_path / "data")
    (data / "val" / "class_0" / "broken.png").write_bytes(b"not a png")
    # A high rate and a quick EMA: the raw weights are wrong after epoch 1 (0%) where their EMA
    # is right (100%); later epochs reach 100% raw, which is no better.
    config = tiny_config(
        data,
        tmp_path / "run",
        epochs=3,
        warmup_length=0,
        base_lr=2e-2,
        with_ema=True,
        ema_decay=0.9,
    )
    result = fit(config)
    out = capsys.readouterr().out
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert (epochs[0]["val_top1"], epochs[0]["ema_val_top1"]) == (0.0, 100.0)
    assert epochs[0]["images_skipped"] == 1  # the broken file, read once for both models
    assert [r["val_images"] for r in epochs] == [r["ema_val_images"] for r in epochs] == [14] * 3
    assert result["best_top1"] == 100.0 and result["best_weights"] == "ema"
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert (best["epoch"], best["best_weights"]) == (1, "ema")
    assert all(torch.equal(best["model"][k], best["model_ema"][k]) for k in best["model"])
    assert "*best (EMA)*" in out.splitlines()[-4]
    assert out.splitlines()[-1].startswith(
        "done: best val top-1 100.00% (EMA weights, in checkpoints/best.pt); last epoch val "
        f"top-1 {epochs[-1]['val_top1']:.2f}%, EMA {epochs[-1]['ema_val_top1']:.2f}%"
    )
    # best.pt's model is what scored: eval reports the same, with or without --ema
    recipe, file = str(tmp_path / "run" / "config.yaml"), str(tmp_path / "run/checkpoints/best.pt")
    assert main(["eval", "-c", recipe, "--checkpoint", file, "--json", "with_ema=false"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == 100.0
    assert main(["eval", "-c", recipe, "--checkpoint", file, "--json", "--ema"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["images"] == reported["ema"]["images"] == 14
    assert reported["ema"]["top1"] == 100.0
