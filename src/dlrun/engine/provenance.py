"""Where a run came from: its code's git commit, the versions it ran on, the data it read.

``provenance(cfg, data)`` is the ``provenance`` section of ``summary.json``; trackers get it
flattened as tags (``flat``). Everything here is cheap: two git commands, package
metadata, and one ``stat`` per data file (a content hash only for data up to
``HASH_LIMIT`` bytes). What cannot be found (no git, an installed wheel, a missing
file) is left out or ``None``, never an error: provenance must not fail a run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dlrun import walk
from dlrun.errors import UserError

HASH_LIMIT = 16 * 2**20  # data up to this size is hashed by content, larger by its files' stats
GIT_TIMEOUT_S = 5


def provenance(cfg, data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The code (git), versions and data of a run of ``cfg`` (a RunConfig): ``data`` is
    ``data_fingerprints`` of its files, taken when the run read them (``Task.data_read``)."""
    import torch

    from dlrun import __version__
    from dlrun.engine.trackers import chosen
    from dlrun.plan.config import to_dict
    from dlrun.registry import task_entry

    task_module = sys.modules[task_entry(cfg.task.name).obj.__module__]
    packages = dict.fromkeys(["dlrun", task_module.__name__.partition(".")[0]])
    trackers = chosen(to_dict(cfg))  # imported by the trackers' side process, not this one
    return {
        "code": {name: code_state(name) for name in packages},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dlrun": __version__,
        "libraries": library_versions(list(packages), trackers),
        "data": data,
    }


def code_state(package: str) -> dict[str, Any]:
    """Where ``package``'s code was loaded from and, in a git checkout, its commit and
    whether tracked files differed from it (``dirty``)."""
    module = sys.modules[package]
    where = getattr(module, "__file__", None)  # None: a namespace package, in __path__
    folder = Path(where).parent if where else Path(next(iter(module.__path__), "."))
    state: dict[str, Any] = {"path": str(folder)}
    commit = _git(folder, "rev-parse", "HEAD")
    if commit:
        # The whole checkout: its conf/ and scripts count as much as the package.
        changes = _git(folder, "status", "--porcelain", "--untracked-files=no")
        state.update(commit=commit, dirty=bool(changes))
    return state


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # no git here, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def library_versions(packages: list[str], elsewhere: Iterable[str] = ()) -> dict[str, str]:
    """Versions of the libraries the run used: the distributions ``packages`` (dlrun and a
    plugin task's) declare they need, any extra included, that this process imported or
    that the run used in another process (``elsewhere``: module names)."""
    from importlib import metadata

    by_module = metadata.packages_distributions()
    loaded = {name.partition(".")[0] for name in list(sys.modules)} | set(elsewhere)
    owners = {d for p in packages for d in by_module.get(p, [])} | {"dlrun"}
    wanted = set()
    for owner in owners:
        try:
            requires = metadata.requires(owner) or []
        except metadata.PackageNotFoundError:
            continue
        wanted |= {_canonical(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires}
    wanted |= {_canonical(d) for d in owners if d != "dlrun"}  # a plugin's own version
    found = {}
    for module in sorted(loaded & by_module.keys()):
        for dist in by_module[module]:
            if _canonical(dist) in wanted:
                with contextlib.suppress(metadata.PackageNotFoundError):
                    found[dist] = metadata.version(dist)
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def data_fingerprints(dataset: Any) -> dict[str, dict[str, Any]]:
    """A fingerprint of each file or folder the dataset names (its ``path`` and
    ``*_path`` keys), by key: generated data sets name none."""
    import dataclasses

    if dataclasses.is_dataclass(dataset) and not isinstance(dataset, type):
        fields = dataclasses.asdict(dataset)
    else:
        fields = dict(dataset)
    return {
        f"dataset.{key}": fingerprint(Path(value).expanduser())
        for key, value in fields.items()
        if (key == "path" or key.endswith("_path")) and isinstance(value, str)
    }


def fingerprint(path: Path) -> dict[str, Any]:
    """A file's or folder's files: how many, their bytes, the latest modification, and a
    ``digest``: SHA-256 of their contents when they total at most ``HASH_LIMIT`` bytes
    (the same data anywhere gives the same digest), else of their names, sizes and
    modification times (``digest_of`` says which)."""
    try:
        return _fingerprint(path)
    except OSError as exc:  # a file the run could read and this cannot, or one gone since
        return {"path": str(path), "unreadable": f"{type(exc).__name__}: {exc.strerror}"}
    except UserError as exc:  # a folder walk refused (too deep, unlistable)
        return {"path": str(path), "unreadable": str(exc)}


def _fingerprint(path: Path) -> dict[str, Any]:
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        # Hidden files (.DS_Store, ._* of a copy) are no task's data: left out.
        files = [(p.relative_to(path).as_posix(), p) for p in walk.files(path, hidden=False)]
    else:
        return {"path": str(path), "missing": True}
    stats = [(name, p.stat()) for name, p in files]
    total = sum(s.st_size for _, s in stats)
    digest = hashlib.sha256()
    by_content = total <= HASH_LIMIT
    for (name, st), (_, p) in zip(stats, files):
        digest.update(f"{name}\0{st.st_size}\0".encode())
        if by_content:
            with open(p, "rb") as f:
                for block in iter(functools.partial(f.read, 2**20), b""):
                    digest.update(block)
        else:
            digest.update(f"{st.st_mtime_ns}\0".encode())
    latest = max((s.st_mtime for _, s in stats), default=None)
    return {
        "path": str(path.resolve()),
        "files": len(stats),
        "bytes": total,
        "modified": None
        if latest is None
        else datetime.fromtimestamp(latest, timezone.utc).isoformat(timespec="seconds"),
        "digest": digest.hexdigest()[:16],
        "digest_of": "contents" if by_content else "names, sizes and modification times",
    }


def data_changes(then: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> str | None:
    """How the data named in ``now`` differ from ``then`` (both ``data_fingerprints``), or
    None. Contents hashed both times are compared by digest; larger data by their files'
    number and bytes only, since a copy (a cluster job staging its data) has new times."""
    for key, old in then.items():
        new = now.get(key)
        if new is None or "digest" not in old or "digest" not in new:
            continue  # not named any more, or unreadable: reading the data will say
        if old["digest_of"] == new["digest_of"] == "contents":
            if old["digest"] != new["digest"]:
                return f"{key} ({new['path']}) has other contents"
        elif (old["files"], old["bytes"]) != (new["files"], new["bytes"]):
            return (
                f"{key} ({new['path']}) has {new['files']:,} files of {new['bytes']:,} bytes, "
                f"where it had {old['files']:,} of {old['bytes']:,}"
            )
    return None


def flat(section: dict[str, Any], prefix: str = "provenance") -> dict[str, str]:
    """``section`` as ``{"provenance.code.dlrun.commit": "ab12..."}``: tags for trackers."""
    out = {}
    for key, value in section.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flat(value, name))
        else:
            out[name] = str(value)
    return out


def short(section: dict[str, Any]) -> dict[str, str]:
    """The few fields a report shows: commit (``+dirty``), Python, torch, the data's digests.

    ``section`` comes from a handed ``summary.json``: any shape is read, nothing raises."""
    code = _mapping(_mapping(section.get("code")).get("dlrun"))
    commit = str(code.get("commit") or "")
    data = _mapping(section.get("data")).values()
    return {
        "commit": commit[:10] + ("+dirty" if commit and code.get("dirty") else ""),
        "python": str(section.get("python", "")),
        "torch": str(section.get("torch", "")),
        "data": " ".join(str(_mapping(d).get("digest", "missing")) for d in data),
    }


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}
