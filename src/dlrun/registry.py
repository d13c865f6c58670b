"""Name -> builder registries for tasks and models (configs name entries, never import paths).

Entries are found, never listed by hand: every public module of the packages
``dlrun.tasks`` and ``dlrun.models`` is imported (each registers itself with a
decorator), and an installed package adds its own through entry points in the
groups ``dlrun.tasks`` and ``dlrun.models`` (name = the registry name, value =
the module that registers it), imported only when that name is asked for.
Only installed packages declare entry points: no config or run directory
names a module.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from dlrun.errors import UserError, first_line, printable


def closest(name: str, options: list[str]) -> str | None:
    """The option most similar to ``name``, if any is reasonably close."""
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_name_message(kind: str, name: str, options: list[str], how: str = "") -> str:
    """One line: what is unknown, what exists, the closest option."""
    msg = f"unknown {kind} '{name}'; valid: {', '.join(sorted(options))}"
    guess = closest(str(name), options)
    if guess:
        msg += f" (did you mean '{guess}'?)"
    return msg + how


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    schema: type | None
    kind: str | None


class Registry:
    """A dict filled by a decorator; lookups of unknown names list what exists.

    ``package`` holds the built-in entries (every public module is imported on
    the first lookup); ``group`` is the entry-point group of installed plugins.
    """

    def __init__(self, kind: str, package: str | None = None, group: str | None = None):
        self.kind = kind
        self.package = package
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._found = False

    def register(self, name: str, *, schema: type | None = None) -> Callable[[Any], Any]:
        """Register ``obj`` under ``name``; a model's kind is its class attribute ``kind``."""

        def deco(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, obj, schema, getattr(obj, "kind", None))
            return obj

        return deco

    def names(self) -> list[str]:
        """Built-in and registered names, and those installed plugins declare."""
        self._find_builtins()
        return sorted({*self._entries, *(ep.name for ep in self._plugins())})

    def entry(self, name: str) -> Entry:
        self._find_builtins()
        if name not in self._entries:
            declared = [ep for ep in self._plugins() if ep.name == name]
            if not declared:
                raise UserError(unknown_name_message(self.kind, name, self.names()))
            self._load_plugin(declared)
        return self._entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def _find_builtins(self) -> None:
        """Import every public module of ``package``; a module that fails is a bug: it raises."""
        if self._found or self.package is None:
            return
        self._found = True  # before importing: a module may look names up while it loads
        try:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{module.name}")
        except BaseException:
            self._found = False  # the next lookup raises again, not a half-filled registry
            raise

    def _plugins(self) -> list[EntryPoint]:
        return plugin_entry_points(self.group) if self.group else []

    def _load_plugin(self, declared: list[EntryPoint]) -> None:
        """Import the module an installed package declares for a name; its mistakes are
        one line naming the package (the user can fix or uninstall it), never a traceback."""
        ep = declared[0]
        where = f"{self.group} entry point '{ep.name} = {ep.value}' of {distribution(ep)}"
        if len(declared) > 1:
            others = ", ".join(distribution(e) for e in declared)
            raise UserError(
                f"{self.kind} '{ep.name}' is declared by several installed packages ({others}); "
                "uninstall all but one"
            )
        try:
            importlib.import_module(ep.module)
        except Exception as exc:  # anything the plugin's code raises: not dlrun's bug
            raise UserError(
                f"{where}: importing {ep.module} failed ({type(exc).__name__}: "
                f"{printable(str(exc).strip() and first_line(exc), 200)}); fix or uninstall "
                "that package"
            ) from None
        if ep.name not in self._entries:
            raise UserError(
                f"{where}: importing {ep.module} did not register {self.kind} '{ep.name}'; "
                f"register it with {self.kind.upper()}S.register('{ep.name}') there, or fix "
                "the entry point's name"
            )


GROUPS = {"task": "dlrun.tasks", "model": "dlrun.models"}
TASKS = Registry("task", "dlrun.tasks", GROUPS["task"])
MODELS = Registry("model", "dlrun.models", GROUPS["model"])


def plugin_entry_points(group: str) -> list[EntryPoint]:
    """The entry points installed packages declare in ``group`` (none are imported)."""
    return list(entry_points(group=group))


def distribution(ep: EntryPoint) -> str:
    """The package that declares ``ep``, as pip names it (with its version)."""
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def missing_yaml_hint(group: str, name: str) -> str:
    """Where the YAML of a name that an installed plugin declares belongs ("" if none does)."""
    declared = [ep for ep in plugin_entry_points(GROUPS.get(group, "")) if ep.name == name]
    if not declared:
        return ""
    ep = declared[0]
    return (
        f" ({distribution(ep)} declares {group} '{name}' but ships no conf/{group}/{name}.yaml "
        f"beside {ep.module})"
    )


def plugin_conf_dirs() -> list[Path]:
    """The ``conf/`` folder beside each plugin module, found without importing anything.

    A plugin ships ``conf/task/NAME.yaml`` and ``conf/dataset/NAME.yaml`` (and
    ``conf/model/NAME.yaml``) in the package that holds its module: for the
    entry point ``spirals = dlrun_spirals.spirals`` that is ``dlrun_spirals/conf/``.
    Only the top-level package is looked up (``find_spec`` of a top-level name
    runs no code); a broken plugin cannot break composing another task's config.
    """
    dirs: list[Path] = []
    for group in GROUPS.values():
        for ep in plugin_entry_points(group):
            top, *inner = ep.module.split(".")
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                continue
            if spec is None or not spec.submodule_search_locations:
                continue  # a missing or single-file module has no conf/ beside it
            for location in spec.submodule_search_locations:
                conf = Path(location, *inner[:-1], "conf")
                if conf.is_dir() and conf not in dirs:
                    dirs.append(conf)
    return dirs


def list_tasks() -> list[str]:
    return TASKS.names()


def list_models() -> list[str]:
    return MODELS.names()


def task_entry(name: str) -> Entry:
    return TASKS.entry(name)


def model_entry(name: str) -> Entry:
    return MODELS.entry(name)
