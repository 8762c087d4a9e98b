"""DataLoader with reproducible order and augmentation, and broken-file handling.

Reproducibility: every random draw of the loader comes from a seed derived from
(`config.seed`, epoch). The shuffle order and the worker seeds come from the loader's generator;
with `num_workers=0` the transforms run in this process, under random states (torch CPU,
`random`, numpy) that the loader owns and swaps in only while it fetches a batch, so the model's
own random draws (dropout, drop path, mixup) neither disturb nor depend on the augmentation.
Hence an epoch's batches depend on (seed, epoch, number of workers) only, and a run resumed at
epoch k sees what an unbroken run saw. Call `loader.set_epoch(epoch)` before each epoch (it also
reseeds a given DistributedSampler), or build a new loader with `epoch=`.

Training workers are not persistent: each epoch starts fresh workers from that epoch's seed.
Evaluation transforms draw nothing random, so evaluation workers persist across epochs.

Broken files: the data set returns None for them (`twins.tasks.classify.data`); `collate_batch`
refills a training batch with other samples of the batch and shortens an evaluation batch, and
the loader counts what the batches it hands out left out and converted (`loader.counts`); a
batch with no readable image at all is left out; `check_health` of the data set runs after each
batch and stops the run when most files are broken. Under DDP (`build_loader(lockstep=True)`)
every process must run as many steps and none may stop alone: the loader does not judge (the
counts of all processes are judged together, `twins.train.distributed.check_health_together`),
and a training batch with no readable image is stood in for by a copy of the next readable batch
(of the last one, at the end of an epoch), so the number of batches never changes.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.util
import os
import random
import signal
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from twins.errors import TwinsError
from twins.seeds import derive_seed

if TYPE_CHECKING:  # the config is only read here; importing it would tie data to train
    from twins.config import TrainConfig

# Marks the end of the underlying iterator (None marks a batch without readable images).
_END = object()


def available_cpus() -> int:
    """CPUs this process may use, shared among the ranks torchrun started on this node."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def collate_batch(
    samples: list[Any], refill: bool, stack: Callable[[list[tuple]], Any] = default_collate
) -> tuple[Any, int, int]:
    """Stack samples (with `stack`, the task's), leaving out the None of unreadable files;
    returns (batch, unreadable images, images converted to RGB), the batch None when no sample
    was readable.

    With `refill`, the missing places are filled by repeating readable samples of the same batch,
    so a training batch keeps its size (mixup needs an even batch; DDP ranks stay in step).
    """
    readable = [sample for sample in samples if sample is not None]
    skipped = len(samples) - len(readable)
    converted = sum(bool(getattr(sample, "converted", False)) for sample in readable)
    if not readable:
        return None, skipped, converted
    if refill:
        readable += [readable[i % len(readable)] for i in range(skipped)]
    return stack([tuple(sample) for sample in readable]), skipped, converted


def _stack(batch: list[torch.Tensor], *, collate_fn_map: Any = None) -> torch.Tensor:
    return torch.stack(batch, 0)


# default_collate's rules, its tensors stacked in ordinary memory (in a worker default_collate
# stacks them into a new shared-memory segment).
_PLAIN_COLLATE_FN_MAP = {**default_collate_fn_map, torch.Tensor: _stack}


class _ByValue:
    """A tensor that pickles as its bytes and unpickles as a tensor (NumPy's pickling)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __reduce__(self) -> tuple:
        return _from_numpy, (self.tensor.numpy(),)


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


# The dtypes NumPy holds (`Tensor.numpy`); a tensor of another stays a tensor (shared memory).
_NUMPY_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
                 torch.float16, torch.float32, torch.float64)  # fmt: skip


def _by_value(batch: Any) -> Any:
    """`batch` with its tensors (in lists, tuples, dicts) wrapped to pickle by value."""
    if isinstance(batch, torch.Tensor):
        return _ByValue(batch) if batch.dtype in _NUMPY_DTYPES else batch
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(_by_value(item) for item in batch)
    if isinstance(batch, dict):
        return {key: _by_value(value) for key, value in batch.items()}
    return batch


def stack_by_value(samples: list[tuple]) -> Any:
    """`default_collate`, whose batch leaves a loader worker by value: its tensors stacked in
    the worker's own memory and sent as bytes through the worker's pipe, tensors again when
    the main process (or its pin-memory thread) reads them.

    default_collate stacks a worker's batch into a new shared-memory segment, one per tensor,
    each handed over as a file descriptor: every page of a new segment faults in the worker
    that writes it and again in the process that reads it. For a training batch of uint8
    images (4.8 MB at 32 x 224 x 224) the copies through the pipe cost less: 0.2-0.4 ms less
    CPU per image, all processes together, with 2 workers on a 2-core VM (docs/benchmarks.md)."""
    if get_worker_info() is None:
        return default_collate(samples)
    return _by_value(collate(samples, collate_fn_map=_PLAIN_COLLATE_FN_MAP))


# Whether a loader is fetching in this process under its own random states (`_RandomStates`).
_FETCHING_UNDER_OWN_STATES = False


def loader_owns_random_states() -> bool:
    """Whether the random states in force belong to a loader: inside one of its worker
    processes, or while it fetches in this process under the states it swapped in (and puts the
    caller's back after). A data set that seeds them for each sample need not save them then."""
    return _FETCHING_UNDER_OWN_STATES or get_worker_info() is not None


class _RandomStates:
    """torch CPU, `random` and numpy states owned by the loader, swapped in while it fetches."""

    def __init__(self, seed: int) -> None:
        self.torch = torch.Generator().manual_seed(seed).get_state()
        self.python = random.Random(seed).getstate()
        self.numpy = np.random.RandomState(seed % 2**32).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        global _FETCHING_UNDER_OWN_STATES
        saved = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        torch.set_rng_state(self.torch)
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        outer, _FETCHING_UNDER_OWN_STATES = _FETCHING_UNDER_OWN_STATES, True
        try:
            yield
        finally:
            _FETCHING_UNDER_OWN_STATES = outer
            self.torch, self.python, self.numpy = (
                torch.get_rng_state(),
                random.getstate(),
                np.random.get_state(),
            )
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


class TwinsDataLoader(DataLoader):
    """DataLoader seeded per epoch that skips unreadable batches and checks data health."""

    def __init__(
        self,
        *args: Any,
        seed: int,
        epoch: int = 0,
        check_health: bool = True,
        stand_in_for_unreadable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.seed = seed
        self.check_health = check_health  # False: the caller judges the data set's counts
        # True: a batch with no readable image is replaced, not left out (see the module's doc)
        self.stand_in_for_unreadable = stand_in_for_unreadable
        # Unreadable images left out and images converted to RGB in the batches handed out
        # so far (every epoch counts again); batches the workers read ahead are not counted.
        self.counts = {"skipped": 0, "converted": 0}
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Reseed order and augmentation for `epoch` (and the sampler's, when it has one)."""
        self.epoch = epoch
        self.generator.manual_seed(derive_seed(self.seed, epoch, 0))
        self._random_states = _RandomStates(derive_seed(self.seed, epoch, 1))
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        check_health = getattr(self.dataset, "check_health", None) if self.check_health else None
        in_process = self.num_workers == 0
        batches = super().__iter__()
        _WORKERS.update(getattr(batches, "_workers", ()))
        unreadable = 0  # batches without a readable image, waiting for a stand-in
        last = None
        while True:
            # Without workers the transforms run here: give them the loader's random states.
            with self._random_states.active() if in_process else contextlib.nullcontext():
                try:
                    batch = next(batches, _END)
                except TwinsError as error:
                    raise TwinsError(worker_line(error), argument=error.argument) from error
            if batch is _END:
                break
            batch, skipped, converted = batch
            self.counts["skipped"] += skipped
            self.counts["converted"] += converted
            if check_health is not None:
                check_health()
            if batch is None:  # no readable image in this batch
                if self.stand_in_for_unreadable:
                    unreadable += 1
                continue
            for _ in range(unreadable):
                yield _copy(batch)  # a copy: the step may change its inputs in place (mixup)
            unreadable = 0
            last = batch
            yield batch
        if last is not None:
            for _ in range(unreadable):
                yield _copy(last)


def worker_line(error: TwinsError) -> str:
    """The line of a `TwinsError` raised in a loader worker. torch raises it again in the
    main process with the worker's whole traceback as its message ("Caught TwinsError in
    DataLoader worker process 0. Original Traceback ..."): the user's line is its last part."""
    message = str(error)
    marker = f"\n{TwinsError.__module__}.{TwinsError.__qualname__}: "
    if "Original Traceback" not in message or marker not in message:
        return message
    return message.rsplit(marker, 1)[1].strip()


def _copy(batch: Any) -> Any:
    if isinstance(batch, (list, tuple)):
        return [_copy(item) for item in batch]
    if isinstance(batch, dict):
        return {key: _copy(value) for key, value in batch.items()}
    return batch.clone() if isinstance(batch, torch.Tensor) else batch


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM and SIGINT to the main process, which finishes its step and
    saves before it stops (`twins.train.stop`); they end when it ends (`_end_loader_workers`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# The worker processes of this process's loaders (see `_end_loader_workers`).
_WORKERS: weakref.WeakSet = weakref.WeakSet()


def _end_loader_workers() -> None:
    """At exit, multiprocessing ends the workers still running with SIGTERM, then waits for
    them: workers that ignore SIGTERM (those of a loader not yet collected) would be waited for
    forever. End them first: multiprocessing runs its finalizers before it ends its children."""
    alive = [process for process in _WORKERS if process.is_alive()]
    if not alive:
        return
    if hasattr(signal, "SIGCHLD"):  # torch reports a worker's death as an error; here it is meant
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for process in alive:
        process.kill()
    for process in alive:
        process.join(timeout=5)


multiprocessing.util.Finalize(None, _end_loader_workers, exitpriority=100)


def build_loader(
    dataset: Dataset,
    config: TrainConfig,
    train: bool,
    sampler: Sampler | None = None,
    epoch: int = 0,
    lockstep: bool = False,
    stack: Callable[[list[tuple]], Any] = default_collate,
) -> TwinsDataLoader:
    """Loader for `dataset`: shuffled, refilled and last partial batch dropped when `train`.

    Reads `batch_size` (per process), `num_parallel_workers` (capped to the CPUs available)
    and `seed`. A given `sampler` (e.g. DistributedSampler) replaces the shuffle.
    `lockstep` (one of several DDP processes): the caller judges broken files over all
    processes, and a training batch without readable images gets a stand-in, not left out.
    `stack` makes a batch of the readable samples (the task's: fixed-size tensors are stacked,
    images of different sizes kept in lists).
    """
    workers = max(0, min(int(config.num_parallel_workers), available_cpus()))
    return TwinsDataLoader(
        dataset,
        batch_size=int(config.batch_size),
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=functools.partial(collate_batch, refill=train, stack=stack),
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=workers > 0 and not train,
        worker_init_fn=ignore_stop_signals,
        seed=int(config.seed),
        epoch=epoch,
        check_health=not lockstep,
        stand_in_for_unreadable=lockstep and train,
    )
