"""Check a command line before Hydra runs it: group names, keys, values, resume.

Hydra reports these mistakes as multi-line errors (or not at all, for values);
here each ends as one line that says what is valid, before any output
directory exists.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from dlrun.errors import UserError
from dlrun.registry import closest, unknown_name_message

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


def hydra_group_options(conf_dir: Path, group: str) -> list[str]:
    """Choices of one of Hydra's own groups (hydra/launcher...), installed plugins included."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path

    return ConfigRepository(create_config_search_path(str(conf_dir))).get_group_options(group)


def preflight(argv: list[str], conf_dir: Path) -> list[str]:
    """Validate ``argv`` and return the command line Hydra should run.

    ``resume=DIR`` becomes the original run's overrides, then the new ones,
    and ``hydra.run.dir=DIR`` so the run continues in its own directory.
    """
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
        raise UserError(f"cannot parse the command line: {_first_line(exc)}") from None

    options = groups(conf_dir)
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra/") and key not in options:
            options[key] = hydra_group_options(conf_dir, key)
        if key in options:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            for value in values:
                if value is not None and str(value) not in options[key]:
                    how = f"; choose one with {key}=NAME"
                    if str(value).startswith("submitit") and "submitit_local" not in options[key]:
                        how += " (the submitit launchers: pip install 'dlrun[submitit]')"
                    raise UserError(unknown_name_message(key, str(value), options[key], how))

    resume = next((o.value() for o in parsed if o.key_or_group == "resume"), None)
    if resume:
        if multirun:
            raise UserError("resume works on one run directory, not in a multirun (-m)")
        overrides = _resume_overrides(Path(str(resume)).expanduser(), overrides)
        argv = flags + overrides
        parsed = parser.parse_overrides(overrides)

    if multirun:
        argv = [*argv, *_job_dirname_override(conf_dir, parsed)]

    # Compose once with the first value of every sweep, and validate the result.
    first = [_first_choice(o, text) for o, text in zip(parsed, overrides)]
    first = [a for a in first if not a.startswith("hydra.") and not a.startswith("hydra/")]
    cfg = _compose(conf_dir, first)
    from dlrun.config import validate
    from dlrun.engine.device import resolve_device

    data = validate(cfg)
    resolve_device(data["device"])
    if multirun:  # hydra/sweeper=optuna: every end of every range, before any trial
        from dlrun.tune import check_search

        check_search(conf_dir, parsed, overrides, lambda o: _compose(conf_dir, o))
    return argv


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
        from dlrun.tune import override_text, parse_param

        return override_text(o.get_key_element(), parse_param(o).extremes()[0])
    first = next(iter(o.sweep_string_iterator()))
    return f"{o.get_key_element()}={first}"


def _compose(conf_dir: Path, overrides: list[str]):
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        try:
            return compose("config", overrides=overrides)
        except HydraException as exc:
            message = _first_line(exc)
    # Most often a misspelt key: say which keys exist there.
    base = _compose_groups_only(conf_dir, overrides)
    for text in overrides:
        key = text.split("=", 1)[0]
        if key.startswith(("+", "~")) or "=" not in text or "/" in key:
            continue
        if OmegaConf.select(base, key, default="__missing__") == "__missing__":
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            valid = list(node.keys()) if OmegaConf.is_dict(node) else []
            guess = closest(leaf, [str(v) for v in valid])
            hint = (
                f"did you mean '{parent + '.' if parent else ''}{guess}'?"
                if guess
                else f"valid keys: {', '.join(map(str, valid))}"
            )
            raise UserError(f"unknown config key '{key}' ({hint})")
    raise UserError(message)


def _compose_groups_only(conf_dir: Path, overrides: list[str]):
    opts = groups(conf_dir)
    chosen = [t for t in overrides if t.split("=", 1)[0] in opts]
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("config", overrides=chosen)


def _resume_overrides(run_dir: Path, new: list[str]) -> list[str]:
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not (run_dir / "checkpoints" / "last.pt").is_file() or not saved.is_file():
        raise UserError(
            f"resume={run_dir}: not a dlrun run directory with a checkpoint "
            "(expected .hydra/overrides.yaml and checkpoints/last.pt)"
        )
    # A search's trial (+tune.*) continues as a plain run: the study has moved on.
    skip = ("resume=", "hydra.", "+tune.")
    old = [o for o in OmegaConf.load(saved) if not str(o).startswith(skip)]
    new = [o for o in new if not o.startswith(("hydra.run.dir=", "resume="))]
    return [*old, *new, f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
