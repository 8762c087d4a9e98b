"""`twins.train.fit` is the function whatever was imported before it (its module has another
name, so importing the module never binds the package's `fit` to it)."""

from __future__ import annotations

import subprocess
import sys


def test_fit_is_the_function_whatever_was_imported_before():
    code = (
        "import types\n"
        "import twins.train.fit_loop\n"
        "from twins.train import build_model, fit\n"
        "assert isinstance(fit, types.FunctionType), fit\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
