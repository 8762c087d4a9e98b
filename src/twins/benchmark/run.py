"""`run_benchmark`: build what the options ask for, time it, and return the results as a dict
(the `--json` output of `twins benchmark`)."""

from __future__ import annotations

import copy
import datetime
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from twins import storage
from twins.benchmark.hardware import cpu_description, device_name, peak_tflops
from twins.benchmark.loaders import (
    REFERENCE_LOADERS,
    build_loaders,
    image_root,
    is_packed_source,
    measure_loaders,
    summarise,
)
from twins.benchmark.profile import profile_steps
from twins.benchmark.steps import make_step, timm_twin
from twins.benchmark.timing import Timing, alternate, round_ratios
from twins.data.worker_death import reporting_worker_deaths
from twins.device import select_device
from twins.errors import TwinsError
from twins.memory import PeakMemory
from twins.tasks import create_model, task_named, task_of

MODES = ("infer", "train", "data")
# What a model benchmark compares with: timm's classifier, smp's UperNet (twins.benchmark.smp),
# our model's OpenVINO IR, float32 and int8 (twins.benchmark.openvino).
MODEL_REFERENCES = ("timm", "smp", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class BenchmarkOptions:
    model: str = "pcpvt_small"
    model_args: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    device: str | None = None  # None: cuda when available, else cpu (twins.device.select_device)
    mode: str = "infer"
    precision: str = "fp32"
    batch_size: int | None = None  # None: 16 on CPU, 256 on GPU
    image_size: int = 224
    channels_last: bool = False
    compile: bool = False
    warmup: int | None = None  # None: 2 on CPU, 10 on GPU (5 in data mode)
    iters: int | None = None  # None: 3 on CPU, 20 on GPU (data mode: batches per pass, 16)
    rounds: int = 5
    # "timm", "smp" (segmenters; data mode: REFERENCE_LOADERS); None with `compile`: our eager
    # model, the ratio being what compiling gives
    compare: str | None = None
    data: str | None = None
    workers: int = 4
    threads: int | None = None
    profile: bool = False  # after timing, profile `iters` steps of each implementation
    seed: int = 0


def resolve(options: BenchmarkOptions) -> tuple[BenchmarkOptions, torch.device]:
    """Check the options and fill in the device-dependent defaults."""
    if options.mode not in MODES:
        raise TwinsError(f"unknown mode {options.mode!r}: use one of {', '.join(MODES)}")
    if options.precision not in PRECISIONS:
        raise TwinsError(f"unknown precision {options.precision!r}: use {', '.join(PRECISIONS)}")
    references = REFERENCE_LOADERS if options.mode == "data" else MODEL_REFERENCES
    if options.compare is not None and options.compare not in references:
        raise TwinsError(
            f"cannot compare with {options.compare!r}: use one of {', '.join(references)}"
        )
    device = select_device(options.device or "auto")
    name = device.type
    if options.mode == "data" and not options.data:
        raise TwinsError(
            "mode data needs data, a folder of class folders of images", argument="data"
        )
    if options.compare == "openvino" and (
        options.mode != "infer" or options.precision != "fp32" or name != "cpu"
    ):
        raise TwinsError(
            "compare openvino times float32 inference on the CPU: use mode infer, precision "
            "fp32 and device cpu",
            argument="compare",
        )
    if options.mode == "data" and options.profile:
        raise TwinsError(
            "profile profiles model steps: use it with mode infer or train", argument="profile"
        )
    for flag in ("batch_size", "image_size", "iters", "rounds", "threads"):
        value = getattr(options, flag)
        if value is not None and value < 1:
            raise TwinsError(f"{flag} must be at least 1, not {value}", argument=flag)
    gpu = name == "cuda"
    data = options.mode == "data"
    filled = BenchmarkOptions(
        **{
            **asdict(options),
            "device": name,
            "batch_size": options.batch_size or (256 if gpu else 16),
            "warmup": options.warmup if options.warmup is not None else (5 if gpu else 2),
            "iters": options.iters or (16 if data else 20 if gpu else 3),
        }
    )
    return filled, device


def run_benchmark(options: BenchmarkOptions) -> dict[str, Any]:
    options, device = resolve(options)
    if options.threads:
        torch.set_num_threads(options.threads)
    result: dict[str, Any] = {
        **{key: value for key, value in asdict(options).items() if key != "device"},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": device.type,
        "device_name": device_name(device),
        "cpu": cpu_description(),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
    if options.mode == "data":
        result.update(_data_benchmark(options))
    else:
        result.update(_model_benchmark(options, device))
    return result


def _model_benchmark(options: BenchmarkOptions, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    torch.manual_seed(options.seed)
    task = task_named(task_of(options.model))
    # Timed at image_size, as the fit loop's detectors take their images: their own resize off.
    model_args = {**task.model_arguments_for_benchmark(), **options.model_args}
    ours = create_model(options.model, **model_args)
    models = {"ours": ours}
    if options.compare in ("timm", "openvino") and options.compare not in task.compares_with:
        instead = [f"compare a {task.name} model with {name}" for name in task.compares_with]
        missing = {
            "timm": f"timm has no {task.description} models",
            "openvino": f"the OpenVINO comparison times classifiers, not {task.description} models",
        }
        raise TwinsError(
            f"{missing[options.compare]}: benchmark {options.model} without "
            f"--compare" + (f" ({', '.join(instead)})" if instead else ""),
            argument="compare",
        )
    if options.compare == "timm":
        models["timm"] = timm_twin(ours, options.image_size)
    if options.compare == "smp":
        from twins.benchmark.smp import smp_upernet

        models["smp"] = smp_upernet(ours)
    if options.compile and options.compare is None:
        # What compiling gives: our model timed eagerly beside itself compiled, same weights.
        models["eager"] = copy.deepcopy(ours)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    inputs, labels, loss_of = task.benchmark_batch(
        ours, options.batch_size, options.image_size, device
    )
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.contiguous(memory_format=memory_format)
    macs = task.count_macs(ours, options.image_size)  # before training changes the weights
    steps = {}
    for name, model in models.items():
        model.to(device, memory_format=memory_format)
        compiled = options.compile and name != "eager"
        steps[name] = make_step(
            model, options.mode, inputs, labels, options.precision, compiled, loss_of
        )
    if options.compare == "openvino":
        from twins.benchmark.openvino import openvino_steps

        steps |= openvino_steps(ours, inputs, torch.get_num_threads())
    timings = alternate(steps, device, options.warmup, options.iters, options.rounds)

    flops_per_image = 2 * macs * (3 if options.mode == "train" else 1)
    peak, peak_source = peak_tflops(device, options.precision)
    results = {}
    for name, timing in timings.items():
        images_per_s = options.batch_size / timing.median
        achieved = flops_per_image * images_per_s / 1e12
        results[name] = {
            "images_per_s": images_per_s,
            "step_ms": timing.median * 1e3,
            "peak_memory_mib": timing.peak_memory_mib,
            "tflops": achieved,
            "peak_fraction": achieved / peak if peak else None,
            "step_ms_per_round": [t * 1e3 for t in timing.seconds_per_step],
            "page_faults_per_step": statistics.median(timing.page_faults_per_step),
        }
    # torch.profiler sees none of OpenVINO's work: its steps are left out of a profile.
    profiled = {name: step for name, step in steps.items() if name in models}
    profiles = None
    if options.profile:
        profiles = profile_steps(profiled, models, device, options.iters, options.compile)
    return {
        "profile": profiles,
        "gmacs_per_image": macs / 1e9,
        "gflops_per_image": flops_per_image / 1e9,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "memory_kind": PeakMemory(device).kind,
        "results": results,
        **_ratio(timings, options.compare or ("eager" if "eager" in models else None)),
    }


def _data_benchmark(options: BenchmarkOptions) -> dict[str, Any]:
    source = options.data if is_packed_source(options.data) else str(image_root(options.data))
    loaders, workers = build_loaders(
        source, options.image_size, options.batch_size, options.workers, options.iters,
        options.compare,
    )  # fmt: skip
    with reporting_worker_deaths(storage.display(source), fewer="--workers 0"):
        passes = measure_loaders(loaders, options.rounds)
    kind = "packed" if is_packed_source(source) else "folder"
    return {"data_root": storage.display(source), "data_kind": kind, "workers": workers,
            **summarise(passes)}  # fmt: skip


def _ratio(timings: dict[str, Timing], reference: str | None) -> dict[str, Any]:
    if reference not in timings:
        return {"ratio": None, "ratios": None}
    if reference == "openvino":
        return _openvino_ratios(timings)
    ratios = round_ratios(timings["ours"], timings[reference])
    return {"ratio": statistics.median(ratios), "ratios": ratios, "reference": reference}


def _openvino_ratios(timings: dict[str, Timing]) -> dict[str, Any]:
    """The other way round from the other comparisons: the OpenVINO model's throughput over
    ours (above 1: OpenVINO is faster), float32 as `ratio`, int8 beside it."""
    from twins.benchmark.openvino import INT8_NOTE

    ratios = round_ratios(timings["openvino"], timings["ours"])
    int8_ratios = round_ratios(timings["openvino_int8"], timings["ours"])
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "int8_ratio": statistics.median(int8_ratios),
        "int8_ratios": int8_ratios,
        "reference": "openvino",
        "ratio_of": "openvino / ours",
        "int8_note": INT8_NOTE,
    }
