"""Which point strategies exist, known without importing torch.

The built-in strategies are implemented in :mod:`forest_seg.points` (with the geometry of
the spatial ones in :mod:`forest_seg.points_spatial`) and named here, in their order. A new
strategy lives in its own module ``forest_seg/points_<name>.py`` that defines ``STRATEGIES =
{name: function}`` (see :mod:`forest_seg.points`). Listing the names imports only such
modules, so a sweep driver that validates its configs imports no torch unless one exists.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

BUILTIN_STRATEGIES = ("balanced", "uniform", "forest", "spread", "boundary")
BUILTIN_MODULES = ("points_spatial",)  # implement built-ins; no STRATEGIES of their own
_PLUGINS: dict[str, Callable[..., Any]] | None = None


def plugin_modules() -> list[str]:
    """The ``forest_seg.points_<name>`` modules that may add strategies, by name."""
    import forest_seg

    return sorted(m.name for m in pkgutil.iter_modules(forest_seg.__path__)
                  if m.name.startswith("points_") and m.name not in BUILTIN_MODULES)


def plugin_strategies() -> dict[str, Callable[..., Any]]:
    """The ``STRATEGIES`` of every :func:`plugin_modules` module, by module name, found (and
    imported) once."""
    global _PLUGINS
    if _PLUGINS is None:
        found: dict[str, Callable[..., Any]] = {}
        for module in plugin_modules():
            found.update(getattr(importlib.import_module(f"forest_seg.{module}"),
                                 "STRATEGIES", {}))
        _PLUGINS = found
    return _PLUGINS


def point_strategies() -> tuple[str, ...]:
    """Every strategy's name: the built-ins, then those of the plugin modules."""
    return tuple(dict.fromkeys((*BUILTIN_STRATEGIES, *plugin_strategies())))
