"""A command line becomes a ``Plan`` once: group names, keys, values, resume, checked.

Hydra reports these mistakes as multi-line errors (or not at all, for values);
here each ends as one line that says what is valid, before any output
directory exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from dlrun.errors import UserError, first_line
from dlrun.plan.compose import initialized
from dlrun.plan.config import RunConfig, to_dict, validate
from dlrun.plan.init_from import InitFrom
from dlrun.registry import closest, missing_yaml_hint, plugin_conf_dirs, unknown_name_message
from dlrun.rundir.layout import RunDir

# Hydra flags that show something and run no job.
SHOWS = {
    *("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i"),
    *("--shell-completion", "-sc"),
}
# Hydra flags after which we leave the command line to Hydra alone.
PASS_THROUGH = SHOWS | {
    *("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"),
    *("--package", "-p", "--resolve"),
}


# Hydra's run modes: it accepts one per command line (and raises a traceback otherwise).
MODES = {
    "-m": "--multirun",
    "--multirun": "--multirun",
    "-c": "--cfg",
    "--cfg": "--cfg",
    "-i": "--info",
    "--info": "--info",
    "-sc": "--shell-completion",
    "--shell-completion": "--shell-completion",
}


def groups(conf_dir: Path) -> dict[str, list[str]]:
    """Config groups under conf/ and the choices in each."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in conf_dir.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_"))
    }


def all_groups(conf_dir: Path) -> dict[str, list[str]]:
    """``groups(conf_dir)`` with the choices installed plugins ship (``dlrun.registry``)."""
    options = groups(conf_dir)
    for conf in plugin_conf_dirs():
        for group, choices in groups(conf).items():
            options[group] = sorted({*options.get(group, []), *choices})
    return options


def hydra_group_options(conf_dir: Path, group: str) -> list[str]:
    """Choices of one of Hydra's own groups (hydra/launcher...), installed plugins included."""
    from hydra.core.global_hydra import GlobalHydra

    with initialized(conf_dir):
        return GlobalHydra.instance().config_loader().get_group_options(group)


# A "~" that starts a value (or an item of a sweep or a list): the home folder.
HOME = re.compile(r"(?<=[=,[])~(?=[/,\]]|$)")


def expand_home(argv: list[str]) -> list[str]:
    """``dataset.path=~/data`` as the user meant it. A shell expands ``~`` after ``=``
    only in a variable assignment, which a dotted key is not, and Hydra's grammar
    rejects an unquoted ``~`` in a value."""
    home = str(Path.home())
    return [HOME.sub(lambda _: home, a) if "=" in a and a[0] != "-" else a for a in argv]


@dataclass
class Resume:
    """The ``checkpoints/last.pt`` a ``resume=`` command continues from, read once and
    handed over once (``take``): the run does not keep a second copy of its weights."""

    checkpoint: dict | None

    def take(self) -> dict | None:
        checkpoint, self.checkpoint = self.checkpoint, None
        return checkpoint


@dataclass(frozen=True)
class Plan:
    """What one command runs, decided once and handed to the job as a value.

    ``argv`` is the command line Hydra runs (its run directory, logging, sweeper and
    launcher). A single run also has its validated ``config`` (and, resumed, the run
    and checkpoint it continues): the job uses them as they are. A sweep's jobs each
    get their config from Hydra's sweeper and validate it once, in the job; Hydra's
    own flags (--help, --cfg...) have neither.
    """

    argv: list[str]
    config: RunConfig | None = None
    resume: Resume | None = None
    new_dir: bool = False  # hydra.run.dir names a folder this command makes (or finds empty)
    init: InitFrom | None = None  # init_from: the weights a new run starts from, read once


def plan_command(argv: list[str], conf_dir: Path) -> Plan:
    """Parse, compose and validate the command line ``argv`` once: its ``Plan``.

    ``resume=DIR`` keeps only the overrides that continue a run and adds
    ``hydra.run.dir=DIR`` so the run continues in its own directory; the run's own
    config is read from its checkpoint (``dlrun.plan.resume``). A sweep is checked
    at every value it will run (a search: every choice and both ends of every
    range) before its first job starts.
    """
    argv = expand_home(argv)
    modes = {MODES[a.split("=")[0]] for a in argv if a.split("=")[0] in MODES}
    if len(modes) > 1:
        raise UserError(f"{' and '.join(sorted(modes))} cannot be combined; give one of them")
    if any(a.split("=")[0] in PASS_THROUGH for a in argv):
        if not any(a.split("=")[0] in SHOWS for a in argv):
            if any(a.startswith("resume=") for a in argv):  # the run's own config, not a tree's
                raise UserError(
                    "resume=DIR continues a run with its own saved config; leave out "
                    "--config-dir/--config-name/--config-path/--package"
                )
            if "--resolve" in argv:
                raise UserError("--resolve works with --cfg or --help only")
        return Plan(argv)
    multirun = any(a in ("-m", "--multirun") or a == "hydra.mode=MULTIRUN" for a in argv)
    flags = [a for a in argv if a.startswith("-")]
    overrides = [a for a in argv if not a.startswith("-")]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as exc:
        raise UserError(f"cannot parse the command line: {_shown(first_line(exc), 200)}") from None
    _check_duplicates(parsed, overrides)
    for o in parsed:  # Hydra would look a long one up as a file name first
        if len(o.key_or_group) > 200:
            raise UserError(f"unknown config key '{_shown(o.key_or_group)}'")
    options = all_groups(conf_dir)
    _check_choices(parsed, options, conf_dir)
    _check_hydra_dirs(parsed)

    resume = next((o.value() for o in parsed if o.key_or_group == "resume"), None)
    if resume and any(o.key_or_group == "init_from" and o.value() for o in parsed):
        raise UserError(
            "resume= continues a run, init_from= starts a new one from a run's weights; "
            "give one of them"
        )
    if resume:
        if multirun:
            raise UserError("resume works on one run directory, not in a multirun (-m)")
        return _resume_plan(conf_dir, flags, RunDir(Path(str(resume)).expanduser()), parsed)
    if multirun:
        _check_sweep(conf_dir, parsed)
        _check_sweep_dir(parsed)
        return Plan([*argv, *_job_dirname_override(conf_dir, parsed)])
    swept = next((o for o in parsed if o.is_sweep_override()), None)
    if swept is not None:
        raise UserError(
            f"{_shown(_line(swept))}: several values make a sweep (dlrun -m); give one "
            "value, a list as key=[a,b], or a text with a comma as key='a,b'"
        )
    cfg, mode = _compose_job(conf_dir, _job_overrides(overrides))
    if mode == RunMode.MULTIRUN:  # the config's own hydra.mode: a sweep
        _check_sweep(conf_dir, parsed)
        return Plan(["-m", *argv, *_job_dirname_override(conf_dir, parsed)])
    data = _validate(cfg)
    _check_writable(data.paths)
    init = _init_from(data)
    given = next((o.value() for o in parsed if o.key_or_group == "hydra.run.dir"), None)
    job = slurm_job()
    if job is None:
        if given is None:
            return Plan(argv, data, init=init)
        return Plan(argv, data, new_dir=_claim_run_dir(Path(str(given)).expanduser()), init=init)
    from dlrun.plan.resume import hydra_value

    # In a SLURM job, a run has a directory of its own that a requeued job finds again.
    where = Path(str(given)).expanduser() if given else slurm_run_dir(data, job, argv)
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and RunDir(where).last.is_file():
        print(f"dlrun: SLURM requeued job {job}: resuming {where}", file=sys.stderr)
        kept = [a for a in argv if not a.startswith("hydra.run.dir=")]
        return plan_command([*kept, f"resume={hydra_value(str(where))}"], conf_dir)
    new = _claim_run_dir(where)
    return Plan(
        argv if given else [*argv, f"hydra.run.dir={hydra_value(str(where))}"],
        data,
        None,
        new,
        init,
    )


def _init_from(data: RunConfig) -> InitFrom | None:
    """``init_from``'s checkpoint, read once and checked against the config (task, model,
    every key that shapes the weights); None without one."""
    from dlrun.plan import init_from

    if not data.init_from:
        return None
    _check_plain_dir(Path(data.init_from), "init_from")
    init = init_from.read(data.init_from)
    init_from.check(data, init)
    return init


def _claim_run_dir(where: Path) -> bool:
    """A new run in a directory the command names (``hydra.run.dir``): refused if that
    directory holds a run that trained (its files are never rewritten) or one that is
    running now; else locked for this command (``dlrun.rundir.lock``). Returns whether
    the folder is new (absent or empty)."""
    from dlrun.engine.distributed import from_env
    from dlrun.plan.resume import resume_command
    from dlrun.rundir import lock

    if not from_env().main:  # under torchrun, rank 0 writes the run directory
        return False
    how = "wait for it to end, or choose another hydra.run.dir"
    lock.refuse_if_held(where, "run directory", how)
    run = RunDir(where)
    shown = _shown(str(where))
    if run.finished() or run.has_checkpoint():
        done = "a finished run" if run.finished() else "a run with checkpoints"
        how = "" if run.finished() else f", continue it with: {resume_command(where)}"
        raise UserError(
            f"hydra.run.dir={shown} already holds {done}, whose files are never rewritten; "
            f"choose another hydra.run.dir{how}"
        )
    new = not where.is_dir() or not any(where.iterdir())
    lock.hold(where, "run directory", how)
    return new


def slurm_job(env=os.environ) -> str | None:
    """The SLURM job this process runs in (``JOBID``, or ``ARRAYJOBID_TASK`` in an array);
    None outside SLURM."""
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def slurm_run_dir(data: RunConfig, job: str, argv: list[str]) -> Path:
    """``<paths.output_dir>/slurm/<job>-<hash of the command line>``: the same directory
    for the same command in the same job, so a requeued job continues its run (a batch
    script that runs several commands gives each its own)."""
    digest = hashlib.sha1("\0".join(argv).encode()).hexdigest()[:8]
    return Path(data.paths.output_dir).expanduser() / "slurm" / f"{job}-{digest}"


def _job_overrides(overrides: list[str]) -> list[str]:
    """The overrides that shape the job's config (not Hydra's own)."""
    return [a for a in overrides if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def _validate(cfg) -> RunConfig:
    from dlrun.engine.device import resolve_device

    data = validate(cfg)
    resolve_device(data.device)
    return data


def _check_duplicates(parsed, texts: list[str]) -> None:
    """Hydra silently keeps the last of two values for one key; here it is a mistake."""
    seen: dict[str, str] = {}
    for o, text in zip(parsed, texts):
        key = o.key_or_group
        if key in seen:
            raise UserError(
                f"{key} is given twice on the command line ({_shown(seen[key])} and "
                f"{_shown(text)}); give it once (a sweep lists its values: {key}=a,b)"
            )
        seen[key] = text


def _line(o: Override) -> str:
    """An override as the command line wrote it (Hydra's parser keeps each one's text)."""
    if o.input_line is None:
        raise ValueError(f"{o.key_or_group}: an override without its text")
    return o.input_line


def _shown(text: str, limit: int = 60) -> str:
    from dlrun.errors import printable

    return printable(text, limit)


def _check_choices(parsed, options: dict[str, list[str]], conf_dir: Path) -> None:
    """Every group choice exists (Hydra's own groups too, installed plugins included)."""
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra/") and key not in options:
            options[key] = hydra_group_options(conf_dir, key)
        if key in options:
            values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else [o.value()]
            if len(values) == 1 and isinstance(values[0], list):  # logger=[tensorboard,mlflow]
                values = values[0]
            for value in values:
                if value is None and not o.is_delete():
                    raise UserError(
                        f"{key}=null: the {key} group needs a choice; valid: "
                        f"{', '.join(options[key])}"
                    )
                if value is not None and str(value) not in options[key]:
                    how = f"; choose one with {key}=NAME"
                    if str(value).startswith("submitit") and "submitit_local" not in options[key]:
                        how += " (the submitit launchers: pip install 'dlrun[submitit]')"
                    how += missing_yaml_hint(key, str(value))
                    raise UserError(
                        unknown_name_message(key, _shown(str(value)), options[key], how)
                    )


def _check_hydra_dirs(parsed) -> None:
    """hydra.run.dir / hydra.sweep.dir given by the user can be created."""
    for o in parsed:
        if o.key_or_group in ("hydra.run.dir", "hydra.sweep.dir") and o.value() is not None:
            fixed = str(o.value()).split("${", 1)[0]  # up to the first interpolation
            if fixed:
                _writable_dir(Path(fixed), o.key_or_group)


def _check_sweep_dir(parsed) -> None:
    """A ``hydra.sweep.dir`` that another sweep is writing: refused before Hydra starts
    (the ``SweepLock`` callback then holds it while this sweep runs)."""
    from dlrun.engine.distributed import from_env
    from dlrun.rundir import lock

    given = next((o.value() for o in parsed if o.key_or_group == "hydra.sweep.dir"), None)
    if given is not None and "${" not in str(given) and from_env().main:
        how = "wait for that sweep to end, or choose another hydra.sweep.dir"
        lock.refuse_if_held(Path(str(given)).expanduser(), "sweep folder", how)


def _check_plain_dir(path: Path, key: str) -> None:
    """A run or sweep directory whose name holds ``${``: Hydra would resolve it again
    in its log file's name and write elsewhere; a folder's name never directs I/O."""
    if "${" in str(path):
        raise UserError(
            f"{key}={_shown(str(path))}: a folder name with '${{' cannot hold a run (Hydra "
            "would resolve it as an interpolation); rename the folder"
        )


def _check_writable(paths) -> None:
    """The output and cache folders can be created and written, before anything starts."""
    for key in ("output_dir", "cache_dir"):
        _writable_dir(Path(str(getattr(paths, key))).expanduser(), f"paths.{key}")


def _writable_dir(path: Path, key: str) -> None:
    """A clear error if ``path`` cannot become a folder this process writes into."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == path else f"is under {probe}, which is"
        raise UserError(
            f"{key}={_shown(str(path))} {where} a file, not a folder; choose another {key}"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{key}={_shown(str(path))}: {probe} is not writable; choose another {key}")


def _check_sweep(conf_dir: Path, parsed) -> None:
    """Before the first job starts: its config (each swept key at its first value) is
    valid, and so is every value the sweep will run. A search (``hydra/sweeper=optuna``):
    its settings, every choice and both ends of every range (``dlrun.search.study``); a
    grid: every value of every swept key, the command line's and a preset's
    ``hydra.sweeper.params``."""
    from dlrun.search.study import check_search, first_value, is_search

    first = [first_value(o) for o in parsed]
    data = _validate(_compose(conf_dir, _job_overrides(first)))
    _check_writable(data.paths)
    _init_from(data)  # each job reads it again: a sweep of fine-tunings
    # Hydra's own swept keys (hydra.launcher.n_jobs=1,2) shape no job: left out here.
    own = [f for o, f in zip(parsed, first) if not (o.is_sweep_override() and _is_hydra(o))]
    with initialized(conf_dir):
        try:
            sweeper = compose("config", overrides=own, return_hydra_config=True).hydra.sweeper
        except HydraException as exc:
            raise UserError(first_line(exc)) from None
    if is_search(sweeper):
        check_search(sweeper, parsed, lambda o: _compose(conf_dir, o))
        return
    if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
        raise UserError(
            "interval(...) is a search range: choose the search with hydra/sweeper=optuna "
            "(lists and choice()/range() make a grid)"
        )
    sweeps: list[tuple[int | None, Override]]  # the command line's index; None: a preset's
    sweeps = [(i, o) for i, o in enumerate(parsed) if o.is_sweep_override()]
    given = {o.key_or_group for o in parsed}
    parser = OverridesParser.create()
    params: dict[str, Any] = {}
    if sweeper.get("params"):  # each key's sweep text (the sweeper's schema)
        params = cast(dict[str, Any], OmegaConf.to_container(sweeper.params))
    for key, values in params.items():
        if key in given:
            continue  # the command line's value wins
        try:
            (o,) = parser.parse_overrides([f"{key}={values}"])
        except HydraException as exc:
            raise UserError(
                f"hydra.sweeper.params.{key}: cannot parse {values!r}: {first_line(exc)}"
            ) from None
        sweeps.append((None, o))
    for index, o in sweeps:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
        for value in values:
            text = f"{o.get_key_element()}={value}"
            if index is not None and text == first[index]:
                continue  # the first job's config, validated above
            trial = list(first) if index is None else first[:index] + first[index + 1 :]
            try:
                _validate(_compose(conf_dir, _job_overrides([*trial, text])))
            except UserError as exc:
                raise UserError(f"sweep value {_shown(text)}: {exc}") from None


def _is_hydra(o) -> bool:
    return o.key_or_group.startswith(("hydra.", "hydra/"))


def _resume_plan(conf_dir: Path, flags: list[str], run: RunDir, parsed) -> Plan:
    """The plan that continues ``run``; refuses changes that would not."""
    from dlrun.engine.distributed import from_env
    from dlrun.plan.resume import (
        check_not_a_fold,
        check_overrides,
        check_same_data,
        check_unfinished,
        hydra_value,
        resumed_config,
    )
    from dlrun.rundir import lock

    _check_plain_dir(run.path, "resume")
    how = "wait for it to end, then resume it"
    if from_env().main:  # first: a running run's checkpoint changes under us
        lock.refuse_if_held(run.path, "run directory", how)
    ckpt = run.resume_checkpoint()
    check_not_a_fold(run, ckpt["config"])
    kept = check_overrides(run.path, parsed, ckpt["config"], set(all_groups(conf_dir)))
    where = hydra_value(str(run.path))
    texts = [_line(o) for o in kept if o.key_or_group != "resume"]
    texts += [f"resume={where}", f"hydra.run.dir={where}", "hydra.output_subdir=null"]
    cfg = _compose(conf_dir, _job_overrides(texts))
    keys = [o.key_or_group for o in kept]
    data = _validate(resumed_config(ckpt["config"], run.path, to_dict(cfg), keys))
    check_unfinished(run, ckpt.get("state"), data)
    check_same_data(run, ckpt["state"], data)
    _check_writable(data.paths)
    if from_env().main:  # nothing refused it: from here this command writes the run
        lock.hold(run.path, "run directory", how)
    return Plan([*flags, *texts], data, Resume(ckpt))


DIRNAME_EXCLUDE = "hydra.job.config.override_dirname.exclude_keys"


def _job_dirname_override(conf_dir: Path, parsed) -> list[str]:
    """Name sweep job directories by the swept keys only (``3_optimizer.lr=0.01``).

    Hydra names them by every override, which soon passes the 255-character
    limit on a file name; the keys set once for all jobs are excluded here.
    """
    if any(o.key_or_group == DIRNAME_EXCLUDE for o in parsed):
        return []  # the user's own choice
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    fixed = [
        o.key_or_group
        for o in parsed
        if not o.is_sweep_override()
        and o.key_or_group not in swept  # a later sweep of the same key wins
        and not o.key_or_group.startswith(("hydra.", "hydra/"))
    ]
    if not fixed:
        return []
    base = OmegaConf.load(conf_dir / "config.yaml").hydra.job.config.override_dirname
    keys = list(dict.fromkeys([*base.exclude_keys, *fixed]))
    return [f"{DIRNAME_EXCLUDE}=[{','.join(keys)}]"]


def _compose(conf_dir: Path, overrides: list[str]):
    return _compose_job(conf_dir, overrides)[0]


def _compose_job(conf_dir: Path, overrides: list[str]):
    """The job's config and the ``hydra.mode`` its YAML sets (None: Hydra decides).

    Composed with Hydra's own section, then without it: a preset may make a command a
    sweep, and the job's config holds no ``hydra`` key.
    """
    with initialized(conf_dir):
        try:
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            mode = cfg.hydra.mode
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg, mode
        except (HydraException, ValueError) as exc:  # ValueError: Hydra on odd group values
            message = first_line(exc)
    # Most often a misspelt key: say which keys exist there.
    base = _compose_groups_only(conf_dir, overrides)
    for text in overrides:
        key = text.split("=", 1)[0]
        if key.startswith(("+", "~")) or "=" not in text or "/" in key:
            continue
        if OmegaConf.select(base, key, default="__missing__") == "__missing__":
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(base, parent, default=None) if parent else base
            while parent and not OmegaConf.is_dict(node):  # trainer.max_steps.x: up to a section
                if node is not None:
                    section, _, _ = parent.rpartition(".")
                    keys = OmegaConf.select(base, section) if section else base
                    raise UserError(
                        f"unknown config key '{_shown(key)}': {parent} is a value, not a "
                        f"section; set it with {parent}=VALUE (keys of {section or 'the config'}:"
                        f" {', '.join(map(str, keys.keys()))})"
                    )
                parent, _, leaf = parent.rpartition(".")
                node = OmegaConf.select(base, parent, default=None) if parent else base
            valid = list(node.keys()) if OmegaConf.is_dict(node) else []
            guess = closest(leaf, [str(v) for v in valid])
            hint = (
                f"did you mean '{parent + '.' if parent else ''}{guess}'?"
                if guess
                else f"valid keys: {', '.join(map(str, valid))}"
            )
            raise UserError(f"unknown config key '{_shown(key)}' ({hint})")
    raise UserError(_shown(message, 300))


def _compose_groups_only(conf_dir: Path, overrides: list[str]):
    opts = all_groups(conf_dir)
    chosen = [t for t in overrides if t.split("=", 1)[0] in opts]
    with initialized(conf_dir):
        return compose("config", overrides=chosen)
