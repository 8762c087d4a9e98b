"""build_loader: order and augmentation fixed by (seed, epoch), batching, workers, samplers."""

import pickle
import random
import subprocess
import sys
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, default_collate

from twins.data import build_loader
from twins.data import loader as loader_module
from twins.data.loader import available_cpus, stack_by_value
from twins.seeds import derive_seed
from twins.tasks.classify.data import build_datasets


def _epoch(loader):
    """The training batches: ((uint8 images, erasing tables), labels), copied."""
    return [
        ((images.clone(), erasing.clone()), labels.clone()) for (images, erasing), labels in loader
    ]


def _same(first, second) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )


@pytest.fixture
def train_set(make_config, image_folder):
    cfg = make_config(data_url=str(image_folder), batch_size=4)
    return cfg, build_datasets(cfg)[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_same_seed_and_epoch_give_the_same_batches(train_set, workers):
    cfg, dataset = train_set
    cfg.num_parallel_workers = workers
    first = _epoch(build_loader(dataset, cfg, train=True, epoch=3))
    second = _epoch(build_loader(dataset, cfg, train=True, epoch=3))
    assert _same(first, second)
    assert not _same(first, _epoch(build_loader(dataset, cfg, train=True, epoch=4)))
    cfg.seed = 1
    assert not _same(first, _epoch(build_loader(dataset, cfg, train=True, epoch=3)))


def test_set_epoch_matches_a_loader_built_for_that_epoch(train_set):
    # What a resumed run relies on: epoch 2 looks the same whether or not epochs 0-1 ran before.
    cfg, dataset = train_set
    loader = build_loader(dataset, cfg, train=True)
    for epoch in range(2):
        loader.set_epoch(epoch)
        _epoch(loader)
    loader.set_epoch(2)
    assert _same(_epoch(loader), _epoch(build_loader(dataset, cfg, train=True, epoch=2)))


def test_batches_do_not_depend_on_or_disturb_the_global_random_state(train_set):
    cfg, dataset = train_set
    expected = _epoch(build_loader(dataset, cfg, train=True))
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    batches = []
    for (images, erasing), labels in build_loader(dataset, cfg, train=True):
        batches.append(((images.clone(), erasing.clone()), labels.clone()))
    assert _same(batches, expected)
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert (np.random.get_state()[1] == state[2]).all()
    # draws of the model between batches (dropout, mixup) leave the batches as they were
    interleaved = []
    for (images, erasing), labels in build_loader(dataset, cfg, train=True):
        torch.rand(7), random.random(), np.random.rand()
        interleaved.append(((images.clone(), erasing.clone()), labels.clone()))
    assert _same(interleaved, expected)


def test_train_drops_the_last_partial_batch_and_eval_keeps_every_image(train_set):
    cfg, dataset = train_set
    cfg.batch_size = 5
    assert [len(labels) for _, labels in build_loader(dataset, cfg, train=True)] == [5, 5]
    evaluated = torch.cat([labels for _, labels in build_loader(dataset, cfg, train=False)])
    assert evaluated.tolist() == [label for _, label in dataset.samples]  # in order, once each


def test_workers_are_capped_to_the_available_cpus(train_set):
    cfg, dataset = train_set
    cfg.num_parallel_workers = 10_000
    assert build_loader(dataset, cfg, train=False).num_workers == available_cpus()
    cfg.num_parallel_workers = 1
    loader = build_loader(dataset, cfg, train=False)
    assert loader.num_workers == 1 and loader.persistent_workers
    assert not build_loader(dataset, cfg, train=True).persistent_workers


def test_given_distributed_sampler_sets_order_and_is_reseeded(train_set):
    cfg, dataset = train_set
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=cfg.seed)
    loader = build_loader(dataset, cfg, train=True, sampler=sampler, epoch=5)
    assert loader.sampler is sampler and sampler.epoch == 5
    assert sum(len(labels) for _, labels in loader) == 4  # 6 of 12 images, last partial dropped
    loader.set_epoch(6)
    assert sampler.epoch == 6


def test_epoch_seed_is_distinct_per_seed_and_epoch():
    seeds = {derive_seed(seed, epoch) for seed in range(4) for epoch in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


def test_a_process_exits_while_its_loader_workers_still_run(image_folder, tmp_path):
    """Workers ignore SIGTERM (the main process saves first when a scheduler stops a run);
    a loader never collected must still not keep the process from exiting."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from factories import make_config
from twins.data import SafeImageFolder, build_loader
from twins.tasks.classify.transforms import build_eval_transform

config = make_config(num_classes=2, num_parallel_workers=2, batch_size=2)
folder = SafeImageFolder({str(image_folder / "val")!r}, transform=build_eval_transform(config))
loader = build_loader(folder, config, train=False)  # persistent workers
batches = iter(loader)
next(batches)
kept = [batches]
kept.append(kept)  # a cycle: nothing collects it before the interpreter exits
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def test_training_batches_leave_the_workers_by_value_as_default_collate_gives_them(train_set):
    cfg, dataset = train_set
    cfg.num_parallel_workers = 1
    expected = _epoch(build_loader(dataset, cfg, train=True))  # default_collate
    assert _same(_epoch(build_loader(dataset, cfg, train=True, stack=stack_by_value)), expected)


def test_stack_by_value_in_a_worker_pickles_tensors_as_their_bytes(monkeypatch):
    samples = [
        ((torch.full((3, 2, 2), i, dtype=torch.uint8), torch.ones(1, 5)), i) for i in range(4)
    ]
    expected = default_collate(samples)
    monkeypatch.setattr(loader_module, "get_worker_info", lambda: object())  # as in a worker
    batch = stack_by_value(samples)
    data = ForkingPickler.dumps(batch)
    assert len(data) > 4 * 3 * 2 * 2 + 4 * 5 * 4  # the pixels and tables travel in the pickle
    (images, tables), labels = pickle.loads(data)
    assert not images.is_shared() and torch.equal(images, expected[0][0])
    assert torch.equal(tables, expected[0][1]) and torch.equal(labels, expected[1])
