"""Check a command line before Hydra runs it: group names, keys, values, resume.

Hydra reports these mistakes as multi-line errors (or not at all, for values);
here each ends as one line that says what is valid, before any output
directory exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from dlrun.errors import UserError
from dlrun.plan.compose import initialized
from dlrun.registry import closest, missing_yaml_hint, plugin_conf_dirs, unknown_name_message

# Hydra flags after which we leave the command line to Hydra alone.
PASS_THROUGH = {
    "--help",
    "-h",
    "--hydra-help",
    "--version",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--package",
    "-p",
    "--resolve",
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


def preflight(argv: list[str], conf_dir: Path) -> list[str]:
    """Validate ``argv`` and return the command line Hydra should run.

    ``resume=DIR`` keeps only the overrides that continue a run and adds
    ``hydra.run.dir=DIR`` so the run continues in its own directory; the
    run's own config is read from its checkpoint (``dlrun.plan.resume``).
    """
    argv = expand_home(argv)
    modes = {MODES[a.split("=")[0]] for a in argv if a.split("=")[0] in MODES}
    if len(modes) > 1:
        raise UserError(f"{' and '.join(sorted(modes))} cannot be combined; give one of them")
    if any(a.split("=")[0] in PASS_THROUGH for a in argv):
        return argv
    multirun = any(a in ("-m", "--multirun") for a in argv)
    flags = [a for a in argv if a.startswith("-")]
    overrides = [a for a in argv if not a.startswith("-")]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as exc:
        raise UserError(f"cannot parse the command line: {_shown(_first_line(exc), 200)}") from None
    _check_duplicates(parsed, overrides)
    for o in parsed:  # Hydra would look a long one up as a file name first
        if len(o.key_or_group) > 200:
            raise UserError(f"unknown config key '{_shown(o.key_or_group)}'")
    options = all_groups(conf_dir)
    _check_choices(parsed, options, conf_dir)
    _check_hydra_dirs(parsed)

    resume = next((o.value() for o in parsed if o.key_or_group == "resume"), None)
    if resume:
        if multirun:
            raise UserError("resume works on one run directory, not in a multirun (-m)")
        return flags + _resume_overrides(conf_dir, Path(str(resume)).expanduser(), parsed, options)

    if multirun:
        argv = [*argv, *_job_dirname_override(conf_dir, parsed)]
    # Compose once with the first value of every sweep, and validate the result.
    first = [_first_choice(o, text) for o, text in zip(parsed, overrides)]
    cfg = _compose(conf_dir, _job_overrides(first))
    data = _validate(cfg)
    if multirun:
        from dlrun.search.study import check_search

        # hydra/sweeper=optuna: every choice and both ends of every range; a grid:
        # every value of every swept key.
        if not check_search(conf_dir, parsed, overrides, lambda o: _compose(conf_dir, o)):
            _check_sweep(conf_dir, parsed, first)
    _check_writable(data.paths)
    return argv


def _job_overrides(overrides: list[str]) -> list[str]:
    """The overrides that shape the job's config (not Hydra's own)."""
    return [a for a in overrides if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def _validate(cfg) -> dict:
    from dlrun.engine.device import resolve_device
    from dlrun.plan.config import validate

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


def _check_sweep(conf_dir: Path, parsed, first: list[str]) -> None:
    """Every value of every swept key (the command line's and a preset's
    ``hydra.sweeper.params``) makes a valid config, before the first job starts."""
    sweeps = [(i, o) for i, o in enumerate(parsed) if o.is_sweep_override()]
    jobs = _job_overrides(first)
    with initialized(conf_dir):
        hydra_cfg = compose("config", overrides=jobs, return_hydra_config=True)
    params = OmegaConf.select(hydra_cfg, "hydra.sweeper.params") or {}
    given = {o.key_or_group for o in parsed}
    parser = OverridesParser.create()
    for key, values in params.items():
        if key in given:
            continue  # the command line's value wins
        try:
            (o,) = parser.parse_overrides([f"{key}={values}"])
        except HydraException as exc:
            raise UserError(
                f"hydra.sweeper.params.{key}: cannot parse {values!r}: {_first_line(exc)}"
            ) from None
        sweeps.append((None, o))
    for index, o in sweeps:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
        for value in values:
            text = f"{o.get_key_element()}={value}"
            trial = list(first) if index is None else first[:index] + first[index + 1 :]
            try:
                _validate(_compose(conf_dir, _job_overrides([*trial, text])))
            except UserError as exc:
                raise UserError(f"sweep value {_shown(text)}: {exc}") from None


def _resume_overrides(conf_dir: Path, run_dir: Path, parsed, options) -> list[str]:
    """The command line that continues ``run_dir``; refuses changes that would not."""
    from dlrun.plan.config import to_dict
    from dlrun.plan.resume import (
        check_overrides,
        check_unfinished,
        hydra_value,
        resumed_config,
        saved_checkpoint,
    )

    ckpt = saved_checkpoint(run_dir)
    kept = check_overrides(run_dir, parsed, ckpt["config"], set(options))
    where = hydra_value(str(run_dir))
    texts = [_override_text(o) for o in kept if o.key_or_group != "resume"]
    texts += [f"resume={where}", f"hydra.run.dir={where}", "hydra.output_subdir=null"]
    cfg = _compose(conf_dir, _job_overrides(texts))
    keys = [o.key_or_group for o in kept]
    data = _validate(resumed_config(ckpt["config"], run_dir, to_dict(cfg), keys))
    check_unfinished(run_dir, ckpt.get("state"), data)
    _check_writable(data.paths)
    return texts


def _override_text(o) -> str:
    return o.input_line


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


def _first_choice(o, text: str) -> str:
    if not o.is_sweep_override():
        return text
    if not o.is_discrete_sweep():  # interval(): a search's range, from its lower end
        from dlrun.search.study import override_text, parse_param

        return override_text(o.get_key_element(), parse_param(o).extremes()[0])
    first = next(iter(o.sweep_string_iterator()))
    return f"{o.get_key_element()}={first}"


def _compose(conf_dir: Path, overrides: list[str]):
    with initialized(conf_dir):
        try:
            return compose("config", overrides=overrides)
        except (HydraException, ValueError) as exc:  # ValueError: Hydra on odd group values
            message = _first_line(exc)
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


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
