"""A search's results: ``best.yaml`` and the study's plots.

``dlrun-report`` and a sweep's summary (``dlrun.report.runs``) write them into a
search directory, the one with Optuna's journal (``dlrun.search.study``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dlrun.rundir.layout import SweepDir
from dlrun.rundir.write import save_figure, write_text_atomic
from dlrun.search import study as tune
from dlrun.search.study import override_text


def search_outputs(paths: list[Path], out: Path, plots: bool) -> list[Path]:
    """A search directory (``optuna.journal``): ``best.yaml`` and the study's own plots."""
    roots = [Path(p).expanduser() for p in paths]
    searches = [p for p in roots if SweepDir(p).journal.is_file()]
    if len(searches) != 1:
        return []
    study = tune.find_study(searches[0])
    if study is None:
        return []
    return study_outputs(study, out, plots)


def study_outputs(study, out: Path, plots: bool) -> list[Path]:
    """``best.yaml`` and (``plots``) the study's plots of ``study``, written into ``out``."""
    files = []
    text = best_yaml(study)
    if text is not None:
        write_text_atomic(SweepDir(out).best_yaml, text)
        files.append(SweepDir(out).best_yaml)
    if plots:
        files += plot_study(study, out)
    return files


def best_yaml(study) -> str | None:
    """``best.yaml``: the best trial's value and parameters, as overrides to paste."""
    import yaml
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return None
    best = study.best_trial
    attrs = study.user_attrs
    overrides = [override_text(k, v) for k, v in best.params.items()]
    fixed = attrs.get("fixed", [])
    body = {
        "metric": attrs.get("monitor"),
        "direction": study.direction.name.lower(),
        "value": best.value,
        "trial": best.number,
        "run_dir": best.user_attrs.get("run_dir"),
        "params": dict(best.params),
        "overrides": overrides,
        "command": " ".join(["dlrun", *fixed, *overrides]),
        "trials": {
            "complete": len(done),
            "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
            "failed": sum(t.state == TrialState.FAIL for t in study.trials),
        },
    }
    head = "# The best trial of this search; rerun it with the command below.\n"
    return head + yaml.safe_dump(body, sort_keys=False, width=1000)


def plot_study(study, out: Path) -> list[Path]:
    """The search's plots: the objective by trial (history), against each parameter
    (slice), the parameters' importances, and a contour for two parameters."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return []
    params = list(dict.fromkeys(k for t in done for k in t.params))
    plots: list[tuple[str, Callable]] = [("history", _history)]
    if len(done) >= 2 and params:
        plots.append(("slice", _slice))
        varied = [k for k in params if len({repr(t.params.get(k)) for t in done}) > 1]
        if varied and len(done) >= 3:
            plots.append(("importances", _importances))
        if len(params) == 2 and len(varied) == 2 and len(done) >= 3:
            plots.append(("contour", _contour))  # Optuna's needs scipy
    files = []
    for name, draw in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks parts of its API experimental
            fig = draw(study, done)
            path = SweepDir(out).search_plot(name)
            save_figure(fig, path)
        plt.close(fig)
        files.append(path)
    return files


def _objective(study) -> str:
    return study.user_attrs.get("monitor") or "objective"


def _history(study, done):
    """The objective of each complete trial by trial number, and the best so far."""
    import matplotlib.pyplot as plt

    from dlrun.engine.palette import log_scale, series_colour

    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    numbers = [t.number + 1 for t in done]
    values = [t.value for t in done]
    best = max if study.direction.name == "MAXIMIZE" else min
    so_far = [best(values[: i + 1]) for i in range(len(values))]
    ax.plot(numbers, values, "o", color=series_colour(0), label="complete trial")
    ax.step(numbers, so_far, where="post", color=series_colour(1), label="best so far")
    trials = len(study.get_trials(deepcopy=False))
    shown = f"{len(done)} of {trials} trials complete" if len(done) < trials else ""
    ax.set(
        xlabel="trial",
        ylabel=_objective(study),
        title=f"{_objective(study)} by trial ({study.direction.name.lower()}d"
        + (f"; {shown}, the others pruned or failed)" if shown else ")"),
    )
    if log_scale(values):  # a few poor trials would flatten the good ones into a line
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _axis_of(done, key):
    """A parameter's values as numbers to plot, the tick labels of a categorical one
    (else None), and whether its range is logarithmic."""
    import numpy as np
    from optuna.distributions import CategoricalDistribution

    dist = next(t.distributions[key] for t in done if key in t.distributions)
    values = [t.params.get(key) for t in done]
    if isinstance(dist, CategoricalDistribution):
        labels = [str(c) for c in dist.choices]
        return np.array([labels.index(str(v)) for v in values], float), labels, False
    return np.array(values, float), None, bool(getattr(dist, "log", False))


def _slice(study, done):
    """The objective against each parameter, one panel each, trials coloured by number."""
    import matplotlib.pyplot as plt

    from dlrun.engine.palette import MIN_INCHES, log_scale

    keys = list(dict.fromkeys(k for t in done for k in t.params))
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    size = (max(MIN_INCHES, 4.2 * cols + 1.2), 4.0 * rows + 0.6)
    fig, axes = plt.subplots(
        rows, cols, figsize=size, squeeze=False, sharey=True, layout="constrained"
    )
    z = [t.value for t in done]
    order = [t.number + 1 for t in done]
    points = None
    for ax, key in zip(axes.flat, keys):
        x, labels, log = _axis_of(done, key)
        points = ax.scatter(x, z, c=order, cmap="viridis", edgecolors="black", linewidths=0.4)
        if labels:
            ax.set_xticks(range(len(labels)), labels)
            ax.margins(x=0.2)
        if log:
            ax.set_xscale("log")
        ax.set(xlabel=key)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(_objective(study))
        if log_scale(z):
            ax.set_yscale("log")  # shared by the row's panels
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    assert points is not None  # plot_study draws this for one parameter or more
    fig.colorbar(points, ax=axes, label="trial", shrink=0.8)
    fig.suptitle(f"{_objective(study)} against each parameter")
    return fig


def _importances(study, done):
    """fANOVA importances of the parameters (Optuna's), as sorted horizontal bars."""
    import matplotlib.pyplot as plt
    import optuna

    from dlrun.engine.palette import series_colour

    importances = optuna.importance.get_param_importances(study)
    names = sorted(importances, key=importances.__getitem__)
    fig, ax = plt.subplots(figsize=(9, max(3.5, 1.0 + 0.5 * len(names))), layout="constrained")
    bars = ax.barh(names, [importances[n] for n in names], color=series_colour(0))
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=3)
    ax.set(
        xlabel="importance (share of the objective's variance)",
        title=f"How much each parameter moves {_objective(study)}",
        xlim=(0, 1.1),
    )
    return fig


def _contour(study, done):
    """The objective over two parameters: filled contours between the trials, and the trials."""
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(dict.fromkeys(k for t in done for k in t.params))
    fig, ax = plt.subplots(figsize=(9, 7), layout="constrained")
    (x, xlabels, xlog), (y, ylabels, ylog) = (_axis_of(done, k) for k in keys)
    z = np.array([t.value for t in done], float)
    px, py = (np.log10(x) if xlog else x), (np.log10(y) if ylog else y)
    try:
        filled = ax.tricontourf(px, py, z, levels=12, cmap="viridis", alpha=0.8)
    except (ValueError, RuntimeError):  # too few or collinear points: the trials alone
        filled = None
    points = ax.scatter(px, py, c=z, cmap="viridis", edgecolors="black", zorder=3)
    fig.colorbar(filled or points, ax=ax, label=_objective(study))
    for axis, labels, log, key in (
        (ax.xaxis, xlabels, xlog, keys[0]),
        (ax.yaxis, ylabels, ylog, keys[1]),
    ):
        axis.set_label_text(f"log10 {key}" if log else key)
        if labels:
            axis.set_ticks(range(len(labels)), labels)
    ax.margins(0.05)
    ax.set_title(f"{_objective(study)} over two parameters")
    return fig
