"""Mistaken and hostile invocations: one line, exit 2, no traceback, nothing lost, no code run.

Each case names a console script, its arguments and what the one line on
stderr must say. Cases that damage a finished run work on a copy of it and
check that every file of the copy is byte-identical afterwards; cases that
smuggle code or interpolations into a run directory check that their marker
file was never created. Most run in-process (the checks happen before any
work); signals and a real resume run as subprocesses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_GRU, merged, run_cli, tiny_data

from dlrun.cli import predict, report, stats, train
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.plan.config import conf_dir
from dlrun.testing.fake import idx_bytes, synthetic_images, write_aclimdb, write_kmnist

DATES = [*TINY, *tiny_data("dates"), *TINY_GRU]
ENTRIES = {"dlrun": train.main, "dlrun-predict": predict.main, "dlrun-report": report.main}
ENTRIES["dlrun-stats"] = stats.main


# -- fixtures: finished runs and hostile files ---------------------------------------------


def _finished_run(root: Path, cache_dir: Path, args: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    done = run_cli(["dlrun", *args], root, cache_dir)
    assert done.returncode == 0, done.stderr
    return root / re.search(r"run dir: (.+)", done.stdout).group(1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir) -> dict[str, Path]:
    """A finished tiny dates run and a finished tiny imdb run, made once (never modified)."""
    root = tmp_path_factory.mktemp("finished")
    imdb = ["task=imdb", *TINY, *tiny_data("imdb")]
    return {
        "dates": _finished_run(root / "dates", cache_dir, DATES),
        "imdb": _finished_run(root / "imdb", cache_dir, imdb),
    }


def digest(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


class Evil:
    """A pickle that would run code when unpickled without ``weights_only``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def invoke(entry: str, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """Run a console script's ``main`` in this process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr, signal.getsignal(signal.SIGTERM)
    sys.argv, sys.stdin, sys.stdout, sys.stderr = [entry, *argv], io.StringIO(stdin), out, err
    try:
        ENTRIES[entry](argv) if entry != "dlrun" else ENTRIES[entry]()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr, handler = saved
        signal.signal(signal.SIGTERM, handler)
    return code, out.getvalue(), err.getvalue()


def assert_one_line(err: str, entry: str, pattern: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    line = lines[0]
    assert line.startswith(f"{entry}: error: "), line[:500]
    assert "Traceback" not in err and len(line) < 600, line[:600]
    assert "\x1b" not in line  # control characters are escaped, never echoed raw
    assert re.search(pattern, line), line
    return line


# -- the cases ----------------------------------------------------------------------------
# (entry, argv, pattern). In argv, {file} is a regular file, {run}/{imdb} copies of the
# finished runs, {marker} a path that must never be created, {tsv_latin1} etc. hostile
# data written by ``hostile_files``.

LONG = "x" * 1_000_000
CASES = [
    # Command line
    ("dlrun", ["optimizer.lr=1e-3", "optimizer.lr=1e-2"], r"optimizer.lr is given twice"),
    ("dlrun", ["model=gru_seq2seq", "model=transformer_seq2seq"], r"model is given twice"),
    ("dlrun", ["+trainer.seed=1", "trainer.seed=2"], r"trainer.seed is given twice"),
    ("dlrun", ["optimizer.lr=inf"], r"optimizer.lr=inf: must be a finite number"),
    ("dlrun", ["optimizer.lr=-inf"], r"optimizer.lr=-inf: must be a finite number"),
    ("dlrun", ["trainer.stop_at=nan"], r"trainer.stop_at=nan: must be a finite number"),
    ("dlrun", ["optimizer.betas=[0.9,inf]"], r"optimizer.betas=.*must be a finite number"),
    ("dlrun", ["trainer.max_time=inf"], r"trainer.max_time=inf: must be a finite number"),
    ("dlrun", ["trainer.max_steps.x=3"], r"trainer.max_steps is a value, not a section"),
    ("dlrun", ["trainer.max_stepz=3"], r"did you mean 'trainer.max_steps'"),
    ("dlrun", ["nope.deeper.key=1"], r"unknown config key 'nope.deeper.key' \(valid keys: "),
    ("dlrun", ["optimizer.lr=abc"], r"optimizer.lr='abc': expected float"),
    ("dlrun", ["trainer.max_steps=0"], r"trainer.max_steps=0: must be >= 1"),
    ("dlrun", ["device=tpu"], r"unknown device 'tpu'"),
    ("dlrun", ["model=null"], r"model=null: the model group needs a choice; valid: "),
    ("dlrun", ["hydra/launcher=null"], r"hydra/launcher=null: the hydra/launcher group needs"),
    ("dlrun", ["model=\x1b[31mred"], r"(unknown model|cannot parse).*\\x1b"),
    ("dlrun", [f"{LONG}=1"], r"unknown config key 'xxx.*\(1,000,000 characters\)"),
    ("dlrun", [f"model={LONG}"], r"unknown model 'xxx.*characters\)"),
    ("dlrun", ["-m", "optimizer.lr=1e-3,-1"], r"sweep value optimizer.lr=-1: .*must be > 0"),
    (
        "dlrun",
        ["optimizer.lr=1e-3,1e-2"],
        r"several values make a sweep \(dlrun -m\); give one value",
    ),
    ("dlrun", ["-m", "model=gru_seq2seq,nope"], r"unknown model 'nope'"),
    ("dlrun", ["-m", "dataset.max_src_len=40,5"], r"sweep value dataset.max_src_len=5: "),
    ("dlrun", ["-m", "trainer.max_steps=range(3,-1,-1)"], r"sweep value trainer.max_steps=0"),
    ("dlrun", ["-m", "resume={run}"], r"resume works on one run directory"),
    ("dlrun", ["-m", "--cfg", "job"], r"--cfg and --multirun cannot be combined"),
    ("dlrun", ["hydra.run.dir={file}/run"], r"hydra.run.dir=.* is under .*, which is a file"),
    ("dlrun", ["-m", "hydra.sweep.dir={file}/s", "optimizer.lr=1e-3,1e-2"], r"which is a file"),
    ("dlrun", ["paths.output_dir={file}"], r"paths.output_dir=.* is a file, not a folder"),
    ("dlrun", ["paths.cache_dir={file}/sub"], r"paths.cache_dir=.*which is a file"),
    (
        "dlrun",
        ["task=text_pairs", "dataset.path={tsv}", "dataset.encoding=nope"],
        r"dataset.encoding=nope: unknown encoding",
    ),
    # Resume: only what continues a run may change; the run's files stay as they were.
    ("dlrun", ["resume={missing}"], r"resume=.*: not a dlrun run directory"),
    ("dlrun", ["resume={file}"], r"resume=.*: not a dlrun run directory"),
    ("dlrun", ["resume={run}", "model=transformer_seq2seq"], r"model cannot change when a run"),
    ("dlrun", ["resume={run}", "dataset.locales=[en]"], r"dataset.locales cannot change"),
    ("dlrun", ["resume={run}", "optimizer.lr=1"], r"optimizer.lr cannot change"),
    ("dlrun", ["resume={run}", "trainer.seed=3"], r"trainer.seed cannot change"),
    ("dlrun", ["resume={run}", "experiment=dates_seed"], r"experiment cannot change"),
    ("dlrun", ["resume={run}", "~trainer.grad_clip"], r"trainer.grad_clip cannot change"),
    ("dlrun", ["resume={run}", "task=imdb"], r"task cannot change"),
    ("dlrun", ["resume={run}"], r"the run has already finished \(step 20 of trainer.max_steps"),
    ("dlrun", ["resume={run}", "hydra.run.dir=/tmp/x"], r"hydra.run.dir is set by resume"),
    ("dlrun", ["resume={run}", "trainer.max_steps=30", "trainer.max_steps=40"], r"given twice"),
    (
        "dlrun",
        ["resume={run_torn_ckpt}", "trainer.max_steps=30"],
        r"last.pt: not readable .*truncated, corrupt",
    ),
    ("dlrun", ["resume={run_evil_ckpt}", "trainer.max_steps=30"], r"last.pt: not readable"),
    ("dlrun", ["resume={run_hydra_cfg}", "trainer.max_steps=30"], r"hydra: unknown key"),
    # dlrun-stats
    ("dlrun-stats", ["--cfg", "job"], r"--cfg: dlrun-stats takes overrides only"),
    ("dlrun-stats", ["-m", "optimizer.lr=1,2"], r"-m: dlrun-stats takes overrides only"),
    (
        "dlrun-stats",
        ["task=text_pairs", "dataset.path={tsv_latin1}"],
        r"not utf-8 text \(byte 3 is 0xe9\); set dataset.encoding=NAME",
    ),
    ("dlrun-stats", ["task=text_pairs", "dataset.path={tsv_notab}"], r"line 2: .*found no tab"),
    ("dlrun-stats", ["task=text_pairs", "dataset.path={folder}"], r"no such file"),
    (
        "dlrun-stats",
        ["task=algebra", "dataset.source=course", "dataset.path={course_latin1}"],
        r"train.x: not utf-8 text \(byte",
    ),
    (
        "dlrun-stats",
        ["task=imdb", "dataset.path={tar_corrupt}"],
        r"not a readable aclImdb tarball .*download it again",
    ),
    (
        "dlrun-stats",
        ["task=imdb", "dataset.path={tar_truncated}"],
        r"not a readable aclImdb tarball",
    ),
    (
        "dlrun-stats",
        ["task=imdb", "dataset.path={imdb_latin1}"],
        r"train/pos/0_9.txt: not utf-8 text \(byte",
    ),
    (
        "dlrun-stats",
        ["task=imdb", "dataset.path={imdb_small}", "dataset.val_fraction=0.999"],
        r"dataset.val_fraction=0.999 of \d+ training reviews leaves too few for training",
    ),
    ("dlrun-stats", ["task=kmnist", "dataset.path={kmnist_32px}"], r"images are 32x32; KMNIST"),
    ("dlrun-stats", ["task=kmnist", "dataset.path={kmnist_labels}"], r"labels run from 0 to 12"),
    ("dlrun-stats", ["paths.cache_dir={file}"], r"paths.cache_dir=.* is a file"),
    # dlrun-predict
    ("dlrun-predict", ["{run}", "--batch-size", "0", "1 jan 2000"], r"--batch-size 0: must be"),
    ("dlrun-predict", ["{run}", "--batch-size", "-5", "1 jan 2000"], r"--batch-size -5"),
    ("dlrun-predict", ["{run}", "--bogus"], r"unrecognized arguments: --bogus"),
    ("dlrun-predict", ["{run}", "--device", "tpu", "x"], r"invalid choice: 'tpu'"),
    ("dlrun-predict", ["{missing}", "x"], r"no such run directory"),
    ("dlrun-predict", ["{file}", "x"], r"no such run directory"),
    ("dlrun-predict", ["{run_torn_best}", "x"], r"best.pt: not readable .*truncated, corrupt"),
    ("dlrun-predict", ["{run_evil_best}", "x"], r"best.pt: not readable"),
    ("dlrun-predict", ["{run_json_best}", "x"], r"best.pt: not readable"),
    ("dlrun-predict", ["{run_list_ckpt}", "x"], r"best.pt: not a dlrun checkpoint"),
    ("dlrun-predict", ["{run_torn_vocab}", "x"], r"vocab_src.json: not valid JSON"),
    ("dlrun-predict", ["{run_dict_vocab}", "x"], r"vocab_src.json: expected a JSON list, found"),
    ("dlrun-predict", ["{run_short_vocab}", "x"], r"weights do not fit the model"),
    ("dlrun-predict", ["{run_unknown_task}", "x"], r"unknown task 'nope'"),
    ("dlrun-predict", ["{run}", LONG], r"input 'xxx.* has 1,000,000 characters"),
    (
        "dlrun-predict",
        ["{run}", "\x1b[2J" * 50],
        r"input '\\x1b\[2[jJ].*\(200 characters\)' has 200",
    ),
    ("dlrun-predict", ["{imdb_torn_vocab}", "nice"], r"vocab.json: not valid JSON"),
    ("dlrun-predict", ["{imdb_dict_vocab}", "nice"], r"vocab.json: expected a JSON list"),
    # dlrun-report
    ("dlrun-report", ["{run_garbage_summary}"], r"summary.json: not valid JSON"),
    (
        "dlrun-report",
        ["{run_list_summary}"],
        r"summary.json: expected a JSON object, found a JSON list",
    ),
    ("dlrun-report", ["{run_bad_test}"], r"'test' should be a JSON object"),
    ("dlrun-report", ["{run_garbage_config}"], r"config.yaml: not valid YAML"),
    ("dlrun-report", ["{run_overrides_dict}"], r"overrides.yaml: expected a YAML list"),
    ("dlrun-report", ["{run_torn_middle_metrics}"], r"metrics.jsonl, line 2: not valid JSON"),
    ("dlrun-report", ["{folder}"], r"no dlrun runs under"),
    ("dlrun-report", ["{run}", "--bogus"], r"unrecognized arguments: --bogus"),
]


def _copy(finished: Path, dst: Path) -> Path:
    shutil.copytree(finished, dst)
    return dst


def hostile_files(tmp: Path, finished: dict[str, Path]) -> dict:
    """The paths the cases name, each written only when a case asks for it."""
    run = finished["dates"]

    def damaged(name: str, edit, source: Path = run) -> Path:
        copy = _copy(source, tmp / name)
        edit(copy)
        return copy

    def write(path: Path, data: bytes | str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def evil(path: Path) -> None:
        with path.open("wb") as f:
            pickle.dump({"model": Evil(tmp / "marker"), "config": {}}, f)

    def ckpt_with(path: Path, change) -> None:
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)

    def imdb_tree(root: Path, review: bytes | None = None) -> Path:
        tree = write_aclimdb(root, n_train=10, n_test=4)
        if review is not None:
            write(tree / "train" / "pos" / "0_9.txt", review)
        return tree

    makers = {
        "file": lambda: write(tmp / "a_file", "not a folder") or tmp / "a_file",
        "folder": lambda: (tmp / "empty_folder").mkdir() or tmp / "empty_folder",
        "missing": lambda: tmp / "no_such_run",
        "marker": lambda: tmp / "marker",
        "run": lambda: _copy(run, tmp / "run"),
        "imdb": lambda: _copy(finished["imdb"], tmp / "imdb"),
        "tsv": lambda: write(tmp / "p.tsv", "a\tb\n" * 20) or tmp / "p.tsv",
        "tsv_latin1": lambda: (
            write(tmp / "l.tsv", "caf\xe9\tcoffee\n".encode("latin-1") * 20) or tmp / "l.tsv"
        ),
        "tsv_notab": lambda: write(tmp / "n.tsv", "a\tb\nno tab here\n") or tmp / "n.tsv",
        "course_latin1": lambda: (
            [
                write(
                    tmp / "course" / "numbers__place_value" / f"{s}.{x}",
                    "caf\xe9\n".encode("latin-1"),
                )
                for s in ("train", "interpolate")
                for x in ("x", "y")
            ]
            and tmp / "course"
        ),
        "tar_corrupt": lambda: (
            write(tmp / "c.tar.gz", b"\x1f\x8b\x08" + os.urandom(4000)) or tmp / "c.tar.gz"
        ),
        "tar_truncated": lambda: _truncated_tar(tmp, imdb_tree(tmp / "t_src")),
        "imdb_latin1": lambda: imdb_tree(tmp / "il", "tr\xe8s bien".encode("latin-1")),
        "imdb_small": lambda: imdb_tree(tmp / "is"),
        "kmnist_32px": lambda: _kmnist_32px(tmp / "k32"),
        "kmnist_labels": lambda: _kmnist_labels(tmp / "klab"),
        "run_torn_ckpt": lambda: damaged(
            "torn_ckpt", lambda d: truncate(d / "checkpoints/last.pt")
        ),
        "run_evil_ckpt": lambda: damaged("evil_ckpt", lambda d: evil(d / "checkpoints/last.pt")),
        "run_hydra_cfg": lambda: damaged(
            "hydra_cfg",
            lambda d: ckpt_with(
                d / "checkpoints/last.pt",
                lambda c: c["config"].update(
                    hydra={"callbacks": {"x": {"_target_": "os.makedirs", "name": "m"}}}
                ),
            ),
        ),
        "run_torn_best": lambda: damaged(
            "torn_best", lambda d: truncate(d / "checkpoints/best.pt")
        ),
        "run_evil_best": lambda: damaged("evil_best", lambda d: evil(d / "checkpoints/best.pt")),
        "run_json_best": lambda: damaged(
            "json_best", lambda d: write(d / "checkpoints/best.pt", "[1, 2, 3]")
        ),
        "run_list_ckpt": lambda: damaged(
            "list_ckpt", lambda d: torch.save([1, 2], d / "checkpoints/best.pt")
        ),
        "run_torn_vocab": lambda: damaged("torn_vocab", lambda d: truncate(d / "vocab_src.json")),
        "run_dict_vocab": lambda: damaged(
            "dict_vocab", lambda d: write(d / "vocab_src.json", '{"a": 1}')
        ),
        "run_short_vocab": lambda: damaged(
            "short_vocab",
            lambda d: write(d / "vocab_src.json", json.dumps(["<pad>", "<sos>", "<eos>", "<unk>"])),
        ),
        "run_unknown_task": lambda: damaged(
            "unknown_task",
            lambda d: ckpt_with(
                d / "checkpoints/best.pt", lambda c: c["config"]["task"].update(name="nope")
            ),
        ),
        "imdb_torn_vocab": lambda: damaged(
            "imdb_torn_vocab", lambda d: truncate(d / "vocab.json"), finished["imdb"]
        ),
        "imdb_dict_vocab": lambda: damaged(
            "imdb_dict_vocab", lambda d: write(d / "vocab.json", "{}"), finished["imdb"]
        ),
        "run_garbage_summary": lambda: damaged(
            "garbage_summary", lambda d: write(d / "summary.json", "not json {")
        ),
        "run_list_summary": lambda: damaged(
            "list_summary", lambda d: write(d / "summary.json", "[1, 2]")
        ),
        "run_bad_test": lambda: damaged(
            "bad_test", lambda d: write(d / "summary.json", '{"status": "ok", "test": [1]}')
        ),
        "run_garbage_config": lambda: damaged(
            "garbage_config", lambda d: write(d / ".hydra/config.yaml", "a: [unclosed\n  b: {")
        ),
        "run_overrides_dict": lambda: damaged(
            "overrides_dict", lambda d: write(d / ".hydra/overrides.yaml", "a: 1\n")
        ),
        "run_torn_middle_metrics": lambda: damaged(
            "torn_middle_metrics",
            lambda d: write(d / "metrics.jsonl", '{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n'),
        ),
    }
    return makers


def _truncated_tar(tmp: Path, tree: Path) -> Path:
    import tarfile

    path = tmp / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname="aclImdb")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _kmnist_32px(folder: Path) -> Path:
    write_kmnist(folder, n_train=20, n_test=10)
    images = synthetic_images(20, 0)[0].repeat(2, axis=1).repeat(2, axis=2)[:, :32, :32]
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip_bytes(idx_bytes(images)))
    return folder


def _kmnist_labels(folder: Path) -> Path:
    import numpy as np

    write_kmnist(folder, n_train=20, n_test=10)
    labels = np.arange(20, dtype=np.uint8) % 13
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip_bytes(idx_bytes(labels)))
    return folder


def gzip_bytes(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw)


@pytest.mark.parametrize(("entry", "argv", "pattern"), CASES, ids=lambda v: str(v)[:40])
def test_hostile_case(entry, argv, pattern, tmp_path, finished, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(cache_dir))
    makers = hostile_files(tmp_path, finished)
    names = {n for a in argv for n in re.findall(r"\{(\w+)\}", a)}
    paths = {n: str(makers[n]()) for n in names}
    argv = [a.format(**paths) if "{" in a and "}" in a and len(a) < 1000 else a for a in argv]
    dirs = [Path(p) for p in paths.values() if Path(p).is_dir() and (Path(p) / ".hydra").is_dir()]
    before = {d: digest(d) for d in dirs}

    code, _, err = invoke(entry, argv)

    assert code == 2, err[:2000]
    assert_one_line(err, entry, pattern)
    for d, files in before.items():
        assert digest(d) == files, f"{d} changed"
    assert not (tmp_path / "marker").exists() and not Path("m").exists()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_resume_never_applies_a_run_directorys_hydra_overrides(finished, tmp_path, cache_dir):
    """A handed run directory whose overrides.yaml holds a Hydra callback cannot run it."""
    run = _copy(finished["dates"], tmp_path / "run dir with spaces")
    marker = tmp_path / "marker"
    (run / ".hydra" / "overrides.yaml").write_text(
        "- ++hydra.callbacks.evil._target_=builtins.open\n"
        f"- \"++hydra.callbacks.evil.file='{marker}'\"\n"
        "- ++hydra.callbacks.evil.mode=w\n"
        "- model=transformer_seq2seq\n"
    )
    hydra_files = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    done = run_cli(["dlrun", f"resume={run}", "trainer.max_steps=25"], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 25 and summary["model"] == "gru_seq2seq"
    # The run's record of how it was made is left as it was.
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files
    assert not (tmp_path / "outputs").exists()


def test_saved_interpolations_are_never_resolved(finished, tmp_path, monkeypatch):
    """Strings such as ${dlrun_unique:PATH} in a run's files stay strings (no directory made)."""
    marker = tmp_path / "marker"
    run = _copy(finished["dates"], tmp_path / "run")
    for name, key in (("best.pt", "paths"), ("last.pt", "dataset")):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        field = "output_dir" if key == "paths" else "start_date"
        ckpt["config"][key][field] = f"${{dlrun_unique:{marker}}}"
        torch.save(ckpt, run / "checkpoints" / name)
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("mode: max", f"mode: ${{dlrun_unique:{marker}}}"))
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("dlrun-predict", [str(run), "1 jan 2000"])
    assert code == 0, err
    code, out, err = invoke("dlrun-report", [str(run), "--out", str(tmp_path / "rep")])
    assert code == 0, err
    code, out, err = invoke("dlrun", [f"resume={run}", "trainer.max_steps=30"])
    assert code == 2 and "dataset.start_date" in err  # refused as data, never resolved
    assert not marker.exists()


def test_resume_equal_values_are_not_changes(finished, tmp_path, monkeypatch, cache_dir):
    """Pasting the original command after resume= only refuses keys whose value changes."""
    from dlrun.plan.command import plan_command

    run = _copy(finished["dates"], tmp_path / "run")
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(cache_dir))
    argv = plan_command([f"resume={run}", *merged(*DATES, "trainer.max_steps=30")], conf_dir()).argv
    assert f"hydra.run.dir={run}" in argv and "trainer.max_steps=30" in argv
    assert not any(a.startswith("dataset.") for a in argv)  # equal values: not passed on


def test_sweep_validates_a_presets_params_before_any_job(tmp_path):
    """hydra.sweeper.params of an experiment are checked like the command line's."""
    from dlrun.plan.command import plan_command

    conf = shutil.copytree(conf_dir(), tmp_path / "conf")
    (conf / "experiment" / "bad_lr.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      optimizer.lr: 1e-3,-2\n"
    )
    with pytest.raises(UserError, match=r"sweep value optimizer.lr=-2: .*must be > 0"):
        plan_command(["-m", "experiment=bad_lr", *DATES], conf)
    plan_command(["-m", "experiment=bad_lr", *DATES, "optimizer.lr=1e-3,1e-2"], conf)  # CLI wins


def test_torn_metrics_line_is_dropped_on_resume(tmp_path):
    from dlrun.engine.writers import JsonlWriter
    from dlrun.rundir.read import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    JsonlWriter(path, keep_until_step=2).close()
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    assert path.read_text().endswith("}\n")


def test_user_error_before_the_first_step_leaves_no_checkpoints(tiny_cfg, tmp_path, monkeypatch):
    from dlrun.tasks.seq2seq import Seq2SeqTask

    def loss(self, model, batch):
        raise UserError("a mistake found at the first step")

    monkeypatch.setattr(Seq2SeqTask, "loss", loss)
    with pytest.raises(UserError, match="first step"):
        run(tiny_cfg("trainer.eval_at_start=true"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


# -- the data cache ----------------------------------------------------------------------------


def test_damaged_cache_entries_are_rebuilt(tiny_cfg, tmp_path, caplog):
    from dlrun.plan.config import validate
    from dlrun.tasks.dates import DatesTask

    data = validate(tiny_cfg())
    first = DatesTask(data)
    first.prepare(tmp_path)
    (pairs,) = tmp_path.rglob("pairs.json")
    for damage in (lambda p: p.write_bytes(p.read_bytes()[:-100]), lambda p: p.write_text("[")):
        damage(pairs)
        again = DatesTask(data)
        again.prepare(tmp_path)
        assert again.texts == first.texts
        assert "is damaged" in caplog.text and "rebuilding it" in caplog.text
        caplog.clear()


def test_damaged_imdb_cache_is_rebuilt(tiny_cfg, tmp_path, caplog):
    from dlrun.plan.config import validate
    from dlrun.tasks.imdb import ImdbTask

    data = validate(tiny_cfg("task=imdb"))
    ImdbTask(data).prepare(tmp_path)
    (tensors,) = tmp_path.rglob("data.pt")
    tensors.write_bytes(tensors.read_bytes()[:200])
    task = ImdbTask(data)
    task.prepare(tmp_path)
    assert task.size("train") > 0 and "rebuilding it" in caplog.text


def test_cache_builds_leave_no_temporary_folders(tmp_path):
    from dlrun.data.cache import cached

    abandoned = tmp_path / ".k.999999999.abc"  # a build whose process is gone
    abandoned.mkdir(parents=True)

    def interrupted(folder: Path) -> None:
        (folder / "part").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached(tmp_path, "k", interrupted, lambda f: None)
    # Only the entry's lock file stays (empty of data; the lock died with its holder).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.lock"]
    value, built = cached(tmp_path, "k", lambda f: (f / "x").write_text("1"), lambda f: 7)
    assert (value, built) == (7, True)
    assert cached(tmp_path, "k", lambda f: None, lambda f: (f / "x").read_text()) == ("1", False)


# -- signals -------------------------------------------------------------------------------------

SIGNAL_AT = """
import signal, sys
from dlrun.cli import train
from {module} import {owner} as owner
original = owner.{method}
def patched(*args, **kwargs):
    signal.raise_signal(signal.{signal})
    return original(*args, **kwargs)
owner.{method} = patched
sys.argv = ["dlrun", *sys.argv[1:]]
train.main()
"""


@pytest.mark.parametrize(
    ("where", "module", "owner", "method", "sig", "code"),
    [
        ("data", "dlrun.tasks", "dates", "generate", "SIGINT", 130),
        pytest.param(  # 9 s: the default suite stays under 10 minutes
            *("final test", "dlrun.engine.trainer", "Trainer", "evaluate", "SIGTERM", 143),
            marks=pytest.mark.slow,
        ),
        ("plots", "dlrun.engine", "plots", "plot_curves", "SIGINT", 130),
    ],
)
def test_signals_anywhere_end_with_one_line(
    where, module, owner, method, sig, code, tmp_path, cache_dir
):
    script = SIGNAL_AT.format(module=module, owner=owner, method=method, signal=sig)
    if where == "final test":  # evaluations during training: let the first one pass
        script = script.replace(
            "def patched(*args, **kwargs):\n",
            "calls = []\ndef patched(*args, **kwargs):\n    calls.append(1)\n"
            "    if len(calls) < 3: return original(*args, **kwargs)\n",
        )
    env = {**os.environ, "DLRUN_CACHE_DIR": str(tmp_path / "fresh_cache")}
    done = subprocess.run(
        [sys.executable, "-c", script, *DATES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        # A shell's background job (`pytest &`) ignores SIGINT, and its children inherit
        # that: the command under test gets Ctrl-C's default, as a terminal's would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.returncode == code, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dlrun: stopped by {sig}"), done.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    leftovers = [p for p in (tmp_path / "fresh_cache").rglob(".*") if p.is_dir()]
    assert leftovers == []  # no temporary cache folder left behind
    if where == "final test":  # trained, not tested: the printed command finishes it
        assert f"resume with: dlrun resume={run_dir}" in last
        done = run_cli(["dlrun", f"resume={run_dir}"], tmp_path, tmp_path / "fresh_cache")
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["steps"] == 20 and summary["test"]


def test_torchrun_user_error_is_printed_once(tmp_path, cache_dir):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = run_cli(
        [*torchrun, "--nproc_per_node=2", "-m", "dlrun.train", "optimizer.lr=-1"],
        tmp_path,
        cache_dir,
    )
    assert done.returncode != 0
    assert done.stderr.count("dlrun: error: invalid config: optimizer.lr=-1") == 1


# -- a property: any override of real keys with hostile values -----------------------------

KEYS = [
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.betas",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.eval_every",
    "trainer.grad_clip",
    "trainer.patience",
    "trainer.stop_at",
    "trainer.seed",
    "dataset.batch_size",
    "dataset.train_size",
    "dataset.locales",
    "model.hidden_size",
    "model.dropout",
    "decode.beam_size",
    "device.threads",
    "scheduler.warmup_steps",
    "trainer.max_steps.deeper",
    "trainer.nope",
    "model",
    "optimizer",
    "device",
    "task",
]
BAD = ["-1", "0", "1", "1e-3", "inf", "-inf", "nan", "null", "true", "abc", "[1,2]", "[]"]
BAD += ["1e400", "", "'a b'", "${oc.env:HOME}", "1,2", "[inf]", "{a: 1}", "\x1b[2J", "'\n'"]


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_any_override_of_real_keys_is_valid_or_one_line():
    """dlrun's gate either accepts a command line or refuses it with one line (exit 2)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from dlrun.plan.command import plan_command

    value = st.one_of(
        st.sampled_from(BAD),
        st.integers(-(10**12), 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=12),
    )
    override = st.tuples(st.sampled_from(KEYS), value).map(lambda kv: f"{kv[0]}={kv[1]}")

    @settings(
        max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(st.lists(override, min_size=1, max_size=3, unique_by=lambda o: o.split("=")[0]))
    def check(argv):
        try:
            plan_command(
                [*argv, "device=cpu"] if not any(a.startswith("device") for a in argv) else argv,
                conf_dir(),
            )
        except UserError as exc:
            message = str(exc)
            assert "\n" not in message and 0 < len(message) < 600, message[:800]
            assert "\x1b" not in message

    check()
