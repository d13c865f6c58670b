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
    """Optimization history, parameter importances, slices, and a contour for two params."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return []
    params = list(dict.fromkeys(k for t in done for k in t.params))
    plots: list[tuple[str, Callable]] = [("history", vis.plot_optimization_history)]
    if len(done) >= 2 and params:
        plots.append(("slice", vis.plot_slice))
        varied = [k for k in params if len({repr(t.params.get(k)) for t in done}) > 1]
        if varied and len(done) >= 3:
            plots.append(("importances", vis.plot_param_importances))
        if len(params) == 2 and len(varied) == 2 and len(done) >= 3:
            plots.append(("contour", _contour))  # Optuna's needs scipy
    files = []
    for name, draw in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            drawn = draw(study)
            first = drawn.flat[0] if hasattr(drawn, "flat") else drawn
            fig = first.figure
            for ax in fig.axes:  # log axes: labels at the decades only, not crowded between
                if ax.get_xscale() == "log":
                    ax.xaxis.set_minor_formatter(NullFormatter())
            fig.set_size_inches(max(6.4, fig.get_figwidth()), max(4.8, fig.get_figheight()))
            fig.tight_layout()
            path = SweepDir(out).search_plot(name)
            save_figure(fig, path)
        plt.close(fig)
        files.append(path)
    return files


def _contour(study):
    """The objective over two parameters: filled contours between the trials, and the trials."""
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    keys = list(dict.fromkeys(k for t in done for k in t.params))
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    axes = []
    for key in keys:
        dist = done[0].distributions[key]
        values = [t.params[key] for t in done]
        if isinstance(dist, CategoricalDistribution):
            labels = list(dict.fromkeys(map(str, dist.choices)))
            axes.append((np.array([labels.index(str(v)) for v in values], float), labels, False))
        else:
            axes.append((np.array(values, float), None, bool(getattr(dist, "log", False))))
    (x, xlabels, xlog), (y, ylabels, ylog) = axes
    z = np.array([t.value for t in done], float)
    px, py = (np.log10(x) if xlog else x), (np.log10(y) if ylog else y)
    try:
        filled = ax.tricontourf(px, py, z, levels=12, cmap="viridis", alpha=0.8)
        fig.colorbar(filled, ax=ax, label=study.user_attrs.get("monitor") or "objective")
    except (ValueError, RuntimeError):  # too few or collinear points: the trials alone
        pass
    ax.scatter(px, py, c=z, cmap="viridis", edgecolors="black", zorder=3)
    for axis, labels, log, key in (
        (ax.xaxis, xlabels, xlog, keys[0]),
        (ax.yaxis, ylabels, ylog, keys[1]),
    ):
        axis.set_label_text(f"log10 {key}" if log else key)
        if labels:
            axis.set_ticks(range(len(labels)), labels)
    ax.margins(0.05)
    ax.set_title("Objective over two parameters")
    return ax
