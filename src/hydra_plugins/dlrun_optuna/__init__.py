"""dlrun's ``optuna`` Hydra sweeper: hyperparameter search with pruning (``dlrun.search.study``).

Hydra finds it by scanning the ``hydra_plugins`` namespace package; importing
this module registers ``hydra/sweeper=optuna`` and never imports Optuna itself,
so Hydra starts as fast without Optuna installed.
"""
