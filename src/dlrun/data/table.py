"""Tables for task=tabular: reading a delimited file (delimiter sniffed), the seeded
split, the training split's feature encoder, number parsing and column statistics."""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlrun.data.text import read_text
from dlrun.errors import UserError, printable

MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
DELIMITERS = ",\t;|"
FREE_TEXT_DISTINCT = 20  # a text column with more distinct values may be free text


# -- reading --------------------------------------------------------------------------------


@dataclass
class Table:
    """A delimited file's header and rows of strings, with the line number of each row."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    delimiter: str

    def column(self, name: str) -> int:
        if name not in self.header:
            raise UserError(
                f"{self.path}: no column '{printable(name)}'; its columns are "
                f"{', '.join(map(printable, self.header))}"
            )
        return self.header.index(name)


def read_table(path: Path, delimiter: str | None = None, encoding: str = "utf-8") -> Table:
    text = read_text(path, encoding, key="dataset.encoding")
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else _sniff(text)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path}: empty file; expected a header row and data rows") from None
    if len(set(header)) != len(header) or "" in header:
        raise UserError(f"{path}: the header row needs distinct, non-empty column names")
    rows, lines = [], []
    for row in reader:
        if not any(v.strip() for v in row):
            continue
        if len(row) != len(header):
            raise UserError(
                f"{path}, line {reader.line_num}: {len(row)} values, the header has "
                f"{len(header)} columns (delimiter {delimiter!r}; set dataset.delimiter if wrong)"
            )
        rows.append([v.strip() for v in row])
        lines.append(reader.line_num)
    if not rows:
        raise UserError(f"{path}: no data rows under the header")
    return Table(path, header, rows, lines, delimiter)


def _sniff(text: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


# -- encoding -------------------------------------------------------------------------------


@dataclass
class Encoder:
    """Feature columns to one float vector: numeric standardized, text one-hot.

    Everything it knows comes from the training split and is saved for predict.
    """

    features: list[str]
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)  # mean, std
    categories: dict[str, list[str]] = field(default_factory=dict)
    impute: bool = False  # missing values: the training mean / no category

    @classmethod
    def fit(
        cls,
        rows: list[list[str]],
        features: list[str],
        impute: bool,
        categorical: list[str] | tuple[str, ...] = (),
        source: str = "the table",
    ) -> Encoder:
        """From the training rows, whose values are the ``features`` in that order.

        A column is numeric when every present value is a number, else one-hot. A text
        column whose values are mostly distinct is free text, not categories: it is
        refused (naming ``source``) unless listed in ``categorical``, which also makes
        a numeric-looking column (codes, ids) one-hot.
        """
        enc = cls(features, impute=impute)
        for i, name in enumerate(features):
            values = [r[i] for r in rows]
            present = [v for v in values if not is_missing(v)]
            numbers = [number(v) for v in present]
            if name not in categorical and present and all(x is not None for x in numbers):
                mean = sum(numbers) / len(numbers)
                std = math.sqrt(sum((x - mean) ** 2 for x in numbers) / len(numbers)) or 1.0
                enc.numeric[name] = (mean, std)
                continue
            distinct = sorted(set(present))
            if name not in categorical and is_free_text(len(distinct), len(present)):
                raise UserError(
                    f"{source}, column '{printable(name)}': {len(distinct):,} distinct texts in "
                    f"{len(present):,} training rows look like free text, not categories; "
                    f"classify texts with task=text dataset.text_column={printable(name)}, "
                    f"leave the column out with dataset.features=[...], or one-hot encode it "
                    f"anyway with dataset.categorical=[{printable(name)}]"
                )
            enc.categories[name] = distinct
        return enc

    @property
    def width(self) -> int:
        return sum(1 if f in self.numeric else len(self.categories[f]) for f in self.features)

    def encode(self, rows: list[list[str]], where: list[str]) -> torch.Tensor:
        """(len(rows), width) floats; ``where[i]`` names row i in errors."""
        out = torch.zeros(len(rows), self.width)
        for i, row in enumerate(rows):
            col = 0
            for name, value in zip(self.features, row):
                if name in self.numeric:
                    mean, std = self.numeric[name]
                    if is_missing(value):
                        if not self.impute:
                            raise UserError(missing_message(where[i], name))
                        x = mean
                    else:
                        x = number(value)
                        if x is None:
                            raise UserError(
                                f"{where[i]}, column '{name}': '{printable(value, 40)}' is not a "
                                "number"
                            )
                    out[i, col] = (x - mean) / std
                    col += 1
                else:
                    cats = self.categories[name]
                    if is_missing(value) and not self.impute:
                        raise UserError(missing_message(where[i], name))
                    if value in cats:
                        out[i, col + cats.index(value)] = 1.0
                    col += len(cats)
        return out


def is_free_text(distinct: int, present: int) -> bool:
    """More than FREE_TEXT_DISTINCT distinct values, and more than half of the rows distinct:
    one-hot categories that would rarely recur, so they could not generalize."""
    return distinct > FREE_TEXT_DISTINCT and distinct > present / 2


def missing_message(where: str, column: str) -> str:
    return (
        f"{where}, column '{printable(column)}': missing value; fill it in, or set "
        "dataset.missing=mean (impute) or dataset.missing=drop (leave the row out)"
    )


def split_rows(table: Table, d: Any) -> dict[str, list[tuple[list[str], str]]]:
    """Shuffled (seeded) rows with where each came from, cut into train/val(/test)."""
    rows = list(zip(table.rows, (f"{table.path}, line {n}" for n in table.lines)))
    random.Random(d.seed).shuffle(rows)
    n = len(rows)
    n_test = 0 if d.test_path is not None else max(1, round(n * d.test_fraction))
    n_val = max(1, round(n * d.val_fraction))
    out = {"test": rows[:n_test], "val": rows[n_test : n_test + n_val]}
    out["train"] = rows[n_test + n_val :]
    return {k: out[k] for k in ("train", "val", "test") if k != "test" or n_test}


def row_fields(row: str, width: int | None = None) -> list[str]:
    """One typed row's values: TAB-separated when it has a TAB (and, given the ``width``
    expected, that gives as many values), else comma-separated (CSV quoting)."""
    parsed = [v.strip() for v in next(csv.reader([row], delimiter=","))]
    if "\t" in row:
        tabbed = [v.strip() for v in next(csv.reader([row], delimiter="\t"))]
        if width is None or len(tabbed) == width or len(parsed) != width:
            return tabbed
    return parsed


def row_text(values: list[str]) -> str:
    """``values`` as one comma-separated row that ``row_fields`` reads back."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def target_number(value: str, where: str, column: str) -> float:
    x = number(value)
    if x is None:
        raise UserError(
            f"{where}, column '{printable(column)}': '{printable(value, 40)}' is not a number; "
            "regression needs a numeric target (or task.problem=classification)"
        )
    return x


def sorted_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ('2' before '10'), others alphabetically."""
    if all(number(v) is not None for v in labels):
        return sorted(labels, key=lambda v: float(v))
    return sorted(labels)


def describe(values: list[float]) -> dict[str, float]:
    """count, mean, std (n-1, as pandas), min, quartiles, max."""
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return {
        "count": len(values),
        "mean": round(float(t.mean()), 6),
        "std": round(float(t.std()), 6) if len(values) > 1 else 0.0,
        "min": round(float(t.min()), 6),
        "25%": round(float(q[0]), 6),
        "50%": round(float(q[1]), 6),
        "75%": round(float(q[2]), 6),
        "max": round(float(t.max()), 6),
    }


def summary(table: Table, target: str, features: list[str], classes: bool) -> dict[str, Any]:
    """Per numeric column count, mean, std, min, quartiles, max; the ``target`` classes and
    their counts (when ``classes``); the correlations of the numeric ``features``."""
    out: dict[str, Any] = {}
    numeric = {}
    for i, name in enumerate(table.header):
        values = [number(r[i]) for r in table.rows if not is_missing(r[i])]
        if values and all(v is not None for v in values):
            numeric[name] = values
    out["columns"] = {name: describe(values) for name, values in numeric.items()}
    if classes:
        counts: dict[str, int] = {}
        for r in table.rows:
            label = r[table.header.index(target)]
            counts[label] = counts.get(label, 0) + 1
        out["classes"] = {k: counts[k] for k in sorted_labels(set(counts))}
    features = [f for f in features if f in numeric]
    complete = [
        [number(r[table.header.index(f)]) for f in features]
        for r in table.rows
        if all(not is_missing(r[table.header.index(f)]) for f in features)
    ]
    if len(features) >= 2 and len(complete) > 1:
        matrix = torch.corrcoef(torch.tensor(complete, dtype=torch.float64).T)
        out["correlation"] = {
            a: {b: round(float(matrix[i, j]), 4) for j, b in enumerate(features)}
            for i, a in enumerate(features)
        }
    return out
