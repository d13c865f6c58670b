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
from collections.abc import Iterator
from pathlib import Path


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
