"""docs/architecture.md is true to the code: every part, file, module and name it names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dlrun"
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _layout_block() -> str:
    return DOC.split("## The parts", 1)[1].split("```")[1]


def test_the_layout_block_is_what_ls_shows():
    """Each top-level entry of src/dlrun is in the block, and each the block names exists."""
    # An entry starts a line, or follows "; " (two small modules on one line).
    named = set(re.findall(r"(?:^|; )(\w+/|\w+\.py)  ", _layout_block(), re.MULTILINE))
    present = {
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if p.name not in ("__init__.py", "__pycache__", "conf")
    }
    assert named == present


def test_each_file_a_part_lists_is_in_that_part():
    current = None
    for line in _layout_block().splitlines():
        head = re.match(r"^(\w+)/", line)
        if head:
            current = PACKAGE / head.group(1)
        elif not line.startswith(" "):
            current = None
        if current is None:
            continue
        for name in re.findall(r"\b(\w+)\*?\.py\b", line.split("  ", 1)[-1]):
            matches = list(current.glob(f"{name}*.py"))
            assert matches, f"{current.name}/{name}.py is named in the layout but missing"


def test_every_path_and_module_named_exists():
    paths = set(re.findall(r"`((?:src|tests|conf|examples)/[\w./-]+)`", DOC))
    assert paths
    real = [p for p in sorted(paths) if "NAME" not in p]  # NAME: a new task's or model's
    assert [p for p in real if not (ROOT / p).exists()] == []
    parts = r"\b((?:plan|cli|engine|rundir|search|report|testing)(?:\.\w+)+)"
    dotted = {name for name in re.findall(parts, DOC) if not name.endswith(".py")}
    assert len(dotted) > 5
    for name in sorted(dotted):
        module, attrs = f"dlrun.{name}", []
        while True:
            try:
                obj = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, attr = module.rpartition(".")
                attrs.insert(0, attr)
        for attr in attrs:
            assert hasattr(obj, attr), f"{name}: {module} has no {attr}"
            obj = getattr(obj, attr)
