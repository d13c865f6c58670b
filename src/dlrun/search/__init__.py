"""Hyperparameter search on Optuna: the search space, the study, a trial's pruning, the results.

The Hydra sweeper itself (``hydra/sweeper=optuna``) lives where Hydra finds plugins,
``hydra_plugins.dlrun_optuna``, and calls into ``search.study``.
"""
