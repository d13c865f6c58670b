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

    ``hydra.main`` takes its command line from ``sys.argv`` only; this calls what it
    calls, with the plan's command line handed over as a value. hydra-core is pinned
    below 1.4 (pyproject.toml) for these two names of its ``_internal`` package.
    """
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser

    from dlrun.errors import UserError
    from dlrun.plan.config import conf_dir

    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.experimental_rerun is not None:  # it unpickles a file: a run directory is data
        raise UserError("--experimental-rerun is not supported; resume a run with resume=RUN_DIR")
    version.setbase("1.3")
    register_plugins()
    _run_hydra(
        args=args,
        args_parser=parser,
        task_function=task_function,
        config_path=str(conf_dir()),
        config_name="config",
    )
