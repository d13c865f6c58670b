"""A real machine's faults: two writers at once, full and read-only disks, kill -9.

Each case asserts the exit status, ONE line on stderr with no traceback, that no
temporary file is left behind and that a finished run's files stay byte-identical.
Full disks and read-only folders are real: a small tmpfs and a read-only bind mount
(root only, as in CI). Other processes holding a lock are real processes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from test_hostile import DATES, _finished_run, assert_one_line, digest

from dlrun.errors import UserError, os_problem
from dlrun.rundir import lock
from dlrun.rundir.write import atomic_write, remove_abandoned, write_text_atomic

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def done(tmp_path_factory, cache_dir) -> Path:
    """A finished tiny dates run (never modified: cases work on it read-only or copy it)."""
    return _finished_run(tmp_path_factory.mktemp("faults"), cache_dir, DATES)


def dlrun(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """``dlrun`` in a process of its own, as a user runs it (in-process, after
    test_algebra's spawned workers, pytest's captured stderr was found closed; not
    understood yet)."""
    done = run_cli(["dlrun", *argv], cwd, cwd / "cache")
    return done.returncode, done.stdout, done.stderr


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if re.search(r"\.tmp\d+$|^\.\w+\.\d+\.", p.name)]


class Holder:
    """Another process that holds ``folder``'s lock, as a dlrun writing there would."""

    def __init__(self, folder: Path):
        code = textwrap.dedent(
            f"""
            import sys, time
            sys.argv = ["dlrun", "task=dates", "(the other writer)"]
            from dlrun.rundir import lock
            lock.hold({str(folder)!r}, "x", "y")
            print("held", flush=True)
            time.sleep(120)
            """
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder():
    started: list[Holder] = []

    def start(folder: Path) -> Holder:
        started.append(Holder(folder))
        return started[-1]

    yield start
    for h in started:
        h.kill()


# -- one writer: locks ---------------------------------------------------------------------


def test_a_run_directory_in_use_is_refused(tmp_path, holder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = holder(tmp_path / "run")
    code, _, err = dlrun([*DATES, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert code == 2
    line = assert_one_line(err, "dlrun", r"run directory .*run is in use by process \d+")
    assert f"process {other.proc.pid} (dlrun task=dates (the other writer)" in line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".dlrun.lock"]


def test_resume_of_a_run_in_use_is_refused_and_changes_nothing(done, tmp_path, holder):
    other = holder(done)
    before = digest(done)
    code, _, err = dlrun([f"resume={done}", "trainer.max_steps=40"], tmp_path)
    assert code == 2
    pattern = rf"run directory .* in use by process {other.proc.pid} .*then resume it"
    assert_one_line(err, "dlrun", pattern)
    other.kill()
    assert digest(done) == before


def test_a_lock_dies_with_its_process(tmp_path, holder):
    other = holder(tmp_path)
    assert lock.holder(tmp_path).startswith(f"process {other.proc.pid} ")
    other.proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup ran
    other.proc.wait()
    assert lock.holder(tmp_path) is None
    lock.hold(tmp_path, "folder", "how")  # taken over at once
    try:
        assert lock.holder(tmp_path) is None  # our own lock: nobody else's
    finally:
        lock.release(tmp_path)


@pytest.mark.parametrize("kind", ["finished", "checkpoints"])
def test_a_new_run_never_rewrites_a_run_directory(done, tmp_path, kind, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    target = done
    if kind == "checkpoints":  # a run that trained and stopped: resumable, not finished
        target = tmp_path / "stopped"
        shutil.copytree(done, target)
        (target / "summary.json").write_text('{"status": "interrupted"}\n')
    before = digest(target)
    code, _, err = dlrun([*DATES, f"hydra.run.dir={target}"], tmp_path)
    assert code == 2
    line = assert_one_line(err, "dlrun", r"already holds a .*never rewritten")
    assert ("resume=" in line) == (kind == "checkpoints")
    assert digest(target) == before  # .hydra/ included


def test_a_sweep_folder_in_use_is_refused(tmp_path, holder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    holder(tmp_path / "sweep")
    argv = ["-m", *DATES, "optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    code, _, err = dlrun(argv, tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"sweep folder .*sweep is in use by process \d+")
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [".dlrun.lock"]


def test_a_cache_entry_waits_for_its_builder(tmp_path):
    """The second builder of one cache entry waits until the first lets go."""
    path = tmp_path / ".entry.lock"
    code = textwrap.dedent(
        f"""
        import time
        from dlrun.rundir import lock
        with lock.wait_for(__import__("pathlib").Path({str(path)!r}), "entry"):
            print("held", flush=True)
            time.sleep(1.5)
        """
    )
    first = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "held"
    start = time.monotonic()
    with lock.wait_for(path, "entry"):
        waited = time.monotonic() - start
    first.wait()
    assert waited > 0.5


# -- one writer: failed writes ---------------------------------------------------------------


@pytest.fixture
def mounted(tmp_path):
    """mount(kind): a 300 KB tmpfs ("full") or a read-only bind mount ("ro") in tmp_path."""
    if not ROOT:
        pytest.skip("mounting a tmpfs or a read-only folder needs root (CI runs as root)")
    points = []

    def mount(kind: str) -> Path:
        point = tmp_path / f"mnt_{kind}_{len(points)}"
        point.mkdir()
        if kind == "full":
            cmd = ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(point)]
        else:
            source = tmp_path / f"src_{len(points)}"
            (source / "cache").mkdir(parents=True)
            cmd = ["mount", "--bind", "-o", "ro", str(source), str(point)]
        subprocess.run(cmd, check=True)
        points.append(point)
        return point

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, mounted, cache_dir):
    disk = mounted("full")
    # A subprocess: the tmpfs fills at the first checkpoint (weights are ~0.8 MB).
    done = run_cli(["dlrun", *DATES, f"hydra.run.dir={disk / 'run'}"], tmp_path, cache_dir)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.search(r"dlrun: error: .*run/\S+: the disk is full: free some space", errors[0])
    assert temporaries(disk) == []


@pytest.mark.parametrize(
    "key", ["hydra.run.dir={ro}/run", "paths.output_dir={ro}/out", "paths.cache_dir={ro}/cache"]
)
def test_a_read_only_folder_is_one_line(tmp_path, mounted, key, monkeypatch):
    ro = mounted("ro")
    monkeypatch.chdir(tmp_path)
    code, _, err = dlrun([*DATES, key.format(ro=ro)], tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"is not writable; choose another")


def test_a_run_directory_under_a_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    code, _, err = dlrun([*DATES, f"hydra.run.dir={tmp_path / 'file' / 'run'}"], tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"is under .*file, which is a file, not a folder")


@pytest.mark.parametrize(
    "number, fix",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "not permitted"),
        (errno.ENOTDIR, "a file is where a folder should be"),
        (errno.EISDIR, "a folder is where a file should be"),
        (errno.EEXIST, "something is in the way"),
    ],
)
def test_a_failed_write_names_the_file_meant_and_leaves_no_temporary(tmp_path, number, fix):
    target = tmp_path / "summary.json"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(number, os.strerror(number), str(tmp))

    with pytest.raises(OSError) as caught:
        atomic_write(target, fail)
    assert caught.value.filename == str(target)
    problem = os_problem(caught.value)
    assert problem.startswith(f"{target}: ") and fix in problem
    assert list(tmp_path.iterdir()) == []


def test_an_unexplained_os_error_stays_a_bug():
    assert os_problem(OSError(errno.EIO, "Input/output error", "/x")) is None


def test_abandoned_temporary_files_are_removed_by_the_next_writer(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    dead = tmp_path / "checkpoints" / ".last.pt.tmp999999999"
    ours = tmp_path / f".summary.json.tmp{os.getpid()}"
    for p in (dead, ours):
        p.write_bytes(b"torn")
    write_text_atomic(tmp_path / "kept.txt", "kept")
    assert remove_abandoned(tmp_path) == [dead]
    assert ours.exists() and (tmp_path / "kept.txt").read_text() == "kept"


# -- a mistake in the data leaves no run directory (issue 28) --------------------------------


def _table(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "t.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["task=tabular", "dataset.path={t}", "dataset.target=nope"], r"no column 'nope'"),
        (["task=tabular", "dataset.path={gap}", "dataset.target=y"], r"missing value"),
        (["task=text_pairs", "dataset.path={t}"], r"tab"),
    ],
)
def test_a_mistake_in_the_data_leaves_no_run_directory(tmp_path, args, pattern, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 3},{i / 10},{i % 2}\n" for i in range(30))
    paths = {
        "t": _table(tmp_path, "a,b,y\n" + rows),
        "gap": _table(tmp_path / "gap", "a,b,y\n1,,0\n" + rows),
    }
    argv = [a.format(**paths) for a in [*TINY, *args]]
    code, _, err = dlrun(argv, tmp_path)
    assert code == 2
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))


def test_a_mistake_in_the_data_keeps_a_folder_the_user_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    table = _table(tmp_path, "a,y\n1,0\n2,1\n")
    code, _, err = dlrun(
        [
            *TINY,
            "task=tabular",
            f"dataset.path={table}",
            "dataset.target=nope",
            f"hydra.run.dir={mine}",
        ],
        tmp_path,
    )
    assert code == 2 and "no column 'nope'" in err
    assert (mine / "notes.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    code, _, _ = dlrun(
        [
            *TINY,
            "task=tabular",
            f"dataset.path={table}",
            "dataset.target=nope",
            f"hydra.run.dir={fresh}",
        ],
        tmp_path,
    )
    assert code == 2 and not fresh.exists()


# -- kill -9 ----------------------------------------------------------------------------------


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_kill_9_in_training_then_resume(tmp_path, cache_dir):
    """A run killed with SIGKILL (no handler runs) after its first checkpoint, with a torn
    temporary checkpoint beside it: the resume continues without a traceback and removes
    the temporary file; the lock of the killed process is gone with it."""
    run_dir = tmp_path / "run"
    kept = [a for a in DATES if not a.startswith(("trainer.max_steps=", "trainer.eval_every="))]
    argv = [*kept, "trainer.max_steps=100000", "trainer.eval_every=5"]
    env = {**os.environ, "DLRUN_CACHE_DIR": str(cache_dir)}
    dlrun = str(Path(sys.executable).with_name("dlrun"))
    proc = subprocess.Popen(
        [dlrun, *argv, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()
    _, err = proc.communicate()
    assert (run_dir / "checkpoints" / "last.pt").exists(), err.decode()[-2000:]
    torn = run_dir / "checkpoints" / f".last.pt.tmp{proc.pid}"
    torn.write_bytes(b"PK\x03\x04 torn")
    assert lock.holder(run_dir) is None  # its lock died with it
    resumed = run_cli(["dlrun", f"resume={run_dir}", "trainer.max_steps=30"], tmp_path, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    assert not torn.exists() and temporaries(run_dir) == []
    assert '"status": "ok"' in (run_dir / "summary.json").read_text()


# -- nothing in a folder someone hands you directs I/O ----------------------------------------


def test_a_resume_sends_nothing_to_a_store_its_checkpoint_names(done, tmp_path):
    """A handed run whose checkpoint config chose MLflow at some store: a plain resume
    logs nowhere; the store is never created."""
    import shutil

    import torch

    run_dir = tmp_path / "handed"
    shutil.copytree(done, run_dir)
    store = tmp_path / "elsewhere"
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["config"]["logger"] = {
        "mlflow": {
            "tracking_uri": f"sqlite:///{store}/mlflow.db",
            "experiment": "x",
            "log_checkpoints": True,
        },
    }
    torch.save(ckpt, last)
    code, _, err = dlrun([f"resume={run_dir}", "trainer.max_steps=25"], tmp_path)
    assert code == 0, err[-2000:]
    assert not store.exists()
    assert not (run_dir / "trackers.json").exists()


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_a_sweep_folder_never_chooses_a_tracking_store(tmp_path, monkeypatch):
    """A sweep folder's trackers.json naming an MLflow store is ignored by a sweep whose
    command chose no logger: the store is never opened or created."""
    import json

    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    store = tmp_path / "elsewhere"
    record = {"mlflow": {"id": "abc", "tracking_uri": f"sqlite:///{store}/mlflow.db"}}
    (sweep / "trackers.json").write_text(json.dumps(record))
    code, _, err = dlrun(["-m", *DATES, "optimizer.lr=1e-3", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert code == 0, err[-2000:]
    assert not store.exists()
    assert json.loads((sweep / "trackers.json").read_text()) == record


def test_a_folder_name_with_an_interpolation_is_refused(done, tmp_path):
    import shutil

    run_dir = tmp_path / "x${oc.env:HOME}"
    shutil.copytree(done, run_dir)
    before = digest(run_dir)
    code, _, err = dlrun([f"resume={run_dir}", "trainer.max_steps=25"], tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"a folder name with '\$\{' cannot hold a run")
    assert digest(run_dir) == before


def test_a_log_file_that_cannot_be_opened_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    log_file = "hydra.job_logging.handlers.file.filename=" + str(tmp_path / "file" / "x.log")
    code, _, err = dlrun([*DATES, log_file], tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"x\.log: a file is where a folder should be|cannot open the log")


# -- bounded reading ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_deeply_nested_files_are_one_line(tmp_path, kind):
    from dlrun.rundir.read import read_json, read_yaml

    path = tmp_path / f"deep.{kind}"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested too deeply"):
        (read_json if kind == "json" else read_yaml)(path, expect=list)


def test_an_oversized_run_file_is_not_read(tmp_path, monkeypatch):
    from dlrun.rundir import read

    monkeypatch.setattr(read, "MAX_TEXT_BYTES", 1000)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(["word"] * 1000))
    with pytest.raises(UserError, match=r"more than the 0 MB a run directory's JSON file"):
        read.read_json(path, expect=list)


def test_a_checkpoint_claiming_an_absurd_size_is_one_line(done, tmp_path):
    """A checkpoint whose tensor claims 64 GiB in a file of a few bytes: refused at once,
    without allocating it."""
    import shutil
    import zipfile

    run_dir = tmp_path / "handed"
    shutil.copytree(done, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    import torch

    torch.save({"model": {"w": torch.zeros(4)}, "config": {}}, last)
    src = zipfile.ZipFile(last)
    pickled = next(n for n in src.namelist() if n.endswith("data.pkl"))
    huge = b"\x8a\x05\x00\x00\x00\x00\x04"  # pickle LONG1: 2**34
    data = src.read(pickled).replace(b"cpuq\x08K\x04t", b"cpuq\x08" + huge + b"t")
    data = data.replace(b"QK\x00K\x04\x85", b"QK\x00" + huge + b"\x85")
    blobs = {n: (data if n == pickled else src.read(n)) for n in src.namelist()}
    src.close()
    with zipfile.ZipFile(last, "w", compression=zipfile.ZIP_STORED) as out:
        for name, blob in blobs.items():
            out.writestr(name, blob)
    code, _, err = dlrun([f"resume={run_dir}", "trainer.max_steps=25"], tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"last\.pt: not readable \(.*size")


def test_a_run_saved_before_a_key_existed_resumes(done, tmp_path):
    """A checkpoint from an older dlrun lacks keys added since: they take their defaults."""
    import shutil

    import torch

    run_dir = tmp_path / "older"
    shutil.copytree(done, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["trainer"]["keep"]
    torch.save(ckpt, last)
    code, _, err = dlrun([f"resume={run_dir}", "trainer.max_steps=25"], tmp_path)
    assert code == 0, err[-2000:]


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e999"])  # nan: a missing value
def test_a_non_finite_number_in_a_column_names_the_cell(tmp_path, value):
    from dlrun.data.table import Encoder, read_table

    rows = "".join(f"{i},{i / 10},{i % 2}\n" for i in range(40))
    path = _table(tmp_path, f"a,b,y\n1,{value},0\n" + rows)
    table = read_table(path)
    with pytest.raises(UserError, match=r"t\.csv, line 2, column 'b': .* is not a finite number"):
        Encoder.fit(table, np.arange(41), ["a", "b"], impute=False)


# -- folder walks: bounded depth, symlink loops ------------------------------------------------


def _png(path: Path, width: int, height: int, body: bytes | None = None) -> Path:
    """A PNG file whose header claims ``width`` x ``height`` (its pixels: ``body``, or a
    few zeros: a header-only claim is all a decompression bomb needs to be refused)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    pixels = body if body is not None else zlib.compress(b"\0" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def _small_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(path)


def _class_tree(root: Path) -> None:
    """Two class folders, each with what every walker looks for: an image, a text, a run,
    IMDB reviews."""
    for name in ("a", "b"):
        _small_png(root / name / "x.png")
        (root / name / "x.txt").write_text(f"a text of class {name}\n")
        (root / name / "run").mkdir()
        (root / name / "run" / "summary.json").write_text('{"status": "ok"}\n')
        for split, label in (("train", "pos"), ("test", "neg")):
            (root / name / split / label).mkdir(parents=True)
            (root / name / split / label / f"{len(name)}_8.txt").write_text("a review\n")


def _loop_to_parent(root: Path) -> None:
    (root / "a" / "sub").mkdir()
    (root / "a" / "sub" / "up").symlink_to("..")


def _loop_to_self(root: Path) -> None:
    (root / "a" / "self").symlink_to(".")


def _loop_to_root(root: Path) -> None:
    (root / "a" / "deep" / "er").mkdir(parents=True)
    (root / "a" / "deep" / "er" / "top").symlink_to(root)


def _two_folders_in_a_loop(root: Path) -> None:
    (root / "a" / "to_b").symlink_to(root / "b")
    (root / "b" / "to_a").symlink_to(root / "a")


def _dangling_and_looping_links(root: Path) -> None:
    (root / "a" / "gone").symlink_to(root / "nowhere")
    (root / "a" / "l1").symlink_to(root / "a" / "l2")
    (root / "a" / "l2").symlink_to(root / "a" / "l1")


def _runaway_tree(root: Path) -> None:
    deep = root / "a"
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("deep\n")


TREES = {
    "loop_to_parent": _loop_to_parent,
    "loop_to_self": _loop_to_self,
    "loop_to_root": _loop_to_root,
    "two_folders_in_a_loop": _two_folders_in_a_loop,
    "dangling_and_looping_links": _dangling_and_looping_links,
    "runaway_tree": _runaway_tree,
}


def _walk_images(root: Path) -> object:
    from dlrun.data.image_files import list_folder

    return list_folder(root)


def _walk_texts(root: Path) -> object:
    from dlrun.data.text import _read_class_folders

    return _read_class_folders(root, "utf-8")


def _walk_text_fingerprint(root: Path) -> object:
    from dlrun.tasks.text import _stat

    return _stat(root)


def _walk_reports(root: Path) -> object:
    from dlrun.report.runs import find_runs

    return find_runs([root])


def _walk_provenance(root: Path) -> object:
    from dlrun.engine.provenance import fingerprint

    found = fingerprint(root)
    if "unreadable" in found:
        raise UserError(found["unreadable"])
    return found


def _walk_abandoned(root: Path) -> object:
    return remove_abandoned(root)


def _walk_imdb(root: Path) -> object:
    from dlrun.data.text import read_aclimdb

    return read_aclimdb(root)


WALKS = {
    "image_class_folders": _walk_images,
    "text_class_folders": _walk_texts,
    "text_cache_key": _walk_text_fingerprint,
    "dlrun_report": _walk_reports,
    "data_fingerprint": _walk_provenance,
    "abandoned_temporaries": _walk_abandoned,
    "imdb_folder": _walk_imdb,
}


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("walk", WALKS)
def test_every_folder_walk_is_bounded(tmp_path, walk, tree):
    """Each walk over a hostile tree ends at once: a loop is skipped (each real folder is
    listed once), a runaway tree is one line naming the depth; never a hang, a
    RecursionError or a file listed twice."""
    root = tmp_path / "data"
    _class_tree(root)
    TREES[tree](root)
    start = time.monotonic()
    try:
        found = WALKS[walk](root)
    except UserError as exc:
        assert tree == "runaway_tree", exc
        message = str(exc)
        assert "\n" not in message and len(message) < 600
        assert re.search(r"more than 32 folders below .*data", message), message
    else:
        assert tree != "runaway_tree" or walk == "abandoned_temporaries" and found == []
        if walk == "dlrun_report":
            assert sorted(p.relative_to(root).as_posix() for p in found) == ["a/run", "b/run"]
        if walk == "image_class_folders":
            classes, names, _ = found
            assert classes == ["a", "b"] and len(names) == len(set(names))
    assert time.monotonic() - start < 5


def test_a_symlinked_class_folder_is_read_once(tmp_path):
    """A symlink to a folder is followed (data kept elsewhere), its loop is not."""
    from dlrun import walk

    elsewhere = tmp_path / "elsewhere"
    _small_png(elsewhere / "1.png")
    (elsewhere / "again").symlink_to(elsewhere)
    root = tmp_path / "data"
    root.mkdir()
    (root / "cat").symlink_to(elsewhere)
    _small_png(root / "dog" / "1.png")
    assert walk.class_folders(root, lambda p: p.suffix == ".png") == [
        ("cat", [root / "cat" / "1.png"]),
        ("dog", [root / "dog" / "1.png"]),
    ]


def test_removing_temporaries_never_follows_a_link_out_of_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    theirs = outside / ".notes.txt.tmp999999999"
    theirs.write_text("not ours to remove")
    run = tmp_path / "run"
    run.mkdir()
    (run / "link").symlink_to(outside)
    assert remove_abandoned(run) == []
    assert theirs.exists()


def test_a_live_writers_temporary_is_left_alone(tmp_path, holder):
    other = holder(tmp_path / "elsewhere")  # any live process
    live = tmp_path / f".summary.csv.tmp{other.proc.pid}"
    live.write_text("being written")
    assert remove_abandoned(tmp_path) == []
    other.kill()
    assert remove_abandoned(tmp_path) == [live]


# -- image pixels: a decompression bomb is refused before decoding ----------------------------


def _open_only(path: Path) -> None:
    from dlrun.data.image_files import open_image

    with open_image(path) as img:
        assert img.size == (100, 100)


def _decode_in_training(path: Path) -> None:
    from dlrun.data.image_files import _decode_chunk

    _, bad = _decode_chunk(([str(path)], 16, 1))
    if bad:
        raise UserError(bad[0][1])


def _predict_images(path: Path) -> None:
    from types import SimpleNamespace

    from dlrun.tasks.images import ImagesTask

    fake = SimpleNamespace(cfg=SimpleNamespace(dataset=SimpleNamespace(channels=1)), image_size=16)
    ImagesTask.encode(fake, [str(path)])


def _predict_kmnist(path: Path) -> None:
    from dlrun.tasks.kmnist import KmnistTask

    KmnistTask.encode(None, [str(path)])


def _choose_size(path: Path) -> None:
    from dlrun.data.image_files import choose_size

    side, measured = choose_size([str(path)])
    if not measured:
        raise UserError("no image measured")


@pytest.mark.parametrize(
    "reader", [_open_only, _decode_in_training, _predict_images, _predict_kmnist, _choose_size]
)
@pytest.mark.parametrize("claim", [(50_000, 50_000), (9_000, 9_000), (100, 100)])
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, reader, claim):
    """A PNG of a few bytes that claims 2.5 gigapixels (past Pillow's own limit) or 81
    megapixels (where Pillow only warns) is refused in one line naming the limit, with no
    warning and no memory taken; a small one is read."""
    import warnings
    import zlib

    body = zlib.compress(b"\0" * 101 * 100) if claim == (100, 100) else None
    path = _png(tmp_path / "bomb.png", *claim, body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        try:
            reader(path)
        except (UserError, ValueError) as exc:
            assert claim != (100, 100), exc
            message = str(exc)
            assert "\n" not in message
            if reader is not _choose_size:
                assert "67,108,864 pixels" in message and "MAX_PIXELS" in message, message
        else:
            assert claim == (100, 100)


# -- every writer: kill -9 mid-write, a full disk, a read-only folder, kill at random -----------

# name -> (the file it writes, Python that writes version ``n`` of it at ``path``): each
# of dlrun's writers, run in this process or in a child process that is killed.
WRITERS = {
    "json": ("summary.json", "write_json(path, {'n': n, 'pad': 'x' * 200_000})"),
    "text": ("summary.csv", "write_text_atomic(path, f'n,{n}\\n' + 'x' * 200_000 + '\\n')"),
    "figure": (
        "curves.png",
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "fig = plt.figure(figsize=(2 + n, 2))\nsave_figure(fig, path)",
    ),
    "checkpoint": (
        "last.pt",
        "import torch\nfrom dlrun.engine.checkpoint import save_atomic\n"
        "save_atomic({'n': n, 'w': torch.zeros(100_000)}, path)",
    ),
}
PRELUDE = "from dlrun.rundir.write import save_figure, write_json, write_text_atomic\n"
LIGHT = ["json", "text"]  # writers whose child process starts in a tenth of a second
HEAVY = [pytest.param(w, marks=pytest.mark.slow) for w in WRITERS if w not in LIGHT]


def _write(writer: str, path: Path, n: int) -> None:
    exec(PRELUDE + WRITERS[writer][1], {"path": path, "n": n})  # noqa: S102 - our own snippets


def _writer_process(writer: str, path: Path, n: int, env: dict | None = None, loop=False):
    code = PRELUDE + "import sys\nfrom pathlib import Path\npath = Path(sys.argv[1])\n"
    body = WRITERS[writer][1]
    if loop:
        code += "import itertools\nfor n in itertools.count():\n" + textwrap.indent(body, "    ")
    else:
        code += f"n = {n}\n{body}\n"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("writer", [*LIGHT, *HEAVY])
def test_kill_9_in_a_write_keeps_the_previous_file(tmp_path, writer):
    """A writer killed (SIGKILL, through the DLRUN_KILL_WRITING hook) after writing its
    temporary and before renaming it: the previous file is untouched, the temporary is
    abandoned, and the next writer removes it and writes."""
    from dlrun.rundir.write import KILL_ENV

    name = WRITERS[writer][0]
    path = tmp_path / name
    _write(writer, path, 0)
    before = path.read_bytes()
    proc = _writer_process(writer, path, 1, {KILL_ENV: name})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    left = tmp_path / f".{name}.tmp{proc.pid}"
    assert left.is_file() and path.read_bytes() == before
    assert remove_abandoned(tmp_path) == [left]
    _write(writer, path, 2)
    assert path.read_bytes() != before and temporaries(tmp_path) == []


@pytest.mark.parametrize("seed", range(10))
def test_kill_9_at_a_random_moment_never_tears_a_file(tmp_path, seed):
    """A process rewriting summary.json in a loop, killed at a random moment: the file is
    always a whole version (or not there yet), and what it left is removed."""
    import random

    path = tmp_path / "summary.json"
    proc = _writer_process("json", path, 0, loop=True)
    time.sleep(random.Random(seed).uniform(0.0, 0.4))
    proc.kill()
    proc.wait()
    if path.exists():
        data = json.loads(path.read_text())
        assert len(data["pad"]) == 200_000
    remove_abandoned(tmp_path)
    assert temporaries(tmp_path) == []


def _fill(disk: Path) -> None:
    """Fill the tmpfs ``disk`` to its last byte."""
    with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)


def _cache_entry(root: Path, n: int) -> None:
    from dlrun.data.cache import cached

    cached(root, "entry", lambda tmp: (tmp / "data.bin").write_bytes(b"\1" * 400_000), len)


@pytest.mark.parametrize("writer", [*WRITERS, "cache"])
@pytest.mark.parametrize("kind", ["full", "ro"])
def test_a_full_or_read_only_disk_is_one_line_for_every_writer(mounted, writer, kind):
    """Every writer on a full tmpfs or a read-only bind mount: an OSError that
    ``os_problem`` turns into one line naming a file of the disk and the fix; no temporary
    file or folder left behind."""
    disk = mounted(kind)
    if kind == "full":
        _fill(disk)
    target = disk / "cache" / (WRITERS[writer][0] if writer in WRITERS else "")
    with pytest.raises(OSError) as caught:
        if writer == "cache":
            _cache_entry(target, 1)
        else:
            _write(writer, target, 1)
    problem = os_problem(caught.value)
    assert problem is not None, caught.value
    assert problem.startswith(str(disk)) and "\n" not in problem
    assert ("disk is full" if kind == "full" else "read-only") in problem, problem
    assert temporaries(disk) == []


RACER = """
import sys, time
from pathlib import Path
from dlrun.errors import UserError
from dlrun.rundir import lock
while time.time() < float(sys.argv[2]):  # both start at one moment
    pass
try:
    lock.hold(Path(sys.argv[1]), "folder", "wait")
    print("held", flush=True)
    time.sleep(0.5)
except UserError as exc:
    print("refused:", exc, flush=True)
"""


@pytest.mark.parametrize("thing", ["run directory", "sweep folder"])
def test_two_processes_racing_for_one_folder_one_wins(tmp_path, thing):
    """Two writers start at the same moment on one run directory or sweep folder: one
    holds it, the other is refused in one line naming the winner."""
    folder = tmp_path / thing.replace(" ", "_")
    start = str(time.time() + 0.3)
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(folder), start], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=30)[0].decode().strip() for p in procs]
    assert sorted(o.split(":")[0] for o in outs) == ["held", "refused"], outs
    winner = procs[[o == "held" for o in outs].index(True)].pid
    (loser,) = [o for o in outs if o != "held"]
    assert f"in use by process {winner} " in loser and "\n" not in loser


def test_two_processes_racing_for_one_cache_entry_build_it_once(tmp_path):
    code = f"""
import sys, time
from pathlib import Path
from dlrun.data.cache import cached
while time.time() < float(sys.argv[1]):
    pass
def build(tmp):
    with open({str(tmp_path / "builds")!r}, "a") as f:
        f.write("built\\n")
    time.sleep(0.5)
    (tmp / "data.bin").write_bytes(b"x" * 1000)
value, _ = cached(Path({str(tmp_path / "cache")!r}), "entry", build,
                  lambda p: (p / "data.bin").read_bytes())
print(len(value))
"""
    start = str(time.time() + 0.5)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, start], stdout=subprocess.PIPE) for _ in "ab"
    ]
    outs = [p.communicate(timeout=30)[0].decode().strip() for p in procs]
    assert outs == ["1000", "1000"]
    assert (tmp_path / "builds").read_text() == "built\n"
    assert temporaries(tmp_path / "cache") == []


# -- kill -9 in a sweep's summary ---------------------------------------------------------------


@pytest.mark.slow  # a two-job sweep, a report and a refused rerun: about 30 s
def test_kill_9_in_a_sweeps_summary_then_report_and_rerun(tmp_path, cache_dir):
    """A sweep killed while writing summary.csv after its first job: ``dlrun-report`` on
    the folder rewrites the summary (of the job that ran) and removes the torn
    temporary; a rerun of the sweep into the folder is one line and changes nothing."""
    from dlrun.rundir.write import KILL_ENV

    sweep = tmp_path / "sweep"
    argv = ["dlrun", "-m", *DATES, "optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}"]
    killed = run_cli(argv, tmp_path, cache_dir, env={KILL_ENV: "summary.csv"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(temporaries(sweep)) == 1 and not (sweep / "summary.csv").exists()
    report = run_cli(["dlrun-report", str(sweep)], tmp_path, cache_dir)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Traceback" not in report.stderr and temporaries(sweep) == []
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 2 and ",ok," in rows[1]  # the header and the job that finished

    def files() -> dict[str, str]:  # a lock file names its latest holder: not a run's file
        return {k: v for k, v in digest(sweep).items() if not k.endswith(lock.LOCK_FILE)}

    before = files()
    rerun = run_cli(argv, tmp_path, cache_dir)
    assert rerun.returncode == 2
    assert_one_line(rerun.stderr, "dlrun", r"already holds a sweep's runs \(1\), whose files")
    assert files() == before


# -- the data a run began with ------------------------------------------------------------


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_resume_on_changed_data_is_refused_and_changes_nothing(tmp_path):
    """A resume (or a cross-validation's next fold) on data that changed since the run
    began would mix steps on two data sets: refused in one line; the same data resumes."""
    rows = "".join(f"{i % 7},{(i * 3) % 5},{'ab'[i % 2]}\n" for i in range(120))
    data = tmp_path / "t.csv"
    data.write_text("x,y,label\n" + rows)
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("trainer.max_steps=")]
    args = ["task=tabular", f"dataset.path={data}", "dataset.target=label", *tiny]
    code, _, err = dlrun([*args, "trainer.max_steps=10", f"hydra.run.dir={run_dir}"], tmp_path)
    assert code == 0, err
    before = digest(run_dir)
    data.write_text("x,y,label\n" + rows.replace(",a\n", ",b\n", 3))  # three labels changed
    code, _, err = dlrun([f"resume={run_dir}", "trainer.max_steps=20"], tmp_path)
    assert code == 2
    assert_one_line(err, "dlrun", r"dataset.path \(.*t.csv\) has other contents since the run")
    assert digest(run_dir) == before
    data.write_text("x,y,label\n" + rows)  # the original back: it resumes
    code, _, err = dlrun([f"resume={run_dir}", "trainer.max_steps=20"], tmp_path)
    assert code == 0, err
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 20


def test_a_report_is_never_written_into_a_run(done, tmp_path, capsys):
    """``dlrun-report RUN`` writes in RUN_report beside the run, not into it (whose files
    are the run's); an ``--out`` inside a run is refused in one line."""
    import shutil

    from dlrun.cli import report

    run = tmp_path / "run"
    shutil.copytree(done, run)
    before = digest(run)
    report.main([str(run)])
    assert f"in {tmp_path / 'run_report'}" in capsys.readouterr().out
    assert (tmp_path / "run_report" / "summary.csv").is_file() and digest(run) == before
    for out in (run, run / "sub"):
        with pytest.raises(SystemExit) as info:
            report.main([str(run), "--out", str(out)])
        err = capsys.readouterr().err
        assert info.value.code == 2
        assert_one_line(err, "dlrun-report", r"--out .*: inside a run directory, whose files")
    assert digest(run) == before
