"""A run's compute threads: the config's `threads`, else the cores left after the data workers;
set while the run trains, stated on its `device:` line, and part of its config.yaml."""

from __future__ import annotations

import torch
import yaml

from factories import make_config
from twins.data.loader import available_cpus
from twins.tasks import fit
from twins.train.threads import compute_threads


def test_the_default_leaves_the_data_workers_their_cores():
    workers = make_config(threads=0, num_parallel_workers=1)
    assert compute_threads(workers) == max(1, available_cpus() - 1)
    assert compute_threads(make_config(threads=0, num_parallel_workers=64)) == 1
    assert compute_threads(make_config(threads=3)) == 3


def test_a_run_trains_with_its_threads_says_so_and_records_them(
    imagefolder, tmp_path, capsys, monkeypatch
):
    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    before = torch.get_num_threads()
    config = make_config(
        data_url=str(imagefolder), train_url=str(tmp_path / "run"), epochs=1, threads=1
    )
    fit(config)
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    printed = capsys.readouterr().out
    assert "1 compute thread beside 0 data workers (threads)" in printed
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"] == 1
