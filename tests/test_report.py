"""Sweeps leave a summary table and plots; dlrun-report rebuilds them for any runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import matplotlib.image
import pytest
from conftest import TINY, TINY_GRU, merged, read_csv, run_cli, sweep_dir, tiny_data
from omegaconf import OmegaConf

from dlrun.errors import UserError
from dlrun.report.runs import build_table, find_runs, load_run, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATES = [*TINY, *tiny_data("dates"), *TINY_GRU]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = matplotlib.image.imread(path)  # decodes the whole image
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """A two-job learning-rate sweep through the `dlrun` console script."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_cli(["dlrun", "-m", *DATES, "optimizer.lr=1e-3,3e-2"], cwd, cache_dir)
    assert result.returncode == 0, result.stderr
    return sweep_dir(result.stdout, cwd), result


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_sweep_writes_and_prints_its_summary(sweep):
    root, result = sweep
    rows = read_csv(root / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.001", "0.03"]
    # Job directories are named by the swept key only, and each row is one of them.
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert jobs == ["0_optimizer.lr=0.001", "1_optimizer.lr=0.03"]
    assert sorted(r["run"] for r in rows) == jobs
    # Sorted by the monitored metric, best first, with each job's own numbers.
    values = [float(r["val/exact_match"]) for r in rows]
    assert values == sorted(values, reverse=True)
    for row in rows:
        summary = json.loads((root / row["run"] / "summary.json").read_text())
        assert float(row["test/exact_match"]) == pytest.approx(summary["test"]["test/exact_match"])
        assert float(row["wall_time_s"]) == summary["wall_time_s"]
    md = (root / "summary.md").read_text()
    assert md.count("\n| ") == 2 and "| optimizer.lr |" in md
    assert md in result.stdout  # printed when the sweep ends
    for name in ("summary_curves.png", "summary_exact_match_vs_optimizer.lr.png"):
        assert_png(root / name)


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_a_failed_job_is_in_the_table_and_the_others_run(tmp_path, cache_dir):
    # The command-line check validates every swept value; a split name is known only
    # once the job has its data, so also_eval=[nope] fails inside its job.
    args = ["dlrun", "-m", *DATES, "trainer.also_eval=[test],[nope]"]
    result = run_cli(args, tmp_path, cache_dir)
    assert result.returncode == 1
    assert "1 of 2 jobs did not finish" in result.stderr
    root = sweep_dir(result.stdout, tmp_path)
    rows = {r["trainer.also_eval"]: r for r in read_csv(root / "summary.csv")}
    assert rows["[test]"]["status"] == "ok" and float(rows["[test]"]["test/exact_match"]) >= 0
    assert rows["[nope]"]["status"].startswith("failed: trainer.also_eval: no split 'nope'")
    assert rows["[nope]"]["test/exact_match"] == ""
    assert list(rows) == ["[test]", "[nope]"]  # failed jobs last


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_report_over_separate_runs_and_over_a_sweep(tmp_path, cache_dir, sweep):
    runs = []
    for bs in (32, 64):
        args = ["dlrun", *merged(*DATES, f"dataset.batch_size={bs}")]
        result = run_cli(args, tmp_path, cache_dir)
        assert result.returncode == 0, result.stderr
        runs.append(re.search(r"run dir: (.+)", result.stdout).group(1))
    out = tmp_path / "report"
    result = run_cli(["dlrun-report", *runs, "--out", str(out)], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "summary.csv")
    assert sorted(r["dataset.batch_size"] for r in rows) == ["32", "64"]
    assert_png(out / "summary_exact_match_vs_dataset.batch_size.png")
    assert_png(out / "summary_curves.png")

    # Over the sweep (and its runs), it rebuilds the table the sweep wrote.
    root, _ = sweep
    before = (root / "summary.csv").read_text()
    (root / "summary.csv").unlink()
    result = run_cli(["dlrun-report", str(root), "--metric", "test/cer"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr
    rebuilt = read_csv(root / "summary.csv")
    assert {r["run"] for r in rebuilt} == {r["run"] for r in csv.DictReader(before.splitlines())}
    cers = [float(r["test/cer"]) for r in rebuilt]
    assert cers == sorted(cers)  # an error rate: lower is better


def fake_run(root: Path, name: str, overrides: list[str], summary: dict) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def ok(value: float, test: float, mode: str = "max") -> dict:
    return {
        "status": "ok",
        "monitor": "val/accuracy",
        "mode": mode,
        "best": {"step": 10, "val/accuracy": value},
        "test": {"test/accuracy": test, "test/loss": 1 - test},
        "epochs": 1.0,
        "wall_time_s": 2.0,
    }


def test_table_sorting_keys_and_failures(tmp_path):
    fake_run(tmp_path, "0_lr=0.1", ["optimizer.lr=0.1", "dataset.seed=1"], ok(0.7, 0.69))
    fake_run(tmp_path, "1_lr=0.01", ["optimizer.lr=0.01", "dataset.seed=1"], ok(0.9, 0.88))
    fake_run(tmp_path, "2_lr=1", ["optimizer.lr=1", "dataset.seed=1"], {"status": "failed"})
    fake_run(tmp_path, "10_lr=0.5", ["optimizer.lr=0.5", "dataset.seed=1"], ok(0.8, 0.79))
    paths = find_runs([tmp_path])
    assert [p.name for p in paths] == ["0_lr=0.1", "1_lr=0.01", "2_lr=1", "10_lr=0.5"]
    runs = [load_run(p) for p in paths]
    table = build_table(runs)
    assert table.keys == ["optimizer.lr"]  # dataset.seed is the same everywhere
    assert [r["optimizer.lr"] for r in table.rows] == ["0.01", "0.5", "0.1", "1"]
    assert table.rows[-1]["status"] == "failed"
    assert [r["optimizer.lr"] for r in build_table(runs, "loss").rows][:3] == ["0.01", "0.5", "0.1"]
    # A monitored metric that is minimized sorts ascending.
    for p in paths:
        summary = json.loads((p / "summary.json").read_text())
        summary["mode"] = "min"
        (p / "summary.json").write_text(json.dumps(summary))
    runs = [load_run(p) for p in paths]
    assert [r["optimizer.lr"] for r in build_table(runs).rows] == ["0.1", "0.5", "0.01", "1"]


def test_report_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        write_report([tmp_path / "nope"], tmp_path)
    with pytest.raises(UserError, match="no dlrun runs under"):
        write_report([tmp_path], tmp_path)
    fake_run(tmp_path, "a", ["optimizer.lr=0.1"], ok(0.7, 0.69))
    fake_run(tmp_path, "b", ["optimizer.lr=0.2"], ok(0.8, 0.79))
    with pytest.raises(UserError, match=r"--metric bleu: no run has it; available: val/acc"):
        write_report([tmp_path], tmp_path, metric="bleu")
    with pytest.raises(UserError, match=r"--x model: .* those are: optimizer.lr"):
        write_report([tmp_path], tmp_path, x="model")
    assert not (tmp_path / "summary.csv").exists()  # nothing half-written
    result = run_cli(["dlrun-report", str(tmp_path), "--x", "model"], tmp_path, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dlrun-report: error: --x model: not a key that varies between these runs; "
        "those are: optimizer.lr"
    ]


def test_two_swept_keys_give_grouped_bars(tmp_path):
    for i, (lr, bs) in enumerate([(0.1, 32), (0.1, 64), (0.01, 32), (0.01, 64)]):
        fake_run(
            tmp_path,
            f"{i}_x",
            [f"optimizer.lr={lr}", f"dataset.batch_size={bs}"],
            ok(0.5 + i / 10, 0.5 + i / 10),
        )
    report = write_report([tmp_path], tmp_path)
    names = {f.name for f in report.files}
    assert {"summary_bars.png", "summary_accuracy_vs_optimizer.lr.png"} <= names
    for f in report.files:
        if f.suffix == ".png":
            assert_png(f)
    report = write_report([tmp_path], tmp_path, x="dataset.batch_size")
    assert tmp_path / "summary_accuracy_vs_dataset.batch_size.png" in report.files
