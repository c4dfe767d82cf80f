"""Lazy imports of optional dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from tilestream.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, *, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` with an install hint.

    Parameters
    ----------
    module
        The module to import, e.g. ``"torch"``.
    extra
        The tilestream extra that installs it, e.g. ``"torch"``.
    purpose
        What it is needed for, used in the message.

    Examples
    --------
    >>> require("json", extra="none").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{module} is needed{what} but is not installed; "
            f"install it with: pip install 'tilestream[{extra}]'"
        ) from exc
