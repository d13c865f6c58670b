"""Tasks and models are discovered: dlrun's own modules, and installed packages' entry points.

An installed plugin is imitated without pip: a ``*.dist-info`` folder with its
``entry_points.txt`` and the plugin's source, on ``sys.path`` (in-process) or
``PYTHONPATH`` (console scripts).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from hydra import compose
from omegaconf import OmegaConf

from dlrun.errors import UserError
from dlrun.plan.command import all_groups, plan_command
from dlrun.plan.compose import initialized
from dlrun.plan.config import conf_dir, validate
from dlrun.registry import (
    MODELS,
    TASKS,
    Registry,
    list_models,
    list_tasks,
    model_entry,
    plugin_conf_dirs,
    task_entry,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dlrun-spirals"
SPIRALS = {"dlrun.tasks": {"spirals": "dlrun_spirals.spirals"}}  # as its pyproject.toml says
# A seconds-long spirals run (its points are generated: no data to write).
SPIRALS_TINY = (
    "dataset.train_size=512",
    "dataset.val_size=128",
    "dataset.test_size=128",
    "dataset.batch_size=64",
)
PLUGIN_PACKAGES = ("dlrun_spirals", "dlrun_broken", "dlrun_toy", "fake_builtins")


def fake_install(site: Path, dist: str, entry_points: dict, files: dict | None = None) -> Path:
    """What pip leaves in site-packages, made by hand: ``DIST-0.1.dist-info`` with the
    entry points, and ``files`` (path -> text) beside it; returns ``site``."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = []
    for group, points in entry_points.items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in points.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for path, text in (files or {}).items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)
    return site


@pytest.fixture
def isolated(monkeypatch):
    """Registries, sys.path and sys.modules as they were after a test imports plugins."""
    list_tasks(), list_models()  # the built-ins first: the copies below keep them
    monkeypatch.setattr(TASKS, "_entries", dict(TASKS._entries))
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    yield monkeypatch
    for name in [m for m in sys.modules if m.split(".")[0] in PLUGIN_PACKAGES]:
        del sys.modules[name]


def test_builtins_are_found_without_a_list():
    """Every module of dlrun.tasks and dlrun.models is imported: each YAML's entry exists."""
    list_tasks()
    builtin = sorted(n for n, e in TASKS._entries.items() if e.obj.__module__.startswith("dlrun."))
    assert builtin == sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))
    for path in (conf_dir() / "model").glob("*.yaml"):
        assert model_entry(OmegaConf.load(path).name).obj.__module__.startswith("dlrun.models.")


def test_a_broken_builtin_module_raises(tmp_path, isolated):
    pkg = tmp_path / "fake_builtins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("raise RuntimeError('a bug in dlrun')\n")
    isolated.syspath_prepend(str(tmp_path))
    things = Registry("thing", "fake_builtins", "dlrun.things")
    for _ in range(2):  # and again on the next lookup: no half-filled registry
        with pytest.raises(RuntimeError, match="a bug in dlrun"):
            things.names()


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_plugin_task_composes_validates_and_trains_through_its_entry_point(
    tmp_path, cache_dir, isolated
):
    assert 'spirals = "dlrun_spirals.spirals"' in (EXAMPLE / "pyproject.toml").read_text()
    site = fake_install(tmp_path / "site", "dlrun-spirals", SPIRALS)
    isolated.syspath_prepend(str(EXAMPLE / "src"))
    isolated.syspath_prepend(str(site))
    # Declared by the entry point; its YAML is found without importing the module.
    assert "spirals" in list_tasks() and "spirals" not in TASKS._entries
    assert plugin_conf_dirs() == [EXAMPLE / "src" / "dlrun_spirals" / "conf"]
    assert "dlrun_spirals.spirals" not in sys.modules
    groups = all_groups(conf_dir())
    assert "spirals" in groups["task"] and "spirals" in groups["dataset"]
    overrides = list(SPIRALS_TINY)
    with initialized(conf_dir()):
        cfg = compose("config", overrides=["task=spirals", *overrides])
    assert (cfg.dataset.name, cfg.model.name, cfg.model.depth) == ("spirals", "mlp", 3)
    assert validate(cfg).dataset.train_size == 512

    env = {"PYTHONPATH": f"{site}:{EXAMPLE / 'src'}"}
    result = run_cli(["dlrun", "task=spirals", *TINY, *overrides], tmp_path, cache_dir, env=env)
    assert result.returncode == 0, result.stderr
    stats = run_cli(["dlrun-stats", "task=spirals", *overrides], tmp_path, cache_dir, env=env)
    assert stats.returncode == 0 and "| train | 512 |" in stats.stdout, stats.stderr
    run_dir = tmp_path / re.search(r"run dir: (.+)", result.stdout).group(1)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["task"], summary["model"]) == ("ok", "spirals", "mlp")
    assert 0 <= summary["test"]["test/accuracy"] <= 1
    assert "dlrun_spirals" not in (run_dir / ".hydra" / "config.yaml").read_text()  # names only
    points = ["0.5,0.1", "0.2,-0.5", "0,0"]
    predicted = run_cli(["dlrun-predict", str(run_dir), *points], tmp_path, cache_dir, env=env)
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert len(lines) == 3 and all(
        re.fullmatch(rf"{re.escape(p)}\tarm[012]\t[01]\.\d{{4}}", x) for p, x in zip(points, lines)
    )
    # The plugin uninstalled: its run directory is refused in one line, no code runs.
    gone = run_cli(["dlrun-predict", str(run_dir), *points], tmp_path, cache_dir)
    assert gone.returncode == 2 and "unknown task 'spirals'" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


BROKEN_FILES = {
    "dlrun_broken/__init__.py": "",
    "dlrun_broken/boom.py": "raise RuntimeError('boom at import')\n",
    "dlrun_broken/quiet.py": "ANSWER = 42  # registers nothing\n",
    "dlrun_broken/conf/task/broken.yaml": "# @package _global_\ndefaults:\n"
    "  - override /dataset: broken\n  - override /model: mlp\ntask:\n  name: broken\n"
    "  monitor: val/accuracy\n",
    "dlrun_broken/conf/dataset/broken.yaml": "name: broken\nbatch_size: 8\n",
}
BROKEN = {"dlrun.tasks": {"broken": "dlrun_broken.boom", "quiet": "dlrun_broken.quiet"}}


def test_a_broken_entry_point_is_one_line_naming_its_package(tmp_path, isolated):
    site = fake_install(tmp_path / "site", "dlrun-broken", BROKEN, BROKEN_FILES)
    isolated.syspath_prepend(str(site))
    assert plugin_conf_dirs() == [site / "dlrun_broken" / "conf"]  # found, nothing imported
    assert "dlrun_broken.boom" not in sys.modules
    with pytest.raises(UserError) as failed:
        task_entry("broken")
    message = str(failed.value)
    where = "dlrun.tasks entry point 'broken = dlrun_broken.boom' of dlrun-broken 0.1"
    assert message.startswith(where)
    assert "RuntimeError: boom at import" in message and "uninstall" in message
    with pytest.raises(UserError, match=r"dlrun_broken.quiet did not register task 'quiet'"):
        task_entry("quiet")
    assert task_entry("dates").name == "dates"  # the other tasks are unaffected
    # An entry point without its YAML: the command line says where the YAML belongs.
    with pytest.raises(UserError, match=r"declares task 'quiet' but ships no conf/task/quiet.yaml"):
        plan_command(["task=quiet"], conf_dir())


def test_a_name_two_packages_declare_is_one_line(tmp_path, isolated):
    twice = {"dlrun.tasks": {"twice": "dlrun_broken.quiet"}}
    site = fake_install(tmp_path / "site", "dlrun-one", twice)
    fake_install(site, "dlrun-two", twice, BROKEN_FILES)
    isolated.syspath_prepend(str(site))
    with pytest.raises(UserError, match=r"declared by several installed packages \(dlrun-"):
        task_entry("twice")


def test_dlrun_with_a_broken_plugin_task_is_one_line(tmp_path, cache_dir):
    site = fake_install(tmp_path / "site", "dlrun-broken", BROKEN, BROKEN_FILES)
    result = run_cli(["dlrun", "task=broken"], tmp_path, cache_dir, env={"PYTHONPATH": str(site)})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "dlrun-broken 0.1" in result.stderr and "boom at import" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_plugin_model_is_found_through_its_entry_point(tmp_path, isolated):
    module = (
        "from dataclasses import dataclass\n"
        "from torch import nn\n"
        "from dlrun.registry import MODELS\n\n"
        "from dlrun.plan.config import spec\n\n"
        "@dataclass(frozen=True)\nclass ToyConfig:\n    name: str = spec()\n\n"
        "@MODELS.register('toy_linear', schema=ToyConfig)\n"
        "class ToyLinear(nn.Linear):\n"
        "    kind = 'tabular'\n\n"
        "    def __init__(self, cfg, inputs, outputs):\n"
        "        super().__init__(inputs, outputs)\n"
    )
    files = {
        "dlrun_toy/__init__.py": "",
        "dlrun_toy/model.py": module,
        "dlrun_toy/conf/model/toy_linear.yaml": "# model=toy_linear\nname: toy_linear\n",
    }
    points = {"dlrun.models": {"toy_linear": "dlrun_toy.model"}}
    isolated.syspath_prepend(str(fake_install(tmp_path / "site", "dlrun-toy", points, files)))
    assert "toy_linear" in list_models() and "toy_linear" in all_groups(conf_dir())["model"]
    assert model_entry("toy_linear").kind == "tabular"
    with initialized(conf_dir()):
        cfg = compose("config", overrides=["task=tabular", "model=toy_linear", "dataset.target=y"])
    assert validate(cfg, check_data=False).model.name == "toy_linear"
