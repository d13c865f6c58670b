"""Config schema and validation: every bad key or value is reported at once, before any work.

Each group's keys are described by a dataclass. Range limits live in field
metadata (``gt``, ``ge``, ``le``, ``choices``). Tasks and models register their
own dataclasses for ``dataset`` and ``model``; cross-field checks belong to the
task (``Task.check_config``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlrun.errors import ConfigError, UserError
from dlrun.registry import closest, model_entry, task_entry


def spec(default: Any = None, **limits: Any) -> Any:
    """A dataclass field with a default and range limits for validation."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=limits)
    return field(default=default, metadata=limits)


@dataclass
class TaskConfig:
    name: str = spec("dates")
    monitor: str = spec("val/exact_match")  # metric that picks best.pt and drives early stopping
    mode: str = spec("max", choices=["max", "min"])
    # task=tabular: classification (default) or regression; other tasks have one kind.
    problem: str | None = spec(None, choices=["classification", "regression"])


@dataclass
class OptimizerConfig:
    name: str = spec("adam", choices=["adam", "adamw", "sgd"])
    lr: float = spec(1e-3, gt=0)
    weight_decay: float = spec(0.0, ge=0)
    betas: list[float] = spec([0.9, 0.999])
    momentum: float = spec(0.0, ge=0, lt=1)
    nesterov: bool = spec(False)
    # Fused Adam/AdamW kernels where the device supports them (CUDA); null = automatic.
    fused: bool | None = spec(None)


@dataclass
class SchedulerConfig:
    name: str = spec("none", choices=["none", "cosine"])
    warmup_steps: int = spec(0, ge=0)
    min_lr_ratio: float = spec(0.0, ge=0, le=1)


@dataclass
class DeviceConfig:
    type: str = spec("auto", choices=["auto", "cpu", "cuda", "mps"])
    # auto: bf16 autocast on CUDA and for a Transformer on a CPU with AMX (amp_for_model),
    # off elsewhere. fp16 adds a GradScaler.
    amp: str = spec("auto", choices=["auto", "none", "bf16", "fp16"])
    compile: bool = spec(False)
    threads: int | None = spec(None, ge=1)  # torch intra-op threads; null keeps torch's default
    tf32: bool = spec(True)


@dataclass
class TrainerConfig:
    max_steps: int | None = spec(None, ge=1)
    max_epochs: int | None = spec(None, ge=1)
    max_time: float | None = spec(None, gt=0)  # seconds of training, evaluation included
    seed: int = spec(0, ge=0)
    eval_every: int | None = spec(None, ge=1)  # optimizer steps; null = once per epoch
    eval_batch_size: int = spec(1024, ge=1)
    log_every: int = spec(50, ge=1)
    grad_clip: float | None = spec(None, gt=0)
    accumulate: int = spec(1, ge=1)
    patience: int | None = spec(None, ge=1)  # evaluations without improvement before stopping
    stop_at: float | None = spec(None)  # stop once the monitored metric reaches this value
    num_samples: int = spec(50, ge=0)  # lines in samples.txt
    # Training examples evaluated beside validation at each evaluation (0 = none).
    train_eval_size: int = spec(0, ge=0)
    # More splits evaluated at each evaluation, e.g. [test] for time-to-target
    # benchmarks; only the monitored split ever selects the best checkpoint.
    also_eval: list[str] = spec([])
    shuffle: bool = spec(True)  # false: every epoch visits the training data in stored order
    eval_at_start: bool = spec(False)  # also evaluate the untrained model (logged at step 0)


@dataclass
class DecodeConfig:
    beam_size: int = spec(1, ge=1)  # 1 = greedy; used for evaluation and prediction


@dataclass
class PathsConfig:
    output_dir: str = spec("outputs")
    data_dir: str = spec("data")
    cache_dir: str = spec("~/.cache/dlrun")


@dataclass
class LoggerConfig:
    # Metrics always go to metrics.jsonl; tensorboard also writes event files (an extra).
    name: str = spec("none", choices=["none", "tensorboard"])


@dataclass
class DebugConfig:
    """conf/debug/: whole-pipeline checks. The defaults change nothing."""

    name: str = spec("none", choices=["none", "fast", "overfit", "profile", "anomaly"])
    # Each evaluated split (test, samples and reports included) keeps its first N batches.
    eval_batches: int | None = spec(None, ge=1)
    # Training keeps its first N batches, visited again and again (debug=overfit).
    train_batches: int | None = spec(None, ge=1)
    overfit_loss: float = spec(0.1, gt=0)  # debug=overfit: "near zero" is below this
    profile_steps: int = spec(0, ge=0)  # training steps traced by torch.profiler
    anomaly: bool = spec(False)  # torch.autograd anomaly detection for the whole run


@dataclass
class RootConfig:
    task: TaskConfig = spec(None)
    dataset: Any = spec(None)
    model: Any = spec(None)
    optimizer: OptimizerConfig = spec(None)
    scheduler: SchedulerConfig = spec(None)
    device: DeviceConfig = spec(None)
    trainer: TrainerConfig = spec(None)
    paths: PathsConfig = spec(None)
    decode: DecodeConfig = spec(None)
    logger: LoggerConfig = spec(None)
    debug: DebugConfig = spec(None)
    resume: str | None = spec(None)
    tune: Any = spec(None)  # set by the optuna sweeper: the study and trial of a search


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_type_name(item)}"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _limits_problem(value: Any, meta: dict) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if "choices" in meta and value not in meta["choices"]:
        msg = f"must be one of {', '.join(map(str, meta['choices']))}"
        guess = closest(str(value), [str(c) for c in meta["choices"]])
        return msg + (f" (did you mean '{guess}'?)" if guess else "")
    checks = [
        ("gt", lambda v, b: v > b, ">"),
        ("ge", lambda v, b: v >= b, ">="),
        ("lt", lambda v, b: v < b, "<"),
        ("le", lambda v, b: v <= b, "<="),
    ]
    for key, ok, sym in checks:
        if key in meta and not ok(value, meta[key]):
            return f"must be {sym} {meta[key]}"
    return None


def check_section(prefix: str, node: Any, schema: type) -> list[str]:
    """Problems with one config section: unknown keys, wrong types, values out of range."""
    if not isinstance(node, dict):
        return [f"{prefix}: expected a mapping of keys, got {node!r}"]
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    problems = []
    for key in node:
        if key not in fields:
            guess = closest(str(key), list(fields))
            hint = f"did you mean '{prefix}.{guess}'?" if guess else ""
            problems.append(
                f"{prefix}.{key}: unknown key ({hint or 'valid keys: ' + ', '.join(fields)})"
            )
    for name, f in fields.items():
        if name not in node:
            continue
        value, tp = node[name], hints[name]
        if dataclasses.is_dataclass(tp):
            problems += check_section(f"{prefix}.{name}", value, tp)
            continue
        if not _matches(value, tp):
            problems.append(f"{prefix}.{name}={value!r}: expected {_type_name(tp)}")
            continue
        items = value if isinstance(value, list) and typing.get_origin(tp) is list else [value]
        for item in items:
            problem = _limits_problem(item, dict(f.metadata))
            if problem:
                problems.append(f"{prefix}.{name}={value!r}: {problem}")
                break
    return problems


def to_dict(cfg: DictConfig | dict) -> dict:
    """A plain, resolved dict of the config (what checkpoints and summaries store)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return cfg


def fill_defaults(node: dict, schema: type) -> None:
    """Add the schema's default for every key ``node`` lacks.

    A run directory written before a key existed then still loads (predict, resume).
    """
    for f in dataclasses.fields(schema):
        if f.name not in node:
            if f.default is not dataclasses.MISSING:
                node[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                node[f.name] = f.default_factory()


def validate(cfg: DictConfig | dict, check_data: bool = True) -> dict:
    """Check the whole config; raise one ConfigError listing every problem.

    Cross-field checks run for every section whose own keys are valid, so one
    call reports as much as can be known. ``check_data=False`` skips the
    task's checks that its data exist (prediction needs none). Returns the
    resolved config as a dict, missing keys filled with their defaults.
    """
    try:
        data = to_dict(cfg)
    except Exception as exc:  # interpolation errors, missing env vars
        raise ConfigError([f"cannot resolve config: {exc}".splitlines()[0]]) from None
    hints = typing.get_type_hints(RootConfig)
    problems: list[str] = []
    for key in data:
        if key not in hints:
            guess = closest(key, sorted(hints))
            problems.append(
                f"{key}: unknown key" + (f" (did you mean '{guess}'?)" if guess else "")
            )
    ok: dict[str, bool] = {}
    data.setdefault("logger", {"name": "none"})  # run directories from before the logger group
    if data.get("debug") is None:  # no debug mode chosen
        data["debug"] = {}

    def check(name: str, schema: type | None) -> None:
        found = [f"{name}: missing section"] if name not in data else []
        if schema is not None and not found:
            found = check_section(name, data[name], schema)
        ok[name] = schema is not None and not found
        if ok[name]:
            fill_defaults(data[name], schema)
        problems.extend(found)

    for name in (
        "task",
        "optimizer",
        "scheduler",
        "device",
        "trainer",
        "paths",
        "decode",
        "logger",
        "debug",
    ):
        check(name, hints[name])
    if data.get("resume") is not None and not isinstance(data["resume"], str):
        problems.append(f"resume={data['resume']!r}: expected a run directory path")

    task_cls = _lookup(task_entry, "task", data, problems)
    dataset = data.get("dataset")
    named = dataset.get("name") if isinstance(dataset, dict) else None
    if task_cls and named not in (None, task_cls.name):
        # Each task reads its own dataset group; picking one selects the other.
        problems.append(
            f"dataset={named} is the data of task={named}, not of task={task_cls.name}; "
            f"choose it with task={named}"
        )
        ok["dataset"] = False
    else:
        check("dataset", task_cls.schema if task_cls else None)
    model = _lookup(model_entry, "model", data, problems)
    check("model", model.schema if model else None)
    if task_cls and model and model.kind != task_cls.obj.model_kind:
        from dlrun.registry import MODELS

        kind = task_cls.obj.model_kind
        fitting = [n for n in MODELS.names() if MODELS.entry(n).kind == kind]
        problems.append(
            f"model.name={model.name}: a {model.kind} model does not fit task "
            f"'{task_cls.name}'; models for it: {', '.join(fitting)}"
        )
        ok["model"] = False

    if ok["trainer"]:
        t = data["trainer"]
        if all(t[k] is None for k in ("max_steps", "max_epochs", "max_time")):
            problems.append(
                "trainer: set at least one of trainer.max_steps, trainer.max_epochs, "
                "trainer.max_time"
            )
        if ok["scheduler"] and data["scheduler"]["name"] != "none":
            if t["max_steps"] is None and t["max_epochs"] is None:
                problems.append(
                    f"scheduler={data['scheduler']['name']}: needs trainer.max_steps or "
                    "trainer.max_epochs to know where training ends"
                )
    if task_cls and all(ok[k] for k in ("task", "dataset", "model")):
        problems += task_cls.obj.check_config(data)
        problems += getattr(model.obj, "check_config", lambda _: [])(data)
        if check_data:
            problems += task_cls.obj.check_data(data)
    if check_data and ok["logger"] and data["logger"]["name"] == "tensorboard":
        if importlib.util.find_spec("tensorboard") is None:
            problems.append(
                "logger=tensorboard: the tensorboard package is not installed; "
                "pip install 'dlrun[tensorboard]' (or choose logger=none)"
            )
    if problems:
        raise ConfigError(problems)
    return data


def _lookup(find, group: str, data: dict, problems: list[str]):
    """The registry entry named by ``data[group]['name']``, or None with a problem noted."""
    node = data.get(group)
    name = node.get("name") if isinstance(node, dict) else None
    if name is None:
        problems.append(f"{group}.name: missing; choose one with {group}=NAME")
        return None
    try:
        return find(str(name))
    except UserError as exc:
        problems.append(f"{group}.name: {exc}")
        return None
