"""Hydra's config search path gets the ``conf/`` folder of every installed dlrun plugin.

A package that declares an entry point in the group ``dlrun.tasks`` or
``dlrun.models`` ships ``conf/task/NAME.yaml`` and ``conf/dataset/NAME.yaml``
(and ``conf/model/NAME.yaml``) beside its module; appended after dlrun's own
``conf/``, they make ``task=NAME`` a choice like any built-in one (dlrun's own
files win a clash). Finding the folders runs none of the plugin's code.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from dlrun.registry import plugin_conf_dirs


class DlrunPluginsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for conf in plugin_conf_dirs():
            search_path.append("dlrun-plugin", f"file://{conf}")
