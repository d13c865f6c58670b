"""Hyperparameter search on Optuna: the search space, the study, and a trial's pruning hook.

The ``optuna`` Hydra sweeper (``hydra_plugins.dlrun_optuna``) drives a search:
it reads Hydra's sweep syntax (``choice``, ``range``, ``interval``, ``tag(log,
...)``) into Optuna distributions, asks the study for trials and launches each
as an ordinary dlrun job. The study lives in the sweep directory
(``optuna.journal``, Optuna's journal file: several processes can share it and
a search started again on the same directory continues). A trial learns which
study and trial it is through its config's ``tune`` section, which the sweeper
sets; its trainer reports the monitored metric at every evaluation and stops
once the study's pruner says so.

What a search leaves for people (``best.yaml``, the study's plots) is written
by ``dlrun.search.results``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from dlrun.errors import UserError
from dlrun.rundir.layout import SweepDir

STUDY = "dlrun"
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")
INSTALL = "pip install 'dlrun[tune]'"


def require_optuna():
    """Optuna, or one line saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UserError(
            f"hydra/sweeper=optuna needs Optuna, which is not installed; install it with: {INSTALL}"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- the search space ----------------------------------------------------------------------


@dataclass
class Param:
    """One searched key: Hydra's sweep text and what Optuna draws from."""

    key: str
    text: str  # as written: optimizer.lr=tag(log, interval(1e-4, 1e-1))
    kind: str  # categorical, int, float
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def bounds(self) -> tuple[float, float]:
        """A range's two ends (``low``, ``high``; a categorical parameter has none)."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.text}: a {self.kind} parameter has no range")
        return self.low, self.high

    def distribution(self):
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        low, high = self.bounds()
        if self.kind == "int":
            return IntDistribution(int(low), int(high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(low, high, log=self.log, step=self.step)

    def extremes(self) -> list:
        """The values to check before any trial: every choice, both ends of a range."""
        if self.kind == "categorical":
            return list(self.choices)
        as_type = int if self.kind == "int" else float
        return [as_type(end) for end in self.bounds()]

    def grid(self) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise UserError(
                f"{self.text}: the grid sampler needs a finite set of values; use choice(...) "
                "or range(...), or another sampler (hydra.sweeper.sampler=tpe)"
            )
        low, high = self.bounds()
        n = int(round((high - low) / self.step))
        as_type = int if self.kind == "int" else float
        return [as_type(low + i * self.step) for i in range(n + 1)]


def parse_param(override) -> Param:
    """A Hydra sweep override (already parsed by Hydra's parser) as a ``Param``."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    key, value = override.get_key_element(), override.value()
    text = override.input_line or f"{key}={override.get_value_element_as_str()}"
    tags = set(value.tags or ())
    log = "log" in tags
    if isinstance(value, ChoiceSweep):
        choices = tuple(value.list)
        if not choices:
            raise UserError(f"{text}: choice() needs at least one value")
        bad = [c for c in choices if not isinstance(c, (str, int, float, bool))]
        if bad:
            raise UserError(f"{text}: choices must be numbers, booleans or names, not {bad[0]!r}")
        return Param(key, text, "categorical", choices=choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())  # as Hydra's basic sweeper runs it
        if not values:
            raise UserError(f"{text}: the range is empty (start must be below stop for step > 0)")
        if not all(isinstance(v, int) for v in values):
            # 0.1, 0.2, 0.30000000000000004...: the values as people wrote them.
            choices = tuple(float(f"{v:.12g}") for v in values)
            return Param(key, text, "categorical", choices=choices)
        if log:
            raise UserError(f"{text}: a log range takes no step; use tag(log, interval(a, b))")
        values.sort()
        step = abs(value.step)
        return Param(key, text, "int", values[0], values[-1], step)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise UserError(f"{text}: the interval is empty; write interval(LOW, HIGH), LOW < HIGH")
        if log and low <= 0:
            raise UserError(f"{text}: a log interval needs LOW > 0")
        if "int" in tags:
            if low != int(low) or high != int(high):
                raise UserError(f"{text}: tag(int, ...) needs whole-number ends")
            return Param(key, text, "int", int(low), int(high), None, log)
        return Param(key, text, "float", float(low), float(high), None, log)
    raise UserError(f"{text}: not a search range; use choice, range or interval")


def split_overrides(overrides: list) -> tuple[list[str], dict[str, Param]]:
    """Fixed overrides (text) and the searched keys, in command-line order.

    A key given twice keeps its last form, so the command line wins over a
    preset's ``hydra.sweeper.params``.
    """
    fixed: dict[str, str] = {}
    space: dict[str, Param] = {}
    for o in overrides:
        key = o.get_key_element()
        fixed.pop(key, None)
        space.pop(key, None)
        if o.is_sweep_override():
            space[key] = parse_param(o)
        else:
            fixed[key] = f"{key}={o.get_value_element_as_str()}"
    return list(fixed.values()), space


def override_text(key: str, value: Any) -> str:
    """``key=value`` as Hydra parses it back to the same value."""
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    if isinstance(value, str) and any(c in value for c in " ,()[]{}'\"=:"):
        escaped = value.replace("'", "\\'")
        return f"{key}='{escaped}'"
    return f"{key}={value}"


def check_settings(space: dict[str, Param], sweeper: Any) -> None:
    """The search's own settings (``hydra.sweeper.*``) and its space, one line per mistake.

    Checked once before Hydra starts (``dlrun.plan``) and again by the sweeper, which
    also runs where a launcher started it with another command line.
    """
    sampler = sweeper.sampler
    if sampler not in SAMPLERS:
        raise UserError(
            f"hydra.sweeper.sampler={sampler}: unknown sampler; valid: {', '.join(SAMPLERS)}"
        )
    if not space:
        raise UserError(
            "hydra/sweeper=optuna: nothing to search; give ranges such as "
            "'optimizer.lr=tag(log, interval(1e-4, 1e-1))' or 'dataset.batch_size=choice(32,64)'"
        )
    if sweeper.sampler == "grid":
        for p in space.values():
            p.grid()
    if sweeper.n_trials < 1 or sweeper.n_jobs < 1:
        raise UserError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be >= 1")
    make_pruner(sweeper.pruner, pruner_options(sweeper))


def pruner_options(sweeper: Any) -> dict[str, Any]:
    return {k: sweeper[k] for k in ("n_startup_trials", "n_warmup_steps")}


def check_space(
    space: dict[str, Param], compose: Callable[[list[str]], Any], fixed: list[str]
) -> None:
    """Refuse a search that some of its own values would make invalid, before any trial.

    Every choice and both ends of every range are composed and validated, each
    with the other keys at their first value: a misspelt key or a value
    validation refuses ends the command in one line.
    """
    from dlrun.plan.config import validate

    first = {k: override_text(k, p.extremes()[0]) for k, p in space.items()}
    for key, param in space.items():
        for value in param.extremes():
            trial = {**first, key: override_text(key, value)}
            try:
                validate(compose([*fixed, *trial.values()]))
            except UserError as exc:
                raise UserError(f"search {param.text}: at {key}={value}: {exc}") from None


def grid_size(space: dict[str, Param]) -> int:
    return math.prod(len(p.grid()) for p in space.values())


def enqueue_grid(study, space: dict[str, Param], seed: int | None) -> None:
    """Queue every grid point the study has not seen yet, in a seeded random order."""
    import itertools
    import random

    seen = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)}
    points = [
        dict(zip(space, values))
        for values in itertools.product(*(p.grid() for p in space.values()))
    ]
    random.Random(seed).shuffle(points)
    for point in points:
        if tuple(sorted(point.items())) not in seen:
            study.enqueue_trial(point)


# -- the study ------------------------------------------------------------------------------


# A sweeper beats each trial it runs every HEARTBEAT_S seconds (the trial's user attribute
# ``heartbeat``); a running trial not beaten for STALE_AFTER_S belongs to a dead worker.
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


def is_url(location: str) -> bool:
    """A database URL (``postgresql://…``, ``sqlite:///…``), not a journal file's path."""
    return "://" in str(location)


def storage(location: Path | str):
    """The study's storage: a database URL (Optuna's RDB storage through SQLAlchemy) or
    the path of a journal file. A database that cannot be reached is one line."""
    optuna = require_optuna()
    if not is_url(str(location)):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(location)))
    from dlrun.errors import first_line

    try:
        return optuna.storages.RDBStorage(str(location), engine_kwargs={"pool_pre_ping": True})
    except ImportError as exc:
        raise UserError(
            f"hydra.sweeper.storage={_masked(location)}: its database driver is not installed "
            f"({first_line(exc, 100)}); for PostgreSQL: pip install 'psycopg[binary]'"
        ) from None
    except Exception as exc:  # SQLAlchemy's OperationalError, ArgumentError…
        raise UserError(
            f"hydra.sweeper.storage={_masked(location)}: cannot open the study's database "
            f"({first_line(exc, 160)}); check the URL, the server and the credentials"
        ) from None


def _masked(url: Path | str) -> str:
    """The URL with any password replaced by ***, fit for a message."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(url))


def stale_trials(study, now: float) -> list:
    """Running trials whose worker stopped beating (``heartbeat``; a trial never beaten
    counts from its start) more than STALE_AFTER_S ago."""
    from optuna.trial import TrialState

    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat")
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        if beat is None or now - beat > STALE_AFTER_S:
            stale.append(t)
    return stale


def make_sampler(name: str, seed: int | None, space: dict[str, Param]):
    optuna = require_optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UserError(
                f"hydra.sweeper.sampler=cmaes needs the cmaes package; install it with: {INSTALL}"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        # The sweeper enqueues every grid point itself (Optuna's GridSampler stops the study
        # from inside tell(), which only works under study.optimize).
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"hydra.sweeper.sampler={name}: unknown sampler; valid: {', '.join(SAMPLERS)}")


def make_pruner(name: str, options: dict | None = None):
    """``options``: ``n_startup_trials`` and ``n_warmup_steps`` (the sweeper's keys; one
    left out has the sweeper's default, ``OptunaSweeperConf``)."""
    from hydra_plugins.dlrun_optuna.optuna_sweeper import OptunaSweeperConf

    optuna = require_optuna()
    defaults = OptunaSweeperConf()
    options = {
        "n_startup_trials": defaults.n_startup_trials,
        "n_warmup_steps": defaults.n_warmup_steps,
        **(options or {}),
    }
    startup, warmup = options["n_startup_trials"], options["n_warmup_steps"]
    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name}: unknown pruner; valid: {', '.join(PRUNERS)}")
    if not (isinstance(startup, int) and startup >= 0 and isinstance(warmup, int) and warmup >= 0):
        raise UserError(
            f"hydra.sweeper.n_startup_trials={startup}, n_warmup_steps={warmup}: "
            "both must be whole numbers >= 0"
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        # min_resource="auto" is only resolved inside study.optimize: steps, explicitly.
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup))
    return optuna.pruners.NopPruner()


def pruning_hook(spec) -> Callable[[int, float], bool] | None:
    """For a search's trial (``tune`` set by the sweeper): report and ask whether to stop.

    Opens the study from its storage file, so it works in the sweeper's process
    and in a launcher's separate ones alike. Returns None for any other run.
    """
    if spec is None:
        return None
    optuna = require_optuna()
    store = storage(spec.storage)
    name = spec.study or STUDY
    pruner = make_pruner(spec.pruner or "none", spec.pruner_options)
    study = optuna.load_study(study_name=name, storage=store, pruner=pruner)
    trial_id = store.get_trial_id_from_study_id_trial_number(
        store.get_study_id_from_name(name), spec.trial
    )

    # What Trial.report and Trial.should_prune do, through public API only (Optuna's docs
    # say not to build a Trial by hand): store the value, then ask the pruner about the
    # trial as stored. As in Trial.report, a step already reported keeps its first value.
    def report(step: int, value: float) -> bool:
        # Step 0 (trainer.eval_at_start) is the untrained model: nothing to judge yet.
        if step == 0 or not math.isfinite(value):
            return False
        if step in store.get_trial(trial_id).intermediate_values:
            warnings.warn(
                f"The reported value is ignored because this `{step=}` is already reported.",
                stacklevel=2,
            )
        else:
            store.set_trial_intermediate_value(trial_id, step, float(value))
        return bool(pruner.prune(study, store.get_trial(trial_id)))  # numpy bool from median

    return report


def find_study(directory: Path):
    """The study in a search directory's journal, or None when it has none (a study in a
    database is opened only by a command that names it: ``hydra.sweeper.storage``)."""
    path = SweepDir(directory).journal
    if not path.is_file():
        return None
    optuna = require_optuna()
    store = storage(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if not names:
        return None
    return optuna.load_study(study_name=STUDY if STUDY in names else names[0], storage=store)


# -- the command-line check ----------------------------------------------------------------


def is_search(sweeper: Any) -> bool:
    """Whether Hydra's composed ``hydra.sweeper`` section is dlrun's optuna sweeper."""
    return str(sweeper.get("_target_", "")).startswith("hydra_plugins.dlrun_optuna.")


def first_value(o) -> str:
    """A sweep override's first value as an override (``key=value``): a list's or
    ``choice()``'s first, a range's lower end; any other override as it is."""
    if not o.is_sweep_override():
        return o.input_line
    if not o.is_discrete_sweep():  # interval(): a search's range, from its lower end
        return override_text(o.get_key_element(), parse_param(o).extremes()[0])
    return f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"


def check_search(sweeper: Any, parsed: list, compose: Callable[[list[str]], Any]) -> None:
    """``dlrun -m`` with the optuna sweeper (chosen on the command line or by a preset):
    refuse a bad search in one line before Hydra starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    require_optuna()
    own = ("hydra.", "hydra/")
    fixed = [
        o.input_line
        for o in parsed
        if not o.is_sweep_override() and not o.key_or_group.startswith(own)
    ]
    params: dict[str, Any] = {}
    if sweeper.get("params"):  # each key's sweep text (the sweeper's schema)
        params = cast(dict[str, Any], OmegaConf.to_container(sweeper.params))
    searched = [f"{k}={v}" for k, v in params.items()]
    searched += [o.input_line for o in parsed if o.is_sweep_override()]
    preset_fixed, space = split_overrides(OverridesParser.create().parse_overrides(searched))
    space = {k: p for k, p in space.items() if not k.startswith(own)}
    check_settings(space, sweeper)
    check_space(space, compose, [*fixed, *preset_fixed])
