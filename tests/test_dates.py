"""Date generation: determinism, the calendar-year fix, held-out splits, any Babel locale."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

from babel.dates import format_date

from dlrun.plan.config import validate
from dlrun.tasks.dates import SEED_FORMATS, DatesTask, generate, normalize


def small(tiny_cfg, *overrides):
    return validate(tiny_cfg(*overrides)).dataset


def test_generation_is_deterministic(tiny_cfg):
    d = small(tiny_cfg)
    assert generate(d) == generate(d)
    assert generate(d) != generate(replace(d, seed=d.seed + 1))


def year_of(text: str, target: str) -> int | None:
    """The year written in a generated input, read the way a person would."""
    four = re.findall(r"\d{4}", text)
    if four:
        return int(four[0])
    # Short formats write two digits: the last number in the string.
    two = int(re.findall(r"\d+", text)[-1])
    return (int(target[:4]) // 100) * 100 + two


def test_no_pair_has_a_wrong_year(tiny_cfg):
    d = small(tiny_cfg, "dataset.train_size=6000", "dataset.locales=[da,en,de]")
    pairs = [p for split in generate(d).values() for p in split]
    assert len(pairs) == 6256
    wrong = [(s, t) for s, t in pairs if year_of(s, t) != int(t[:4])]
    assert wrong == []


def test_week_year_would_have_been_wrong():
    # The seed's YYYY is the week-based year: late December can belong to next year.
    day = dt.date(2019, 12, 30)
    assert format_date(day, "d MMM YYYY", locale="da").endswith("2020")
    assert format_date(day, "d MMM yyyy", locale="da").endswith("2019")
    assert all("YYYY" not in f for f in SEED_FORMATS)


def test_eval_inputs_never_in_train(tiny_cfg):
    data = generate(
        small(
            tiny_cfg,
            "dataset.train_size=5000",
            "dataset.start_date=2000-01-01",
            "dataset.end_date=2000-12-31",
        )
    )
    train = {s for s, _ in data["train"]}
    val = [s for s, _ in data["val"]]
    test = [s for s, _ in data["test"]]
    assert len(set(val)) == len(val) and len(set(test)) == len(test)
    assert not set(val) & set(test)
    assert not (set(val) | set(test)) & train


def test_targets_are_iso_and_inside_the_range(tiny_cfg):
    d = small(tiny_cfg, "dataset.start_date=1999-06-01", "dataset.end_date=2001-06-01")
    for split in generate(d).values():
        for _, target in split:
            assert dt.date(1999, 6, 1) <= dt.date.fromisoformat(target) <= dt.date(2001, 6, 1)


def test_many_locales_work(tiny_cfg):
    locales = ["en", "da", "de", "fr", "es", "pt_BR"]
    d = small(tiny_cfg, f"dataset.locales=[{','.join(locales)}]")
    data = generate(d)
    assert sum(len(v) for v in data.values()) == 768 + 128 + 128
    texts = " ".join(s for s, _ in data["train"])
    assert "januar" in texts and "janeiro" in texts  # Danish/German and Portuguese months


def test_inputs_are_lowercased_with_plain_spaces():
    assert normalize("Torsdag den 23.\u00a0Januar\u202f2003") == "torsdag den 23. januar 2003"


def test_prepare_caches_on_disk(tiny_cfg, tmp_path, monkeypatch):
    d = validate(tiny_cfg())
    task = DatesTask(d)
    task.prepare(tmp_path)
    entries = [p for p in (tmp_path / "dates").iterdir() if p.is_dir()]  # not its lock file
    assert len(entries) == 1 and (entries[0] / "pairs.json").exists()

    import dlrun.tasks.dates as dates

    def fail(_):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(dates, "generate", fail)
    again = DatesTask(d)
    again.prepare(tmp_path)
    assert again.texts["test"] == task.texts["test"]
    # batch_size does not change the data, so it shares the cache entry.
    DatesTask(replace(d, dataset=replace(d.dataset, batch_size=32))).prepare(tmp_path)
    assert len([p for p in (tmp_path / "dates").iterdir() if p.is_dir()]) == 1
