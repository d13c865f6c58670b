"""hydra/sweeper=optuna: a search on tiny data, pruning, resuming, parallel workers, outputs."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import TINY, TINY_GRU, merged, read_csv, run_cli, tiny_data
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.plan.command import plan_command
from dlrun.plan.config import conf_dir
from dlrun.rundir.layout import SweepDir
from dlrun.search import study as tune

# char_accuracy moves within 20 steps on the tiny dates data (exact match stays at 0).
DATES = [*TINY, *tiny_data("dates"), *TINY_GRU, "task.monitor=val/char_accuracy"]
SEARCH = ["hydra/sweeper=optuna", "hydra.sweeper.seed=0", "trainer.eval_every=5"]
LR = "optimizer.lr=tag(log, interval(1e-3, 1e-1))"


def search_args(sweep: Path, *more: str) -> list[str]:
    return ["dlrun", "-m", *merged(*DATES, *SEARCH, f"hydra.sweep.dir={sweep}", *more)]


def states(sweep: Path) -> list[str]:
    return [t.state.name for t in tune.find_study(sweep).trials]


def assert_image(path: Path) -> None:
    with Image.open(path) as image:
        image.load()  # decodes every pixel
        assert image.width > 200 and image.height > 200, path


@pytest.fixture(scope="module")
def search(tmp_path_factory, cache_dir):
    """Four TPE trials over a log-scaled learning rate and a batch size, without pruning."""
    cwd = tmp_path_factory.mktemp("search")
    args = search_args(
        cwd / "S",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=none",
        LR,
        "dataset.batch_size=choice(32, 64)",
    )
    done = run_cli(args, cwd, cache_dir)
    assert done.returncode == 0, done.stderr
    return cwd, cwd / "S", done


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_search_runs_n_trials_with_a_row_each(search):
    cwd, sweep, done = search
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 4 and states(sweep) == ["COMPLETE"] * 4
    assert {r["status"] for r in rows} == {"ok"}
    assert list(rows[0]) == [
        "run",
        "optimizer.lr",
        "dataset.batch_size",
        "status",
        "val/char_accuracy",
        "test/loss",
        "test/char_accuracy",
        "test/exact_match",
        "test/cer",
        "epochs",
        "wall_time_s",
    ]
    values = [float(r["val/char_accuracy"]) for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    study = tune.find_study(sweep)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # task.mode=max
    for trial in study.trials:
        lr, batch = trial.params["optimizer.lr"], trial.params["dataset.batch_size"]
        assert 1e-3 <= lr <= 1e-1 and batch in (32, 64)
        run_dir = Path(trial.user_attrs["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert trial.value == summary["best"]["val/char_accuracy"]  # the objective
        assert sorted(trial.intermediate_values) == [5, 10, 15, 20]  # every evaluation
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["optimizer"]["lr"] == lr and config["dataset"]["batch_size"] == batch
    assert "sweep summary (4 jobs, 0 failed)" in done.stdout


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_best_yaml_reproduces_the_best_trial(search, tmp_path, cache_dir):
    _, sweep, _ = search
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    study = tune.find_study(sweep)
    assert best["value"] == study.best_value and best["trial"] == study.best_trial.number
    assert best["metric"] == "val/char_accuracy" and best["direction"] == "maximize"
    assert best["overrides"] == [f"{k}={v!r}" for k, v in study.best_params.items()]
    command = shlex.split(best["command"])
    assert command[0] == "dlrun" and command[-2:] == best["overrides"]
    done = run_cli(command, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["best"]["val/char_accuracy"] == pytest.approx(best["value"], abs=1e-6)


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_plots_decode_and_report_rebuilds_them(search, tmp_path):
    cwd, sweep, _ = search
    names = ["search_history.png", "search_slice.png", "search_importances.png"]
    names.append("search_contour.png")  # two parameters
    for name in names:
        assert_image(sweep / name)
        (sweep / name).unlink()
    (sweep / "best.yaml").unlink()
    done = run_cli(["dlrun-report", str(sweep)], cwd, cwd)
    assert done.returncode == 0, done.stderr
    for name in names:
        assert_image(sweep / name)
    assert yaml.safe_load((sweep / "best.yaml").read_text())["trials"]["complete"] == 4


@pytest.mark.parametrize(
    "bad, message",
    [
        ("optimizer.lr=interval(1, 0)", "optimizer.lr=interval(1, 0): the interval is empty"),
        ("optimizer.lrr=interval(0.1, 1)", "unknown config key 'optimizer.lrr'"),
        (
            "dataset.batch_size=choice(32, 0)",
            "search dataset.batch_size=choice(32, 0): at dataset.batch_size=0: invalid config: "
            "dataset.batch_size=0: must be >= 1",
        ),
    ],
)
def test_a_bad_search_is_refused_in_one_line_before_any_trial(tmp_path, cache_dir, bad, message):
    done = run_cli(search_args(tmp_path / "S", bad), tmp_path, cache_dir)
    assert done.returncode == 2
    assert done.stderr.startswith(f"dlrun: error: {message}")
    assert done.stderr.count("\n") == 1 and not done.stdout
    assert list(tmp_path.iterdir()) == []  # no sweep directory, no trial


def test_without_optuna_choosing_the_sweeper_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna fails
    with pytest.raises(UserError, match=r"needs Optuna.*pip install 'dlrun\[tune\]'"):
        plan_command(["-m", "hydra/sweeper=optuna", LR], conf_dir())


def test_hydra_sweep_syntax_to_optuna_distributions():
    parser = OverridesParser.create()

    def param(text: str):
        return tune.parse_param(parser.parse_override(text)).distribution()

    lr = param(LR)
    assert (lr.low, lr.high, lr.log) == (1e-3, 1e-1, True)
    assert param("a=choice(32, 64, x)").choices == (32, 64, "x")
    steps = param("a=range(2, 11, 4)")  # 2, 6, 10
    assert (steps.low, steps.high, steps.step) == (2, 10, 4)
    assert param("a=range(0.1, 0.5, 0.1)").choices == (0.1, 0.2, 0.3, 0.4)
    layers = param("a=tag(int, interval(1, 4))")
    assert isinstance(layers, optuna.distributions.IntDistribution) and layers.high == 4
    assert tune.override_text("a", 1e-05) == "a=1e-05"
    assert parser.parse_override(tune.override_text("a", 0.1 + 0.2)).value() == 0.1 + 0.2


def test_a_pruned_trial_stops_at_once_and_is_marked(tiny_cfg, tmp_path):
    """The trainer reports each evaluation; the median pruner stops a trial below the median."""
    journal = SweepDir(tmp_path).journal
    study = optuna.create_study(
        study_name=tune.STUDY,
        storage=tune.storage(journal),
        direction="maximize",
        pruner=tune.make_pruner("median", {"n_startup_trials": 1}),
    )
    first = study.ask()
    for step in (5, 10, 15, 20):
        first.report(1.0, step)  # char accuracy 1.0: nothing real comes near it
    study.tell(first, 1.0)
    trial = study.ask()
    spec = (
        f"{{storage: '{journal}', study: dlrun, pruner: median, "
        f"pruner_options: {{n_startup_trials: 1}}, trial: {trial.number}}}"
    )
    cfg = tiny_cfg("task.monitor=val/char_accuracy", "trainer.eval_every=5", f"+tune={spec}")
    run_dir = tmp_path / "run"
    metrics = run(cfg, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["stop_reason"] == "pruned"
    assert summary["steps"] == 5 and summary["test"] == {}  # stopped at its first report
    assert metrics == {k: v for k, v in summary["best"].items() if k != "step"}
    assert (run_dir / "checkpoints" / "last.pt").is_file()  # its directory is kept
    assert study.trials[1].intermediate_values == {5: summary["best"]["val/char_accuracy"]}
    assert not (run_dir / "samples.txt").exists()  # no test of a pruned trial


def test_the_pruning_hook_reports_and_asks_like_optunas_trial(tmp_path):
    """Step 0 and non-finite values are not reported; a step reported twice keeps its first
    value (with Trial.report's warning); the study's pruner judges the trial as stored."""
    from dlrun.plan.config import TuneConfig

    journal = SweepDir(tmp_path).journal
    study = optuna.create_study(
        study_name=tune.STUDY, storage=tune.storage(journal), direction="maximize"
    )
    first = study.ask()
    for step in (5, 10):
        first.report(1.0, step)
    study.tell(first, 1.0)
    median, none = study.ask(), study.ask()
    spec = dict(storage=str(journal), study=tune.STUDY, pruner_options={"n_startup_trials": 1})
    hook = tune.pruning_hook(TuneConfig(**spec, pruner="median", trial=median.number))
    assert hook(0, 0.0) is False and hook(5, float("nan")) is False
    assert study.trials[median.number].intermediate_values == {}
    assert hook(5, 0.5) is True  # below the median of the trials before it at step 5
    with pytest.warns(UserWarning, match=r"`step=5` is already reported"):
        assert hook(5, 2.0) is True
    assert study.trials[median.number].intermediate_values == {5: 0.5}
    hook = tune.pruning_hook(TuneConfig(**spec, pruner="none", trial=none.number))
    assert hook(5, 0.0) is False
    assert study.trials[none.number].intermediate_values == {5: 0.0}


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_a_pruned_search_marks_its_trials(tmp_path, cache_dir):
    # Trial 0 runs to the end; a learning rate 100x lower learns nothing in 5 steps.
    args = search_args(
        tmp_path / "S",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_startup_trials=1",
        "optimizer.lr=choice(3e-2, 1e-4, 3e-4)",
    )
    done = run_cli(args, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    trials = {t.params["optimizer.lr"]: t for t in tune.find_study(tmp_path / "S").trials}
    assert len(trials) == 3  # the grid's size, fewer than the default n_trials
    rows = {float(r["optimizer.lr"]): r for r in read_csv(tmp_path / "S" / "summary.csv")}
    pruned = [lr for lr, t in trials.items() if t.state.name == "PRUNED"]
    assert pruned, {lr: t.state.name for lr, t in trials.items()}
    for lr in pruned:
        assert rows[lr]["status"] == "pruned" and rows[lr]["test/cer"] == ""
        run_dir = Path(trials[lr].user_attrs["run_dir"])
        assert json.loads((run_dir / "summary.json").read_text())["steps"] < 20
    assert list(rows.values())[0]["status"] == "ok"  # finished trials first


@pytest.mark.slow  # the longest of its kind; CI runs slow tests when time allows
def test_the_study_resumes_after_an_interruption(tmp_path, cache_dir):
    sweep = tmp_path / "S"
    done = run_cli(search_args(sweep, "hydra.sweeper.n_trials=1", LR), tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    # A search killed (kill -9) leaves its running trial behind in the journal, its
    # heartbeat long stopped.
    study = tune.find_study(sweep)
    stale = study.ask(
        {"optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    )
    stale.set_user_attr("heartbeat", time.time() - tune.STALE_AFTER_S - 1)
    assert states(sweep) == ["COMPLETE", "RUNNING"]
    done = run_cli(search_args(sweep, "hydra.sweeper.n_trials=3", LR), tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    trials = tune.find_study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].params == stale.params  # the interrupted trial's parameters, rerun
    assert len(read_csv(sweep / "summary.csv")) == 3  # one directory per trial that ran


@pytest.mark.slow  # the longest of its kind; CI runs slow tests when time allows
def test_two_parallel_workers_share_one_study(tmp_path, cache_dir):
    args = search_args(
        tmp_path / "S", "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", LR
    )
    done = run_cli([*args, "hydra.sweeper.n_trials=2"], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "S" / ".submitit").is_dir()
    trials = tune.find_study(tmp_path / "S").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    spans = []
    for t in trials:
        # Each worker process reported its evaluations into the shared journal.
        assert sorted(t.intermediate_values) == [5, 10, 15, 20]
        summary_file = Path(t.user_attrs["run_dir"]) / "summary.json"
        start = json.loads(summary_file.read_text())["first_step_at"]
        spans.append((start, summary_file.stat().st_mtime))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1  # they ran at the same time


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_a_search_preset_runs_its_trials(tmp_path, cache_dir):
    data = tiny_data("imdb")
    args = ["dlrun", "-m", "experiment=imdb_tune", "device=cpu", *data, "trainer.max_epochs=2"]
    done = run_cli(
        [*args, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'S'}"],
        tmp_path,
        cache_dir,
    )
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "S" / "summary.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    # The preset searches lr, batch size and hidden units; the command line's
    # dataset.batch_size=16 (its tiny data) wins over the preset's range.
    for trial in tune.find_study(tmp_path / "S").trials:
        assert set(trial.params) == {"optimizer.lr", "model.hidden_size"}
        config = yaml.safe_load((Path(trial.user_attrs["run_dir"]) / ".hydra/config.yaml").open())
        assert config["optimizer"]["lr"] == trial.params["optimizer.lr"]
        assert config["dataset"]["batch_size"] == 16
        assert config["model"]["outputs"] == 1 and config["dataset"]["vocab_size"] == 20000
    best = yaml.safe_load((tmp_path / "S" / "best.yaml").read_text())
    assert best["command"].startswith("dlrun experiment=imdb_tune")


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_a_study_in_an_sqlite_database(tmp_path, cache_dir):
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    args = search_args(
        tmp_path / "S",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.study_name=lr",
        LR,
    )
    done = run_cli(args, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "S" / "optuna.journal").exists()  # the study lives in the database
    study = optuna.load_study(study_name="lr", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:  # each trial's job reported its evaluations to the database
        assert sorted(t.intermediate_values) == [5, 10, 15, 20]
    best = yaml.safe_load((tmp_path / "S" / "best.yaml").read_text())
    assert best["trial"] == study.best_trial.number
    # A database that cannot be opened is one line, before any trial.
    bad = search_args(
        tmp_path / "T", f"hydra.sweeper.storage=sqlite:///{tmp_path}/no/such/dir/x.db", LR
    )
    done = run_cli(bad, tmp_path, cache_dir)
    assert done.returncode == 2
    assert "cannot open the study's database" in done.stderr and "Traceback" not in done.stderr


def test_search_history_uses_a_log_axis_for_values_spanning_decades():
    import matplotlib

    matplotlib.use("Agg")
    from optuna.trial import TrialState

    from dlrun.search.results import _history

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize")
    for value in (1e-4, 0.09, 3e-4):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    ax = _history(study, done).axes[0]
    assert ax.get_yscale() == "log"
    assert "3 of 4 trials complete" in ax.get_title()
    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.9):
        study.add_trial(optuna.trial.create_trial(value=value))
    ax = _history(study, study.trials).axes[0]
    assert ax.get_yscale() == "linear" and "complete" not in ax.get_title()
