"""Sizes written and read as people write them."""

from __future__ import annotations

import pytest

from twins.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("value", "shown", "at_least"),
    [
        (5, "5B", "5B"),
        (80_000, "80KB", "80KB"),
        (80_001, "80KB", "80.1KB"),
        (163_840, "164KB", "164KB"),
        (123_456_789, "123MB", "124MB"),
        (999_999_999, "1000MB", "1000MB"),
        (1_500_000_000, "1.5GB", "1.5GB"),
    ],
)
def test_sizes_are_shown_in_the_unit_they_fill_and_read_back(value, shown, at_least):
    assert format_size(value) == shown
    assert format_size(value, round_up=True) == at_least
    assert parse_size(at_least) >= value  # a size to set is never short
