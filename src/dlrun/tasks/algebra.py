"""Algebra: DeepMind mathematics modules (seed 001) as character-level seq2seq.

Three sources of the same data:

- ``generate``: the ``mathematics-dataset`` package, in worker processes with a
  fixed PYTHONHASHSEED, written into the cache in DeepMind's released layout;
- ``deepmind``: that released layout under ``dataset.path``
  (``train-easy/``, ``train-medium/``, ``train-hard/``, ``interpolate/``,
  ``extrapolate/``, one ``<module>.txt`` each, question and answer lines
  alternating);
- ``course``: the coursework layout, ``<module>/train.x``, ``train.y``,
  ``interpolate.x``, ``interpolate.y``, one sentence per line.

Splits: ``train`` and ``val`` (held out of the training files), ``test`` (the
interpolate files) and ``extrapolate`` where DeepMind defines one. A question
that occurs in a held-out split is removed from train.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

from dlrun.data.cache import cache_key, cached
from dlrun.data.text import read_text
from dlrun.errors import UserError
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS, closest
from dlrun.tasks.base import path_problems
from dlrun.tasks.seq2seq import Seq2SeqTask

# The modules of mathematics-dataset 1.0.1 (tests check these against the package;
# importing it takes seconds, too long for validating a command line).
MODULES = (
    "algebra__linear_1d algebra__linear_1d_composed algebra__linear_2d "
    "algebra__linear_2d_composed algebra__polynomial_roots algebra__polynomial_roots_composed "
    "algebra__sequence_next_term algebra__sequence_nth_term arithmetic__add_or_sub "
    "arithmetic__add_or_sub_in_base arithmetic__add_sub_multiple arithmetic__div "
    "arithmetic__mixed arithmetic__mul arithmetic__mul_div_multiple "
    "arithmetic__nearest_integer_root arithmetic__simplify_surd calculus__differentiate "
    "calculus__differentiate_composed comparison__closest comparison__closest_composed "
    "comparison__kth_biggest comparison__kth_biggest_composed comparison__pair "
    "comparison__pair_composed comparison__sort comparison__sort_composed "
    "measurement__conversion measurement__time numbers__base_conversion "
    "numbers__div_remainder numbers__div_remainder_composed numbers__gcd numbers__gcd_composed "
    "numbers__is_factor numbers__is_factor_composed numbers__is_prime numbers__is_prime_composed "
    "numbers__lcm numbers__lcm_composed numbers__list_prime_factors "
    "numbers__list_prime_factors_composed numbers__place_value numbers__place_value_composed "
    "numbers__round_number numbers__round_number_composed polynomials__add "
    "polynomials__coefficient_named polynomials__collect polynomials__compose "
    "polynomials__evaluate polynomials__evaluate_composed polynomials__expand "
    "polynomials__simplify_power probability__swr_p_level_set probability__swr_p_sequence"
).split()
EXTRAPOLATE_MODULES = (
    "algebra__polynomial_roots_big arithmetic__add_or_sub_big arithmetic__add_sub_multiple_longer "
    "arithmetic__div_big arithmetic__mixed_longer arithmetic__mul_big "
    "arithmetic__mul_div_multiple_longer comparison__closest_more comparison__kth_biggest_more "
    "comparison__sort_more measurement__conversion numbers__place_value_big "
    "numbers__round_number_big probability__swr_p_level_set_more_samples "
    "probability__swr_p_sequence_more_samples"
).split()
DIFFICULTIES = ["train-easy", "train-medium", "train-hard"]
# Problems per generation job: small, so that workers share even a slow module
# evenly; fixed, so that the data do not depend on the number of workers.
CHUNK = 100
GENERATOR_VERSION = 2


def extrapolate_modules(module: str) -> list[str]:
    """DeepMind's extrapolation counterparts of a module (e.g. comparison__sort_more)."""
    suffixes = ("", "_big", "_more", "_longer", "_more_samples")
    return [m for m in EXTRAPOLATE_MODULES if m in {module + s for s in suffixes}]


@dataclass(frozen=True)
class AlgebraDataConfig(Named):
    source: str = spec(choices=["generate", "deepmind", "course"])
    modules: list[str] = spec()
    path: str | None = spec()  # the deepmind or course layout's root folder
    difficulties: list[str] = spec()  # training files mixed in equal parts
    train_size: int = spec(ge=1)  # per module, before held-out questions are removed
    val_size: int = spec(ge=1)  # per module, held out of the training files
    test_size: int = spec(ge=1)  # per module, from interpolate
    # Per module, where DeepMind defines an extrapolation set (0 = none). Small by
    # default: generating comparison__sort_more takes about 1.75 s a problem here.
    extrapolate_size: int = spec(ge=0)
    seed: int = spec(ge=0)
    workers: int | None = spec(ge=1)  # generation processes; null = every core
    batch_size: int = spec(ge=1)
    max_src_len: int = spec(ge=1)  # DeepMind caps questions at 160 characters
    max_tgt_len: int = spec(ge=1)  # and answers at 30, + EOS


@TASKS.register("algebra", schema=AlgebraDataConfig)
class AlgebraTask(Seq2SeqTask):
    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg)
        d = cfg.dataset
        if not d.modules:
            problems.append(
                "dataset.modules: needs at least one module, e.g. [numbers__place_value]"
            )
        for module in d.modules:
            if module not in MODULES:
                guess = closest(module, MODULES)
                problems.append(
                    f"dataset.modules: unknown module '{module}'"
                    + (f" (did you mean '{guess}'?)" if guess else "; see mathematics_dataset")
                )
        for diff in d.difficulties:
            if diff not in DIFFICULTIES:
                problems.append(f"dataset.difficulties: '{diff}' is not one of {DIFFICULTIES}")
        if d.source == "course" and d.difficulties != DIFFICULTIES:
            problems.append("dataset.difficulties: the course layout has one train file per module")
        if d.batch_size > d.train_size:
            problems.append(
                f"dataset.batch_size={d.batch_size}: larger than dataset.train_size={d.train_size}"
            )
        return problems

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        d = cfg.dataset
        return _check_files(d) if d.source != "generate" else []

    def load_pairs(self, cache_dir: Path) -> dict[str, list[tuple[str, str]]]:
        d = self.cfg.dataset
        read = read_course if d.source == "course" else read_deepmind

        def read_all(root: Path) -> dict[str, dict[str, list[tuple[str, str]]]]:
            return {module: read(root, module, d) for module in d.modules}

        if d.source != "generate":
            files = read_all(Path(d.path).expanduser())
        else:
            key = {
                k: getattr(d, k)
                for k in (
                    "modules",
                    "difficulties",
                    "train_size",
                    "val_size",
                    "test_size",
                    "extrapolate_size",
                    "seed",
                )
            }
            files, _ = cached(
                Path(cache_dir).expanduser() / "algebra",
                cache_key(key, GENERATOR_VERSION),
                lambda tmp: generate(tmp, d),
                read_all,
            )
        labelled: dict[str, list[tuple[tuple[str, str], str]]] = {}
        for module in d.modules:
            for name, pairs in held_out_splits(files[module], d).items():
                labelled.setdefault(name, []).extend((pair, module) for pair in pairs)
        # Interleave the modules of a mixture, so any slice of train (train_subset) has them all.
        random.Random(d.seed).shuffle(labelled["train"])
        self.groups = {name: [m for _, m in rows] for name, rows in labelled.items()}
        return {name: [pair for pair, _ in rows] for name, rows in labelled.items()}


def held_out_splits(files: dict[str, list[tuple[str, str]]], d: AlgebraDataConfig):
    """train/val/test/extrapolate from one module's files; held-out questions leave train."""
    pool = list(files["train"])
    random.Random(d.seed).shuffle(pool)  # mixes the difficulties before val is taken
    out = {"test": files["interpolate"][: d.test_size]}
    if files.get("extrapolate") and d.extrapolate_size:
        out["extrapolate"] = files["extrapolate"][: d.extrapolate_size]
    held = {q for split in out.values() for q, _ in split}
    val: list[tuple[str, str]] = []
    train: list[tuple[str, str]] = []
    for q, a in pool:
        if q in held:
            continue
        if len(val) < d.val_size:
            val.append((q, a))
            held.add(q)
        elif len(train) < d.train_size:
            train.append((q, a))
    if len(val) > len(train):  # read from files (a generated pool fits train_size + val_size)
        raise UserError(
            f"dataset.val_size={d.val_size}: holds out more than half of the "
            f"{len(val) + len(train)} usable training questions of the module's files, too "
            "few left to train on; lower dataset.val_size"
        )
    return {"train": train, "val": val, **out}


def _check_files(d: AlgebraDataConfig) -> list[str]:
    if not d.path:
        return [
            f"dataset.path: required with dataset.source={d.source} (the folder that holds "
            "the data)"
        ]
    fix = f"give the folder that holds the dataset.source={d.source} files"
    if problems := path_problems("dataset.path", d.path, "folder", fix):
        return problems
    root = Path(d.path).expanduser()
    missing = []
    for module in d.modules:
        if module not in MODULES:
            continue
        if d.source == "course":
            names = [
                f"{module}/{f}" for f in ("train.x", "train.y", "interpolate.x", "interpolate.y")
            ]
        else:
            names = [f"{diff}/{module}.txt" for diff in d.difficulties]
            names.append(f"interpolate/{module}.txt")
        missing += [n for n in names if not (root / n).is_file()]
    if missing:
        return [
            f"dataset.path={d.path}: missing {', '.join(missing[:4])}"
            + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        ]
    return []


def _read_alternating(path: Path, limit: int | None = None) -> list[tuple[str, str]]:
    lines = read_text(path).splitlines()
    if len(lines) % 2:
        raise UserError(
            f"{path}: odd number of lines; expected question and answer lines alternating"
        )
    pairs = list(zip(lines[0::2], lines[1::2]))
    return pairs[:limit] if limit is not None else pairs


def read_deepmind(
    root: Path, module: str, d: AlgebraDataConfig
) -> dict[str, list[tuple[str, str]]]:
    """One module's files in DeepMind's released layout."""
    # Enough of each difficulty for train + val, in equal parts.
    per = math.ceil((d.train_size + d.val_size) / len(d.difficulties))
    train = [
        p for diff in d.difficulties for p in _read_alternating(root / diff / f"{module}.txt", per)
    ]
    files = {
        "train": train,
        "interpolate": _read_alternating(root / "interpolate" / f"{module}.txt"),
    }
    for extra in extrapolate_modules(module):
        path = root / "extrapolate" / f"{extra}.txt"
        if path.is_file():
            files.setdefault("extrapolate", []).extend(_read_alternating(path))
    return files


def read_course(root: Path, module: str, d: AlgebraDataConfig) -> dict[str, list[tuple[str, str]]]:
    """One module's files in the coursework layout (.x questions, .y answers)."""

    def pairs(stem: str) -> list[tuple[str, str]]:
        x = read_text(root / module / f"{stem}.x").splitlines()
        y = read_text(root / module / f"{stem}.y").splitlines()
        if len(x) != len(y):
            raise UserError(
                f"{root / module}/{stem}.x has {len(x)} lines but {stem}.y has "
                f"{len(y)}; they must pair up line by line"
            )
        return list(zip(x, y))

    return {"train": pairs("train"), "interpolate": pairs("interpolate")}


# -- generation -------------------------------------------------------------------------


def generate(root: Path, d: AlgebraDataConfig) -> None:
    """Write DeepMind's layout for ``d.modules`` under ``root``, reproducibly.

    Work is cut into fixed chunks, each seeded from (seed, file, chunk), and run
    by worker processes started with PYTHONHASHSEED fixed (linear_1d samples
    from a set), so the files are byte-identical whatever the number of workers.
    """
    per = math.ceil((d.train_size + d.val_size) / len(d.difficulties))
    files = [(diff, m, per) for m in d.modules for diff in d.difficulties]
    files += [("interpolate", m, d.test_size) for m in d.modules]
    files += [
        ("extrapolate", e, d.extrapolate_size)
        for m in d.modules
        for e in extrapolate_modules(m)
        if d.extrapolate_size
    ]
    jobs = []
    for regime, module, count in files:
        for i, start in enumerate(range(0, count, CHUNK)):
            n = min(CHUNK, count - start)
            seed = int(cache_key([d.seed, regime, module, i], 0), 16) % 2**31
            jobs.append((regime, module, n, seed))
    workers = d.workers or len(os.sched_getaffinity(0))
    results: dict[tuple[str, str], list[str]] = {}
    total = sum(j[2] for j in jobs)
    with (
        _hash_seed(str(d.seed)),
        tqdm(total=total, desc="generating problems", unit="problem", disable=None) as bar,
    ):
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
            for (regime, module, n, _), lines in zip(jobs, pool.imap(_generate_chunk, jobs)):
                results.setdefault((regime, module), []).extend(lines)
                bar.update(n)
    for (regime, module), lines in results.items():
        (root / regime).mkdir(parents=True, exist_ok=True)
        (root / regime / f"{module}.txt").write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def _hash_seed(value: str):
    """Spawned workers inherit the environment: fix their string hashing."""
    old = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = old


_MODULES: ModuleType | None = None  # mathematics_dataset.generate, in each worker


def load_mathematics_dataset():
    """Import mathematics_dataset 1.0.1 with the shims current sympy and numpy need."""
    import importlib
    import sys

    import numpy as np

    importlib.import_module("sympy.solvers.diophantine")
    dio = importlib.import_module("sympy.solvers.diophantine.diophantine")
    # A shim: the attribute the package imports from where sympy no longer keeps it.
    package = sys.modules["sympy.solvers.diophantine"]
    package.base_solution_linear = dio.base_solution_linear  # type: ignore[attr-defined]
    for alias, value in (("object", object), ("int", int), ("bool", bool)):
        if alias not in np.__dict__:
            setattr(np, alias, value)
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["dlrun"])
    from mathematics_dataset import generate as md_generate

    md_generate.init_modules(train_split=True)
    return md_generate


def _init_worker() -> None:
    global _MODULES
    import warnings

    warnings.simplefilter("ignore")  # the package's own deprecation noise
    # Ctrl-C reaches the whole process group: the parent stops the pool and says so once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _MODULES = load_mathematics_dataset()


def _generate_chunk(job: tuple[str, str, int, int]) -> list[str]:
    import numpy as np

    regime, module, n, seed = job
    assert _MODULES is not None, "the pool's initializer (_init_worker) loads the package"
    random.seed(seed)
    np.random.seed(seed)
    fn = _MODULES.filtered_modules[regime][module]
    lines = []
    for _ in range(n):
        problem, _ = _MODULES.sample_from_module(fn)
        lines += [str(problem.question), str(problem.answer)]
    return lines
