"""`twins train --dry-run` (`twins.train.dry_run`) for each task on its own data: it reports
the data, the model, one batch, the lr landmarks, the steps and one measured step, and writes
nothing: no output folder, the data folder unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from coco_files import write_coco_train, write_coco_val
from factories import TINY_MODEL, make_config, write_imagefolder
from twins.cli.main import main
from twins.config import save_config
from twins.tasks import fit, task_for
from twins.tasks.scenes import SceneLayout, write_digit_scenes
from twins.train import dry_run
from twins.train.schedule import lr_schedule


def classify_data(root: Path) -> tuple[Path, dict]:
    return write_imagefolder(root), {"epochs": 3, "warmup_length": 1, "cooldown_epochs": 1}


def segment_data(root: Path) -> tuple[Path, dict]:
    write_digit_scenes(root, train=8, val=3, layout=SceneLayout(size=48), seed=0)
    recipe = {
        "task": "segment",
        "arch": "semantic_fpn_svt_small",
        "num_classes": 11,
        "reduce_zero_label": True,
        "img_scale": [96, 48],
        "crop_size": [48, 48],
        "batch_size": 4,
        "lr_scheduler": "poly_lr",
        "max_iters": 6,
        "warmup_iters": 2,
        "warmup_length": 0,
        "min_lr": 0.0,
    }
    return root, recipe


def detect_data(root: Path) -> tuple[Path, dict]:
    write_coco_train(root)
    write_coco_val(root)
    recipe = {
        "task": "detect",
        "arch": "retinanet_pcpvt_small",
        "num_classes": 3,
        "img_scale": [96, 64],
        "batch_size": 2,
        "lr_scheduler": "step_lr",
        "lr_steps": [1],
        "warmup_length": 0,
        "warmup_iters": 1,
        "epochs": 2,
    }
    return root, recipe


DATA = {"classify": classify_data, "segment": segment_data, "detect": detect_data}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root`: size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("task", DATA)
def test_a_dry_run_reports_everything_up_to_one_step_and_writes_nothing(tmp_path, task):
    data, recipe = DATA[task](tmp_path / "data")
    output = tmp_path / "run"
    # channels_last on: the one step shows that the switch trains each task's model.
    settings = {"model_args": TINY_MODEL, "channels_last": True, **recipe}
    config = make_config(data_url=str(data), train_url=str(output), **settings)
    before = snapshot(data)
    lines: list[str] = []

    report = dry_run(config, task_for(config), say=lines.append)

    assert not output.exists()
    assert snapshot(data) == before
    schedule = lr_schedule(config, report["steps_per_epoch"], world_size=1)
    assert report["total_steps"] == schedule.total_steps > 0
    assert report["lr"]["start"] == (0, schedule(0))
    assert report["lr"]["end"] == (schedule.total_steps - 1, schedule(schedule.total_steps - 1))
    peak_step, peak = report["lr"]["peak"]
    assert peak == max(schedule(s) for s in range(schedule.total_steps)) == schedule(peak_step)
    warmup_step, _ = report["lr"]["end of warmup"]
    assert warmup_step == (config.warmup_iters or config.warmup_length * schedule.steps_per_epoch)
    assert report["train_images"] > 0 and report["val_images"] > 0
    assert report["classes"] == config.num_classes and report["parameters"] > 0
    assert report["step_seconds"] > 0 and report["peak_memory_mib"] > 0
    text = "\n".join(lines)
    for said in ("model:", "data:", "classes:", "lr: start", "first batch:", "step:"):
        assert said in text, text
    assert f"{report['steps_per_epoch']} steps per epoch" in text


def test_the_command_line_dry_run_names_files_left_out_and_leaves_no_output(tmp_path, capsys):
    data = write_imagefolder(tmp_path / "data")
    (data / "train" / "class_0" / "notes.txt").write_text("not an image")
    config = make_config(data_url=str(data), train_url=str(tmp_path / "run"))
    recipe = tmp_path / "recipe.yaml"
    save_config(config, recipe)
    before = snapshot(data)

    assert main(["train", "-c", str(recipe), "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "1 file not an image left out (e.g. train/class_0/notes.txt)" in out
    assert "64 train, 14 val images" in out and "lr: start" in out and "peak memory" in out
    assert not (tmp_path / "run").exists() and snapshot(data) == before


def test_a_dry_run_on_a_run_in_progress_says_where_it_resumes_and_changes_nothing(
    imagefolder, tiny_config, tmp_path
):
    output = tmp_path / "run"
    config = tiny_config(imagefolder, output, epochs=2)
    fit(config, stop_after_epoch=1)
    before = snapshot(output)
    lines: list[str] = []

    dry_run(config, task_for(config), say=lines.append)

    assert f"resuming from {output / 'checkpoints' / 'last.pt'} after epoch 1 (step 4)" in lines
    assert snapshot(output) == before
