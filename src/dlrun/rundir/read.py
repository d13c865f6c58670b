"""A run directory read as data: nothing in it can run code or reach the environment.

Resume, predict and report read a run's files through these functions. JSON
and YAML are parsed as plain data (no OmegaConf interpolation, so a handed
``${oc.env:...}`` stays a string), checkpoints load with ``weights_only=True``,
and a damaged or foreign file is one ``UserError`` line naming it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from dlrun.errors import UserError, first_line


def select(data: dict, key: str, default: Any = None) -> Any:
    """``data['a']['b']`` for ``'a.b'`` in plain nested dicts; ``default`` if absent."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# The largest JSON or YAML file read from a run or sweep directory (a vocabulary of a
# million words is ~20 MB): a handed folder cannot make a reader take gigabytes.
MAX_TEXT_BYTES = 256 << 20


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file of a run directory, at most ``MAX_TEXT_BYTES``."""
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise UserError(
                f"{path}: {size / 2**20:,.0f} MB, more than the {MAX_TEXT_BYTES >> 20} MB a "
                f"run directory's {what} can be; it was not read"
            )
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the run directory is incomplete") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}); the {what} is damaged"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({first_line(exc, 160)})") from None


def read_json(path: Path, expect: type = dict) -> Any:
    """A JSON file whose top level is ``expect`` (dict or list)."""
    text = read_text(path, "JSON file")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "the file is damaged or truncated"
        ) from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply; not a file dlrun wrote") from None
    if not isinstance(value, expect):
        raise UserError(
            f"{path}: expected a JSON {_json_kind(expect)}, found a JSON {_json_kind(type(value))}"
        )
    return value


def _json_kind(tp: type) -> str:
    kinds: dict[type, str] = {dict: "object", list: "list", str: "string"}
    return kinds.get(tp, "value")


def read_yaml(path: Path, expect: type = dict) -> Any:
    """A YAML file as plain data (safe loader; interpolations stay strings)."""
    import yaml

    text = read_text(path, "YAML file")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({first_line(exc, 160)})") from None
    except RecursionError:
        raise UserError(f"{path}: YAML nested too deeply; not a file dlrun wrote") from None
    if not isinstance(value, expect):
        kind = "mapping" if expect is dict else "list"
        raise UserError(f"{path}: expected a YAML {kind}, found {type(value).__name__}")
    return value


def read_torch(path: Path, map_location: Any = "cpu") -> Any:
    """A file written by ``torch.save``, loaded with ``weights_only=True`` (never runs code)."""
    import torch

    if not path.is_file():
        raise UserError(f"{path}: missing; the run directory is incomplete")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, refused globals: the file's fault
        raise UserError(
            f"{path}: not readable ({first_line(exc, 160)}); it is truncated, corrupt or not "
            "written by dlrun, and was not loaded"
        ) from None


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """A dlrun checkpoint: model weights, training state and the run's resolved config."""
    ckpt = read_torch(path, map_location)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{path}: not a dlrun checkpoint (no model and config inside)")
    if not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{path}: not a dlrun checkpoint (no model weights inside)")
    return ckpt


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file; a torn last line (a kill in mid-write) is dropped."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}, line {number}: not valid JSON; the file is damaged") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}, line {number}: expected a JSON object per line")
        records.append(record)
    return records
