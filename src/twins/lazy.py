"""Names a package exports but imports only when first used (PEP 562), so that importing a light
part of it (the command line's parsers, the YAML config) does not import torch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name `modules` maps each public name to
    the module that defines it."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(modules[name]), name)
        namespace[name] = value  # later look-ups skip this function
        # Importing a submodule binds its name in the package: where a public name is also a
        # submodule's (`twins.train.fit`, the function, in the module `twins.train.fit`), put
        # the public object back over the module the import left.
        for public, module in modules.items():
            submodule = sys.modules.get(f"{package}.{public}")
            if submodule is not None and namespace.get(public) is submodule:
                namespace[public] = getattr(sys.modules[module], public)
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *modules])

    return __getattr__, __dir__
