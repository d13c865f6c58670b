"""Provenance: summary.json records the code's git commit, the versions and a fingerprint
of the data read; dlrun-report --provenance shows them (issue 27, item 5)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg

from dlrun import __version__
from dlrun.cli.report import main as report_main
from dlrun.engine import provenance
from dlrun.engine.provenance import code_state, fingerprint, short
from dlrun.engine.run import run

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false"]


def refuse(self, *args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_data_fingerprint_by_content_and_by_stats(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.txt").write_text("one")
    (folder / "y.csv").write_text("a,b\n1,2\n")
    first = fingerprint(folder)
    assert (first["files"], first["bytes"], first["digest_of"]) == (2, 11, "contents")
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, copy_function=shutil.copy)  # new modification times
    assert fingerprint(copy)["digest"] == first["digest"]  # the same data, anywhere
    (copy / "a" / "x.txt").write_text("two")
    assert fingerprint(copy)["digest"] != first["digest"]
    assert fingerprint(folder / "y.csv")["files"] == 1
    assert fingerprint(tmp_path / "nothing") == {"path": str(tmp_path / "nothing"), "missing": True}
    monkeypatch.setattr(Path, "stat", refuse)  # a file gone or unreadable: never an error
    assert fingerprint(folder)["unreadable"] == "PermissionError: Permission denied"
    monkeypatch.undo()
    monkeypatch.setattr(provenance, "HASH_LIMIT", 5)  # big data: names, sizes, times only
    big = fingerprint(folder)
    assert big["digest_of"] == "names, sizes and modification times"
    os.utime(folder / "y.csv", ns=(0, 10**18))  # the same bytes, touched
    touched = fingerprint(folder)
    assert touched["digest"] != big["digest"] and touched["bytes"] == big["bytes"]


def test_code_state_of_a_git_checkout(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.fail("git is needed on the test machine")
    package = tmp_path / "repo" / "src" / "prov_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("X = 1\n")
    repo = tmp_path / "repo"
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "one"], check=True)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "prov_pkg", raising=False)
    __import__("prov_pkg")
    assert code_state("prov_pkg") == {"path": str(package), "commit": head, "dirty": False}
    (package / "__init__.py").write_text("X = 2\n")
    assert code_state("prov_pkg")["dirty"] is True
    (repo / "notes.txt").write_text("untracked files do not count")
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qam", "two"], check=True)
    assert code_state("prov_pkg")["dirty"] is False
    shutil.rmtree(repo / ".git")  # an installed copy: where it is, no commit
    assert code_state("prov_pkg") == {"path": str(package)}
    namespace = tmp_path / "ns" / "prov_ns"  # no __init__.py: a namespace package
    namespace.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(namespace.parent))
    monkeypatch.delitem(sys.modules, "prov_ns", raising=False)
    __import__("prov_ns")
    assert code_state("prov_ns") == {"path": str(namespace)}


def test_a_run_records_where_it_came_from(cache_dir, corpora, tmp_path, capsys):
    cfg = make_cfg(cache_dir, "task=tabular", "trainer.max_steps=5")
    run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    origin = summary["provenance"]
    assert origin["python"] == platform.python_version()
    assert (origin["torch"], origin["dlrun"]) == (torch.__version__, __version__)
    assert origin["libraries"]["torch"] == torch.__version__
    # what the run's process imported, not all there is installed
    assert ("mlflow" in origin["libraries"]) == ("mlflow" in sys.modules)
    assert set(origin["code"]) == {"dlrun"}
    (data,) = origin["data"].values()
    assert data == fingerprint(corpora["tabular"])
    assert list(origin["data"]) == ["dataset.path"]
    # dlrun-report shows the commit, versions and data digest of each run
    capsys.readouterr()
    report_main([str(tmp_path / "run"), "--provenance", "--out", str(tmp_path / "report")])
    table = capsys.readouterr().out
    header, _, row = table.splitlines()[:3]
    assert "| commit | python | torch | data |" in header
    shown = short(origin)
    assert row.endswith(
        f"| {shown['commit']} | {platform.python_version()} | {torch.__version__} "
        f"| {data['digest']} |"
    )


def test_a_generated_data_set_reads_no_files(cache_dir, tmp_path):
    cfg = make_cfg(cache_dir, "task=dates", "trainer.max_steps=2")
    run(cfg, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["provenance"]["data"] == {}


def test_a_handed_summary_of_any_shape_shows(tmp_path):
    assert short({"code": [1], "data": {"x": 3}, "python": None}) == {
        "commit": "",
        "python": "None",
        "torch": "",
        "data": "missing",
    }
    assert short({"code": {"dlrun": {"commit": "0123456789abc", "dirty": True}}})["commit"] == (
        "0123456789+dirty"
    )


def test_libraries_a_run_used_in_another_process_are_recorded():
    from importlib import metadata

    from dlrun.engine.provenance import library_versions

    # logger=mlflow imports MLflow only in the trackers' side process
    assert library_versions(["dlrun"], ["mlflow"])["mlflow"] == metadata.version("mlflow")
