"""dlrun's Hydra search-path plugin: the YAML that installed task and model plugins ship.

Hydra finds it by scanning the ``hydra_plugins`` namespace package (and
``dlrun.cli.train`` registers it explicitly, since an editable install hides that
namespace from Hydra's scan).
"""
