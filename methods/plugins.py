"""Plugins: user modules that register methods (or metrics, datasets, protocols) into the registries.

A plugin is an ordinary module whose import registers things, e.g. ``@METHODS.register()`` on a Method
subclass. Three ways to load one, all idempotent (a module is imported once per process):

- ``python -m bench run --plugin my_module`` (an importable module name) or ``--plugin path/to/file.py``;
- the environment variable ``AEGAN_BENCH_PLUGINS`` (comma-separated module names or .py paths), read by
  every command, so ``bench list methods`` and ``bench compare`` see the plugin too;
- the entry-point group ``aegan_bench.methods`` of an installed package: the entry point may name a module
  (its import registers) or a Method subclass, which is registered under its ``name`` if it is not yet.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from bench.core.errors import UsageError

from .base import METHODS, Method

ENV_VAR = "AEGAN_BENCH_PLUGINS"
ENTRY_POINT_GROUP = "aegan_bench.methods"

#: spec -> loaded module; the provenance of what plugins were active in this process
LOADED: dict[str, ModuleType] = {}


class PluginError(UsageError):
    """A plugin that cannot be found or whose import fails to register cleanly (exit code 2)."""


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def _import_file(path: Path) -> ModuleType:
    # a stable module name per file, so a second load of the same path is the same module
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"aegan_bench_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugin(spec: str) -> ModuleType:
    """Import a plugin by module name or .py path; registration happens as a side effect of the import."""
    spec = spec.strip()
    if spec in LOADED:
        return LOADED[spec]
    try:
        if _is_path(spec):
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise PluginError(f"plugin file {spec} does not exist")
            module = _import_file(path)
        else:
            module = importlib.import_module(spec)
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        if e.name and spec.split(".")[0] == e.name.split(".")[0]:
            raise PluginError(f"plugin module {spec!r} cannot be imported: not found on sys.path "
                              f"(pass a .py path, or install the module)") from None
        raise PluginError(f"plugin {spec!r} failed to import: {e}") from e
    except (ImportError, SyntaxError) as e:
        raise PluginError(f"plugin {spec!r} failed to import: {e}") from e
    except (ValueError, TypeError) as e:
        # the registries' own refusals (duplicate name, not a subclass of Method/Metric)
        raise PluginError(f"plugin {spec!r}: {e}") from e
    LOADED[spec] = module
    return module


def _load_entry_point(ep: metadata.EntryPoint) -> None:
    try:
        obj = ep.load()
    except Exception as e:
        raise PluginError(f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP} failed to load: "
                          f"{e}") from e
    # a Method class named by the entry point is registered here unless its module already did it
    if isinstance(obj, type) and issubclass(obj, Method):
        name = obj.name or ep.name
        if name not in METHODS:
            METHODS.add(name, obj)
        elif METHODS.get(name) is not obj:
            raise PluginError(f"entry point {ep.name!r} ({ep.value}): method {name!r} is already registered")
    LOADED[f"entry-point:{ep.name}={ep.value}"] = sys.modules.get(getattr(obj, "__module__", ""), obj)


def env_plugins() -> list[str]:
    text = os.environ.get(ENV_VAR, "")
    return [s.strip() for s in text.replace(os.pathsep, ",").split(",") if s.strip()]


def load_plugins(extra: list[str] | None = None) -> list[str]:
    """Load the entry points, then $AEGAN_BENCH_PLUGINS, then `extra` (e.g. --plugin); returns what is loaded."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{ep.name}={ep.value}"
        if key not in LOADED:
            _load_entry_point(ep)
    for spec in [*env_plugins(), *(extra or [])]:
        load_plugin(spec)
    return list(LOADED)
