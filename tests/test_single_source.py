"""Each default is written once, in conf/, and every path a config takes keeps it.

The schemas (dlrun.plan.config and each task's and model's dataclass) state types
and limits only; the YAML under conf/ states every value. A config composed by
Hydra, validated, recorded in a run directory, reloaded by ``dlrun-predict``
and by a resume is the same config everywhere.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, fitting_overrides, merged, run_cli, tiny_data
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlrun.cli.predict import load_run
from dlrun.engine.run import run
from dlrun.plan.command import groups
from dlrun.plan.config import SECTIONS, RunConfig, TuneConfig, conf_dir, to_dict, validate
from dlrun.plan.resume import resumed_config
from dlrun.registry import list_models, list_tasks, model_entry, task_entry

FIXTURE = Path(__file__).parent / "fixtures" / "run_0.1.0_dates"


def schemas() -> list[type]:
    return [
        RunConfig,
        TuneConfig,
        *SECTIONS.values(),
        *(task_entry(t).schema for t in list_tasks()),
        *(model_entry(m).schema for m in list_models()),
    ]


@pytest.mark.parametrize("schema", schemas(), ids=lambda s: s.__name__)
def test_schemas_state_types_and_limits_but_no_default(schema):
    assert dataclasses.is_dataclass(schema)
    assert schema.__dataclass_params__.frozen, f"{schema.__name__} is not frozen"
    for f in dataclasses.fields(schema):
        assert f.default is dataclasses.MISSING, f"{schema.__name__}.{f.name} has a default"
        assert f.default_factory is dataclasses.MISSING, f"{schema.__name__}.{f.name}"


def _compose(root: Path, overrides: list[str]):
    with initialize_config_dir(str(root), version_base="1.3"):
        return compose("config", overrides=overrides)


OPTIONS = [(g, c) for g, cs in sorted(groups(conf_dir()).items()) for c in cs]


@pytest.mark.parametrize(("group", "choice"), OPTIONS)
def test_validation_keeps_the_composed_config_as_it_is(tiny_cfg, group, choice):
    """No value comes from Python: the typed config holds exactly what YAML composed."""
    composed = OmegaConf.to_container(tiny_cfg(*fitting_overrides(group, choice)), resolve=True)
    if group == "device":
        composed["device"]["type"] = "cpu"  # the device may be absent here; keys still match
    assert to_dict(validate(composed, check_data=False)) == composed


def _leaves(node, prefix: str = "") -> dict[str, object]:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# The options that give their own section its defaults. Options in the _global_ package
# (task, debug, experiment) set other sections on purpose: they win over whatever
# option of those groups is chosen, so their values are not restatements.
DEFAULTS = [
    (g, c)
    for g, c in OPTIONS
    if "@package _global_" not in (conf_dir() / g / f"{c}.yaml").read_text()
]


@pytest.mark.parametrize(("group", "choice"), DEFAULTS)
def test_no_option_restates_a_value_it_would_have_anyway(tmp_path, group, choice):
    """An option's body that sets a key to the value the config has without that body
    states a default twice. Its defaults list (the options it extends) stays."""
    overrides = fitting_overrides(group, choice)
    with_body = OmegaConf.to_container(_compose(conf_dir(), overrides))
    root = tmp_path / "conf"
    shutil.copytree(conf_dir(), root)
    path = root / group / f"{choice}.yaml"
    text = path.read_text()
    body = yaml.safe_load(text) or {}
    kept = {"defaults": body["defaults"]} if "defaults" in body else {}
    path.write_text("# the option without its body\n" + yaml.safe_dump(kept))
    without = _leaves(OmegaConf.to_container(_compose(root, overrides)))
    stated = {f"{group}.{k}": v for k, v in _leaves(body).items() if k != "defaults"}
    composed = _leaves(with_body)
    restated = [
        k for k, v in stated.items() if k in without and without[k] == v and composed.get(k) == v
    ]
    assert not restated, f"conf/{group}/{choice}.yaml restates {restated}"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, cache_dir) -> dict[str, tuple[dict, Path]]:
    """One tiny trained run per task: (its composed config as a dict, its run directory)."""
    root = tmp_path_factory.mktemp("single_source")
    out = {}
    for task in list_tasks():
        data = list(tiny_data(task))
        overrides = merged(f"task={task}", *TINY, "trainer.max_steps=2", "trainer.eval_every=2")
        cfg = _compose(conf_dir(), [*overrides, *data, f"paths.cache_dir={cache_dir}"])
        run(cfg, root / task)
        out[task] = (OmegaConf.to_container(cfg, resolve=True), root / task)
    return out


@pytest.mark.parametrize(
    "task",  # algebra's data take 11 s to make: the default suite stays under 10 minutes
    [pytest.param(t, marks=pytest.mark.slow) if t == "algebra" else t for t in list_tasks()],
)
def test_run_directory_predict_and_resume_agree_with_the_composed_config(tiny_runs, task):
    composed, run_dir = tiny_runs[task]
    recorded = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert recorded == composed
    loaded, _ = load_run(run_dir)
    assert to_dict(loaded.cfg) == composed
    resumed = resumed_config(recorded, run_dir, composed, keys=[])
    assert to_dict(validate(resumed)) == {**composed, "resume": str(run_dir)}


def test_the_recorded_hydra_config_agrees_too(tmp_path, cache_dir):
    args = merged(*TINY, "trainer.max_steps=2", "trainer.eval_every=2", *tiny_data("dates"))
    args += [f"paths.cache_dir={cache_dir}", "hydra.run.dir=run"]
    done = run_cli(["dlrun", *args], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    recorded = OmegaConf.to_container(
        OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True
    )
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert recorded == saved


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_a_run_directory_of_dlrun_0_1_0_still_predicts_and_resumes(tmp_path, cache_dir):
    run_dir = tmp_path / "old run"
    shutil.copytree(FIXTURE, run_dir)
    done = run_cli(
        ["dlrun-predict", str(run_dir), "3. maj 2001", "1 jan. 1999"], tmp_path, cache_dir
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    done = run_cli(
        ["dlrun", f"resume={run_dir}", "trainer.max_steps=6", f"paths.cache_dir={cache_dir}"],
        tmp_path,
        cache_dir,
    )
    assert done.returncode == 0, done.stderr
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 6
