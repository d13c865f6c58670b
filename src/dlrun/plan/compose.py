"""Hydra as dlrun uses it: its own plugins registered, its ``conf/`` loaded.

Hydra finds plugins by listing the ``hydra_plugins`` package, which an editable
install (``pip install -e .``) hides from it, so dlrun registers its two itself:
``hydra/sweeper=optuna`` and the search path that adds installed task plugins'
YAML. Every config dlrun composes goes through ``initialized``, so a plugin task
composes in ``dlrun``, ``dlrun-stats`` and the search checks alike.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@functools.cache
def register_plugins() -> None:
    """Register the optuna sweeper and the plugins' search path with Hydra (once)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.dlrun_optuna.optuna_sweeper import OptunaSweeper
    from hydra_plugins.dlrun_searchpath.searchpath import DlrunPluginsSearchPath

    Plugins.instance().register(OptunaSweeper)
    Plugins.instance().register(DlrunPluginsSearchPath)


@contextlib.contextmanager
def initialized(conf_dir: Path) -> Iterator[None]:
    """Hydra's ``initialize_config_dir`` on ``conf_dir``, dlrun's plugins registered first."""
    from hydra import initialize_config_dir

    register_plugins()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        yield


def run_hydra(argv: list[str], task_function: Callable[[Any], Any]) -> None:
    """Hydra's application (a run, a multirun, --cfg, --help...) on dlrun's config tree,
    for the command line ``argv``, calling ``task_function(cfg)`` for each job.

    ``hydra.main`` takes its command line from ``sys.argv`` only; this does what it
    does with the plan's command line handed over as a value. For a run or a multirun
    it also skips the composition Hydra makes only to read ``hydra.mode`` (the plan
    knows the mode): Hydra composes each job once, to make its run directory. The
    names come from Hydra's ``_internal`` package: hydra-core is pinned below 1.4
    (pyproject.toml).
    """
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        _run_hydra,
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        get_args_parser,
        run_and_report,
    )
    from hydra.core.global_hydra import GlobalHydra

    from dlrun.errors import UserError, os_problem
    from dlrun.plan.config import conf_dir

    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.experimental_rerun is not None:  # it unpickles a file: a run directory is data
        raise UserError("--experimental-rerun is not supported; resume a run with resume=RUN_DIR")
    version.setbase("1.3")
    register_plugins()
    shows = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    own_tree = args.config_path or args.config_name or args.config_dir
    if shows or own_tree or args.run or any(o.startswith("hydra.mode=") for o in args.overrides):
        # What Hydra shows, or a command that names its own config tree or mode.
        _run_hydra(args, parser, task_function, str(conf_dir()), "config")
        return
    search = create_automatic_config_search_path(None, None, str(conf_dir()))
    name = detect_task_name(*detect_calling_file_or_module_from_task_function(task_function))
    app = run_and_report(lambda: Hydra.create_main_hydra2(name, search))
    mode = "MULTIRUN" if args.multirun else "RUN"
    launch = app.multirun if args.multirun else app.run
    overrides = [*args.overrides, f"hydra.mode={mode}"]

    def launch_reported() -> None:
        try:
            launch("config", task_function, overrides)
        except (OSError, ValueError) as exc:  # Hydra's own writes: run directory, .hydra/, log
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            problem = os_problem(cause) if isinstance(cause, OSError) else None
            if problem is None and isinstance(cause, OSError) and "handler" in str(exc):
                problem = (  # logging.config: "Unable to configure handler 'file'"
                    f"cannot open the log file {cause.filename}: {cause.strerror}; check "
                    "hydra.run.dir and hydra.job_logging.handlers.file.filename"
                )
            if problem is None:
                raise
            print(f"dlrun: error: {problem}", file=sys.stderr)
            sys.exit(2)  # SystemExit passes through Hydra's error reporting

    try:
        run_and_report(launch_reported)
    finally:
        GlobalHydra.instance().clear()
