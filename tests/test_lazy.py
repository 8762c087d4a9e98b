"""`twins.train.fit` is the function whatever was imported before it (its module has another
name, so importing the module never binds the package's `fit` to it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "first", ["from twins.train import build_model", "import twins.train.fit_loop", "pass"]
)
def test_fit_is_the_function_whatever_was_imported_before(first):
    code = (
        f"{first}\nimport types\nfrom twins.train import fit\n"
        "assert isinstance(fit, types.FunctionType), fit\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
