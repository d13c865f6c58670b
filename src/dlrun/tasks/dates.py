"""Dates: translate human-readable dates ("torsdag den 23. januar 2003") to ISO 8601.

Data are Faker dates rendered by Babel's ``format_date`` in the configured
locales and formats (seed 000, with the calendar year ``yyyy`` instead of the
week-based year ``YYYY``, which gave 0.4% of the seed's pairs a wrong year).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from tqdm import tqdm

from dlrun.data.cache import cache_key, cached
from dlrun.errors import UserError
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS
from dlrun.tasks.seq2seq import Seq2SeqTask

SEED_FORMATS = [
    "short",
    "medium",
    "long",
    "full",
    "d MMM yyyy",
    "d MMMM yyyy",
    "dd/MM/yyyy",
    "EE d, MMM yyyy",
    "EEEE d, MMMM yyyy",
]
GENERATOR_VERSION = 1  # bump when generation changes, so that caches are rebuilt


@dataclass(frozen=True)
class DatesDataConfig(Named):
    locales: list[str] = spec()
    formats: list[str] = spec()
    # Fixed range, so that the data never drift with today's date.
    start_date: str = spec()
    end_date: str = spec()
    train_size: int = spec(ge=1)
    val_size: int = spec(ge=1)
    test_size: int = spec(ge=1)
    seed: int = spec(ge=0)
    lowercase: bool = spec()
    batch_size: int = spec(ge=1)
    max_src_len: int = spec(ge=1)
    max_tgt_len: int = spec(ge=1)  # ISO date (10 characters) + EOS


def normalize(text: str, lowercase: bool = True) -> str:
    """Collapse every kind of whitespace (Babel emits no-break spaces) to one space."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def _parse_date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def _one_year(start: dt.date, end: dt.date) -> list[dt.date]:
    """Up to 366 consecutive days: they show every month, weekday and day number."""
    days = min((end - start).days + 1, 366)
    return [start + dt.timedelta(days=i) for i in range(days)]


@TASKS.register("dates", schema=DatesDataConfig)
class DatesTask(Seq2SeqTask):
    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg)
        d = cfg.dataset
        start, end = _parse_date(d.start_date), _parse_date(d.end_date)
        for key, value in (("start_date", start), ("end_date", end)):
            if value is None:
                problems.append(f"dataset.{key}={getattr(d, key)!r}: expected a date as YYYY-MM-DD")
        if start and end and start > end:
            problems.append(f"dataset.start_date={start} is after dataset.end_date={end}")
        if not d.locales:
            problems.append("dataset.locales: needs at least one Babel locale, e.g. [da]")
        if not d.formats:
            problems.append("dataset.formats: needs at least one Babel date format")
        locales = []
        for loc in d.locales:
            try:
                Locale.parse(loc)
                locales.append(loc)
            except (UnknownLocaleError, ValueError, TypeError):
                problems.append(
                    f"dataset.locales: unknown Babel locale '{loc}' (examples: en, da, de, pt_BR)"
                )
        if problems or not locales or start is None or end is None:
            return problems  # (a date that did not parse is among the problems)
        days = _one_year(start, end)
        seen: set[str] = set()
        for fmt in d.formats:
            try:
                seen.update(
                    normalize(format_date(day, fmt, locale=loc), d.lowercase)
                    for loc in locales
                    for day in days
                )
            except (ValueError, KeyError, AttributeError):
                problems.append(f"dataset.formats: '{fmt}' is not a valid Babel date format")
        longest = max(seen, key=len, default="")
        if len(longest) > d.max_src_len:
            problems.append(
                f"dataset.max_src_len={d.max_src_len}: too short for the data, whose longest "
                f"input has {len(longest)} characters ('{longest}')"
            )
        if d.max_tgt_len < 11:
            problems.append(
                f"dataset.max_tgt_len={d.max_tgt_len}: must be >= 11 (a 10-character ISO "
                "date plus the end token)"
            )
        # Validation and test inputs are distinct and never in train, so they
        # must fit in (at most half of) the distinct inputs the range allows,
        # estimated from the year sampled above.
        distinct = len(seen) * ((end - start).days + 1) // len(days)
        held_out = d.val_size + d.test_size
        if seen and held_out * 2 > distinct:
            problems.append(
                f"dataset.val_size + dataset.test_size = {held_out}: must be at most half of the "
                f"about {distinct} distinct inputs between {start} and {end}; widen the date "
                "range or lower the sizes"
            )
        if d.batch_size > d.train_size:
            problems.append(
                f"dataset.batch_size={d.batch_size}: larger than dataset.train_size={d.train_size}"
            )
        return problems

    def normalize(self, text: str) -> str:
        return normalize(text, self.cfg.dataset.lowercase)

    def load_pairs(self, cache_dir: Path) -> dict[str, list[tuple[str, str]]]:
        d = self.cfg.dataset
        key = {k: v for k, v in asdict(d).items() if k != "batch_size"}  # not the data's
        root = Path(cache_dir).expanduser() / "dates"
        data, _ = cached(
            root,
            cache_key(key, GENERATOR_VERSION),
            lambda tmp: (tmp / "pairs.json").write_text(json.dumps(generate(d))),
            lambda folder: json.loads((folder / "pairs.json").read_text()),
        )
        return {split: [tuple(p) for p in pairs] for split, pairs in data.items()}


def generate(d: DatesDataConfig) -> dict[str, list[tuple[str, str]]]:
    """Draw (human-readable, ISO) pairs; deterministic for a given config.

    Test and validation inputs are drawn first, each distinct; training pairs
    whose input is held out are redrawn, so no eval input appears in train.
    """
    from faker import Faker

    fake = Faker()
    fake.seed_instance(d.seed)
    rng = random.Random(d.seed)
    start, end = dt.date.fromisoformat(d.start_date), dt.date.fromisoformat(d.end_date)
    locales, formats, lower = list(d.locales), list(d.formats), d.lowercase

    def draw() -> tuple[str, str]:
        day = fake.date_between_dates(start, end)
        text = format_date(day, rng.choice(formats), locale=rng.choice(locales))
        return normalize(text, lower), day.isoformat()

    held_out: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {"test": [], "val": [], "train": []}
    total = d.test_size + d.val_size + d.train_size
    with tqdm(total=total, desc="generating dates", unit="pair", disable=None) as bar:
        for split in ("test", "val", "train"):
            pairs, size = out[split], getattr(d, f"{split}_size")
            misses = 0
            while len(pairs) < size:
                src, tgt = draw()
                if src in held_out:
                    misses += 1
                    if misses > 100 * size:  # the estimate in check_config was too kind
                        raise UserError(
                            f"could not draw {size} {split} dates whose inputs are distinct and "
                            "held out; widen the date range, add formats or lower the sizes"
                        )
                    continue
                if split != "train":
                    held_out.add(src)
                pairs.append((src, tgt))
                bar.update()
    return {split: out[split] for split in ("train", "val", "test")}
