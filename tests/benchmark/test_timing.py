"""Alternated timing counts each implementation's page faults per step, round by round."""

import torch

from twins.benchmark.timing import alternate

ELEMENTS = 16 * 2**20  # 64 MiB of float32: above glibc's largest mmap threshold (32 MiB)


def test_page_faults_are_counted_per_step_of_each_implementation():
    kept = torch.empty(ELEMENTS)

    def fresh() -> None:  # a new tensor each step: mapped anew, every page faulted in
        torch.ones(ELEMENTS)

    def reused() -> None:  # the same memory each step
        kept.fill_(1.0)

    steps = {"fresh": fresh, "reused": reused}
    timings = alternate(steps, torch.device("cpu"), warmup=1, iters=2, rounds=3)
    assert [len(timing.page_faults_per_step) for timing in timings.values()] == [3, 3]
    # at least one fault per 2 MiB (transparent huge pages), 16,384 with 4 KiB pages
    assert min(timings["fresh"].page_faults_per_step) >= ELEMENTS * 4 / 2**21
    assert max(timings["reused"].page_faults_per_step) < 16
