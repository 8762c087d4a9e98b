"""Names exported lazily stay what they name when a submodule of the same name is imported
first (`twins.train.fit`: the function, defined in the module `twins.train.fit`)."""

from __future__ import annotations

import subprocess
import sys


def test_fit_is_the_function_whatever_was_imported_before():
    code = (
        "import types\n"
        "from twins.train import build_model, fit\n"
        "assert isinstance(fit, types.FunctionType), fit\n"
        "import twins.train\n"
        "assert twins.train.fit is fit\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
