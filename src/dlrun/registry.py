"""Name -> builder registries for tasks and models (configs name entries, never import paths)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlrun.errors import UserError


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
    """A dict filled by a decorator; lookups of unknown names list what exists."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, schema: type | None = None) -> Callable[[Any], Any]:
        """Register ``obj`` under ``name``; a model's kind is its class attribute ``kind``."""

        def deco(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, obj, schema, getattr(obj, "kind", None))
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UserError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).obj


TASKS = Registry("task")
MODELS = Registry("model")


def _load_all() -> None:
    # Explicit imports so that registration cannot go missing.
    import dlrun.models.bow  # noqa: F401
    import dlrun.models.cnn  # noqa: F401
    import dlrun.models.lstm_attention  # noqa: F401
    import dlrun.models.mlp  # noqa: F401
    import dlrun.models.seq2seq  # noqa: F401
    import dlrun.models.transformer  # noqa: F401
    import dlrun.tasks.algebra  # noqa: F401
    import dlrun.tasks.dates  # noqa: F401
    import dlrun.tasks.images  # noqa: F401
    import dlrun.tasks.imdb  # noqa: F401
    import dlrun.tasks.kmnist  # noqa: F401
    import dlrun.tasks.tabular  # noqa: F401
    import dlrun.tasks.text_pairs  # noqa: F401


def list_tasks() -> list[str]:
    _load_all()
    return TASKS.names()


def list_models() -> list[str]:
    _load_all()
    return MODELS.names()


def task_entry(name: str) -> Entry:
    _load_all()
    return TASKS.entry(name)


def model_entry(name: str) -> Entry:
    _load_all()
    return MODELS.entry(name)
