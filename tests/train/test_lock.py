"""One run per output folder: a second run is refused naming the holder, a crashed holder
leaves no stale lock, and a resumed run with another recipe says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from twins.errors import TwinsError
from twins.tasks import fit
from twins.train.lock import lock_output

CPU = torch.device("cpu")


def test_a_second_run_on_a_busy_folder_is_refused_naming_the_holder(
    imagefolder, tiny_config, tmp_path
):
    config = tiny_config(imagefolder, tmp_path / "run", epochs=1)
    with lock_output(tmp_path / "run", CPU), pytest.raises(TwinsError) as refused:
        fit(config)
    message = str(refused.value)
    assert f"in use by another run (process {os.getpid()} on " in message and "\n" not in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing of the holder's touched
    assert fit(config)["epoch"] == 1  # free again once the holder is gone


def test_a_killed_holder_leaves_no_stale_lock(imagefolder, tiny_config, tmp_path):
    holder = (
        "import os, signal, torch\n"
        "from twins.train.lock import lock_output\n"
        f"with lock_output({str(tmp_path / 'run')!r}, torch.device('cpu')):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", holder], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "run" / ".lock").is_file()
    assert fit(tiny_config(imagefolder, tmp_path / "run", epochs=1))["epoch"] == 1


def test_a_file_as_output_folder_is_one_line(imagefolder, tiny_config, tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(TwinsError, match="output folder .*taken is a file: give a folder"):
        fit(tiny_config(imagefolder, tmp_path / "taken", epochs=1))


def test_resuming_with_a_recipe_that_changes_the_math_says_so(
    imagefolder, tiny_config, tmp_path, capsys
):
    fit(tiny_config(imagefolder, tmp_path / "run", epochs=1))
    capsys.readouterr()
    fit(tiny_config(imagefolder, tmp_path / "run", epochs=2, base_lr=3e-3, log_every=2))
    out = capsys.readouterr().out
    notice = next(line for line in out.splitlines() if line.startswith("notice: resuming"))
    assert "epochs 1 → 2" in notice and "base_lr 0.002 → 0.003" in notice
    assert "log_every" not in notice  # changes nothing the run computes
    assert "from step 4" in notice
