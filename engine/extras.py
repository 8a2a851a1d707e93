"""Optional dependencies: a clear sentence with the install line instead of a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional package a command needs is not installed."""


def require(module: str, purpose: str, extra: str = "research") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} need {package}: pip install 'immersions[{extra}]'"
        ) from None
