"""The run config's schema and its validation: every bad key or value at once, before any work.

Every value lives in YAML under conf/; each section's dataclass states types
and limits only (``dlrun.plan.schema``). Tasks and models register their own
schemas for ``dataset`` and ``model``; cross-field checks belong to the task
(``Task.check_config``). ``validate`` returns a frozen ``RunConfig``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlrun.errors import ConfigError, UserError, first_line
from dlrun.plan.schema import check_section, spec, typed
from dlrun.registry import closest, model_entry, task_entry


@functools.cache
def conf_dir() -> Path:
    """dlrun's config tree: inside the wheel as dlrun/conf, top-level in a source checkout."""
    package = Path(__file__).resolve().parents[1]  # src/dlrun, or site-packages/dlrun
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"dlrun's config tree is missing (looked in {package}/conf and ../../conf)")


@dataclass(frozen=True)
class TaskConfig:
    name: str = spec()
    monitor: str = spec()  # metric that picks best.pt and drives early stopping
    mode: str = spec(choices=["max", "min"])
    # task=tabular: classification or regression; other tasks have one kind (null).
    problem: str | None = spec(choices=["classification", "regression"])


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = spec(choices=["adam", "adamw", "sgd"])
    lr: float = spec(gt=0)
    weight_decay: float = spec(ge=0)
    betas: list[float] = spec()
    momentum: float = spec(ge=0, lt=1)
    nesterov: bool = spec()
    fused: bool | None = spec()  # fused Adam/AdamW kernels; null: where supported (CUDA)


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = spec(choices=["none", "cosine"])
    warmup_steps: int = spec(ge=0)
    min_lr_ratio: float = spec(ge=0, le=1)


@dataclass(frozen=True)
class DeviceConfig:
    type: str = spec(choices=["auto", "cpu", "cuda", "mps"])
    amp: str = spec(choices=["auto", "none", "bf16", "fp16"])
    compile: bool = spec()
    threads: int | None = spec(ge=1)
    tf32: bool = spec()
    data: str = spec(choices=["auto", "memory", "stream"])  # where the splits live


@dataclass(frozen=True)
class TrainerConfig:
    max_steps: int | None = spec(ge=1)
    max_epochs: int | None = spec(ge=1)
    max_time: float | None = spec(gt=0)
    seed: int = spec(ge=0)
    eval_every: int | None = spec(ge=1)
    eval_batch_size: int = spec(ge=1)
    log_every: int = spec(ge=1)
    grad_clip: float | None = spec(gt=0)
    accumulate: int = spec(ge=1)
    patience: int | None = spec(ge=1)
    keep: str = spec(choices=["auto", "best", "last"])  # the weights tested and saved as best.pt
    stop_at: float | None = spec()
    num_samples: int = spec(ge=0)
    train_eval_size: int = spec(ge=0)
    also_eval: list[str] = spec()
    shuffle: bool = spec()
    group_by_length: bool = spec()  # batch rows of like length (tasks with row_lengths)
    eval_at_start: bool = spec()
    # Minutes between saves of checkpoints/last.pt besides evaluations; null: 10 in a SLURM job.
    checkpoint_every: float | None = spec(gt=0)
    folds: int | None = spec(ge=2)  # cross-validation: train this many folds
    ema: float | None = spec(ge=0, lt=1)  # decay of the weights' moving average; null/0: none


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = spec(ge=1)


@dataclass(frozen=True)
class PathsConfig:
    output_dir: str = spec()
    data_dir: str = spec()
    cache_dir: str = spec()


@dataclass(frozen=True)
class TensorBoardLogger:
    """logger=tensorboard: event files in RUN_DIR/tensorboard/ (no settings)."""


@dataclass(frozen=True)
class MlflowLogger:
    tracking_uri: str | None = spec()
    experiment: str = spec()
    log_checkpoints: bool = spec()


@dataclass(frozen=True)
class WandbLogger:
    project: str = spec()
    entity: str | None = spec()
    mode: str = spec(choices=["auto", "online", "offline", "disabled"])
    log_checkpoints: bool = spec()


@dataclass(frozen=True)
class LoggerConfig:
    # Metrics always go to metrics.jsonl; each chosen tracker (an extra) is a section:
    # logger=[tensorboard,mlflow] sets tensorboard: {} and mlflow: {...}; the others stay null.
    tensorboard: TensorBoardLogger | None = spec()
    mlflow: MlflowLogger | None = spec()
    wandb: WandbLogger | None = spec()


LOGGERS = tuple(f.name for f in dataclasses.fields(LoggerConfig))  # each a section


@dataclass(frozen=True)
class DebugConfig:
    name: str = spec(choices=["none", "fast", "overfit", "profile", "anomaly", "lr_find"])
    eval_batches: int | None = spec(ge=1)
    train_batches: int | None = spec(ge=1)
    overfit_loss: float = spec(gt=0)
    profile_steps: int = spec(ge=0)
    anomaly: bool = spec()
    lr_find_steps: int = spec(ge=0)  # debug=lr_find: steps of the range test (0: none)
    lr_find_min: float = spec(gt=0)  # its first learning rate
    lr_find_max: float = spec(gt=0)  # its last (it stops sooner when the loss diverges)


@dataclass(frozen=True)
class TuneConfig:
    """Set by the optuna sweeper (``hydra/sweeper=optuna``): the study a trial reports to."""

    storage: str = spec()
    study: str = spec()
    trial: int = spec(ge=0)
    pruner: str = spec()
    pruner_options: dict | None = spec()


@dataclass(frozen=True)
class RunConfig:
    """A whole validated run config; ``dataset`` and ``model`` have their task's and
    model's schemas."""

    task: TaskConfig = spec()
    dataset: Any = spec()
    model: Any = spec()
    optimizer: OptimizerConfig = spec()
    scheduler: SchedulerConfig = spec()
    device: DeviceConfig = spec()
    trainer: TrainerConfig = spec()
    paths: PathsConfig = spec()
    decode: DecodeConfig = spec()
    logger: LoggerConfig = spec()
    debug: DebugConfig = spec()
    resume: str | None = spec()
    init_from: str | None = spec()  # a run whose weights a new run starts from
    tune: TuneConfig | None = spec()


def to_dict(cfg: Any) -> dict:
    """A plain, resolved dict of a config (what checkpoints and summaries store)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out = dataclasses.asdict(cfg)
        if isinstance(cfg, RunConfig) and cfg.tune is None:
            del out["tune"]  # a search's trials alone have the section, as in their YAML
        return out
    return cfg


# Sections whose schema is the same for every run; dataset and model depend on the
# task and model chosen, tune exists in a search's trials only.
SECTIONS = {
    "task": TaskConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "device": DeviceConfig,
    "trainer": TrainerConfig,
    "paths": PathsConfig,
    "decode": DecodeConfig,
    "logger": LoggerConfig,
    "debug": DebugConfig,
}


def validate(cfg: Any, check_data: bool = True) -> RunConfig:
    """Check the whole config; raise one ConfigError listing every problem.

    Cross-field checks run for every section whose own keys are valid, so one
    call reports as much as can be known. ``check_data=False`` skips the
    task's checks that its data exist (prediction needs none). Returns the
    typed, frozen config.
    """
    try:
        data = to_dict(cfg)
    except Exception as exc:  # interpolation errors, missing env vars
        raise ConfigError([f"cannot resolve config: {first_line(exc)}"]) from None
    data = migrate(data)
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    problems: list[str] = []
    for key in data:
        if key not in fields:
            guess = closest(key, fields)
            problems.append(
                f"{key}: unknown key" + (f" (did you mean '{guess}'?)" if guess else "")
            )
    sections = _Sections(data, problems)
    for name, schema in SECTIONS.items():
        sections.check(name, schema)
    for key in ("resume", "init_from"):
        if data.get(key) is not None and not isinstance(data[key], str):
            problems.append(f"{key}={data[key]!r}: expected a run directory path")
    if data.get("tune") is not None:
        sections.check("tune", TuneConfig)
    task_cls, model = _check_task_and_model(data, sections, problems)

    # Cross-field checks see the sections that are valid on their own (None: not valid,
    # which RunConfig's types do not allow: _check_run and the tasks' checks test for it).
    view = RunConfig(
        **{  # type: ignore[arg-type]
            name: sections.valid.get(name)
            for name in fields
            if name not in ("resume", "init_from", "tune")
        },
        resume=data.get("resume"),
        init_from=data.get("init_from"),
        tune=sections.valid.get("tune"),
    )
    problems += _check_run(view)
    if task_cls and model and view.task and view.dataset and view.model:
        problems += task_cls.obj.check_config(view)
        problems += getattr(model.obj, "check_config", lambda _: [])(view)
        if check_data:
            problems += task_cls.obj.check_data(view)
    if check_data and view.logger:
        problems += _missing_loggers(view.logger)
    if problems:
        raise ConfigError(problems)
    return view


class _Sections:
    """The sections of ``data`` checked so far against their schemas: the valid ones
    typed (``valid``), the others' problems added to ``problems``."""

    def __init__(self, data: dict, problems: list[str]):
        self.data, self.problems = data, problems
        self.valid: dict[str, Any] = {}

    def check(self, name: str, schema: type | None) -> None:
        found = [f"{name}: missing section"] if name not in self.data else []
        if schema is not None and not found:
            found = check_section(name, self.data[name], schema)
        if schema is not None and not found:
            self.valid[name] = typed(schema, self.data[name])
        self.problems.extend(found)


def _check_task_and_model(data: dict, sections: _Sections, problems: list[str]):
    """The registry entries of the task and model the config names, their sections checked
    against their schemas, and whether the model fits the task."""
    task_cls = _lookup(task_entry, "task", data, problems)
    dataset = data.get("dataset")
    named = dataset.get("name") if isinstance(dataset, dict) else None
    if task_cls and named not in (None, task_cls.name):
        # Each task reads its own dataset group; picking one selects the other.
        problems.append(
            f"dataset={named} is the data of task={named}, not of task={task_cls.name}; "
            f"choose it with task={named}"
        )
    else:
        sections.check("dataset", task_cls.schema if task_cls else None)
    model = _lookup(model_entry, "model", data, problems)
    if model:
        sections.check("model", model.schema)
    if task_cls and model and model.kind != task_cls.obj.model_kind:
        from dlrun.registry import MODELS

        kind = task_cls.obj.model_kind
        fitting = [n for n in MODELS.names() if MODELS.entry(n).kind == kind]
        problems.append(
            f"model.name={model.name}: a {model.kind} model does not fit task "
            f"'{task_cls.name}'; models for it: {', '.join(fitting)}"
        )
        sections.valid.pop("model", None)
    return task_cls, model


def _missing_loggers(logger: LoggerConfig) -> list[str]:
    """A chosen tracker whose package is not installed."""
    return [
        f"logger={name}: the {name} package is not installed; "
        f"pip install 'dlrun[{name}]' (or choose logger=none)"
        for name in LOGGERS
        if getattr(logger, name) is not None and importlib.util.find_spec(name) is None
    ]


def migrate(data: dict) -> dict:
    """A config recorded by an earlier dlrun, in today's shape (tested on a 0.1.0 run).

    0.1.0 named one logger, ``logger: {name: none|tensorboard}``; each tracker is
    now a section of its own, null when not chosen. Its Transformers counted source
    positions from the start (``model.src_positions`` came later). Runs before
    cross-validation have no ``trainer.folds`` (nor ``trainer.checkpoint_every``),
    runs before ``trainer.keep`` tested their best checkpoint (``best``), and runs
    before ``trainer.ema`` averaged no weights (null); none grouped batches by length.
    KMNIST held out ``dataset.val_size`` images (now ``val_fraction`` of its 60,000),
    and imdb ``dataset.val_size`` reviews (now ``dataset.val_fraction`` of 25,000).
    Every run kept its data on the device (``device.data`` came later: ``auto`` chooses
    that where it fits). Runs before ``debug=lr_find`` ran no range test.
    """
    device = data.get("device")
    if isinstance(device, dict) and "data" not in device:
        data = {**data, "device": {**device, "data": "auto"}}
    model = data.get("model")
    if isinstance(model, dict) and model.get("name") == "transformer_seq2seq":
        data = {**data, "model": {"src_positions": "start", **model}}
    trainer = data.get("trainer")
    if isinstance(trainer, dict):  # before folds, time-cadence checkpoints, keep, ema, grouping
        old = {
            "folds": None,
            "checkpoint_every": None,
            "keep": "best",
            "ema": None,
            "group_by_length": False,
        }
        data = {**data, "trainer": {**old, **trainer}}
    debug = data.get("debug")
    if isinstance(debug, dict) and "lr_find_steps" not in debug:  # before debug=lr_find
        off = {"lr_find_steps": 0, "lr_find_min": 1e-7, "lr_find_max": 10.0}
        data = {**data, "debug": {**debug, **off}}
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and dataset.get("name") == "kmnist" and "val_size" in dataset:
        # KMNIST held out a count of its 60,000 training images; now a fraction of them.
        held = dataset["val_size"]
        dataset = {k: v for k, v in dataset.items() if k != "val_size"}
        fraction = held / 60_000 if isinstance(held, int) and 0 < held < 60_000 else held
        data = {**data, "dataset": {**dataset, "val_fraction": fraction}}
    dataset = data.get("dataset")
    if (
        isinstance(dataset, dict)
        and dataset.get("name") == "imdb"
        and isinstance(dataset.get("val_size"), int)
    ):
        # imdb held out val_size reviews of the official 25,000 (now a fraction) and read
        # bags only (max_tokens came with model=text_cnn).
        rest = {k: v for k, v in dataset.items() if k != "val_size"}
        fraction = min(max(dataset["val_size"] / 25_000, 1e-6), 0.999)
        data = {**data, "dataset": {"val_fraction": fraction, "max_tokens": 400, **rest}}
    node = data.get("logger")
    if isinstance(node, dict) and set(node) == {"name"} and node["name"] in ("none", "tensorboard"):
        chosen: dict[str, dict] = {"tensorboard": {}} if node["name"] == "tensorboard" else {}
        data = {**data, "logger": {k: chosen.get(k) for k in LOGGERS}}
    return data


def _check_run(cfg: RunConfig) -> list[str]:
    """Checks across the sections every run has."""
    problems = []
    t = cfg.trainer
    if t and t.max_steps is None and t.max_epochs is None and t.max_time is None:
        problems.append(
            "trainer: set at least one of trainer.max_steps, trainer.max_epochs, trainer.max_time"
        )
    if t and cfg.scheduler and cfg.scheduler.name != "none":
        if t.max_steps is None and t.max_epochs is None:
            problems.append(
                f"scheduler={cfg.scheduler.name}: needs trainer.max_steps or "
                "trainer.max_epochs to know where training ends"
            )
    d = cfg.debug
    if d and d.lr_find_steps:
        if d.lr_find_steps < 10:
            problems.append(f"debug.lr_find_steps={d.lr_find_steps}: must be 0 (none) or >= 10")
        if d.lr_find_min >= d.lr_find_max:
            problems.append(
                f"debug.lr_find_min={d.lr_find_min} must be below debug.lr_find_max={d.lr_find_max}"
            )
        if t and t.folds:
            problems.append("debug=lr_find tests one model: leave out trainer.folds")
    # A model whose config has sparse_grad=true (bow_mlp) emits sparse gradient rows.
    if cfg.model and cfg.optimizer and t and getattr(cfg.model, "sparse_grad", False):
        o = cfg.optimizer
        if o.name != "sgd" or o.momentum or o.weight_decay or t.grad_clip:
            # Sparse gradient rows are what plain SGD alone can apply as they are.
            problems.append(
                "model.sparse_grad=true works with plain SGD only (optimizer=sgd, no "
                "momentum, no weight_decay, trainer.grad_clip=null); add "
                f"model.sparse_grad=false for optimizer={o.name} (momentum={o.momentum}, "
                f"weight_decay={o.weight_decay}, grad_clip={t.grad_clip})"
            )
    return problems


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
