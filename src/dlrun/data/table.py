"""Tables for task=tabular: reading a delimited file (delimiter sniffed), the seeded
split, the training split's feature encoder, number parsing and column statistics."""

from __future__ import annotations

import array
import codecs
import csv
import functools
import io
import itertools
import math
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from dlrun.data.text import read_text
from dlrun.engine.device import give_back_freed_memory
from dlrun.errors import UserError, printable, printable_names

MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
# Every capitalization of each (pyarrow matches null values exactly).
MISSING_SPELLINGS = {
    "".join(cs) for m in MISSING for cs in itertools.product(*({c.lower(), c.upper()} for c in m))
}
DELIMITERS = ",\t;|"
FREE_TEXT_DISTINCT = 20  # a text column with more distinct values may be free text


# -- reading --------------------------------------------------------------------------------


@dataclass
class Column:
    """One column of a table, row by row: its numbers (NaN where missing or not a number),
    which rows are missing, and, for a column read as text, its distinct stripped values
    (``values``) with each row's index into them (``codes``).

    A file's number columns are float32 (what the model reads), or float64 where float32
    would blur them (``_Floats.narrow``); ``missing`` of a column with no value missing is one
    shared False (``none_missing``), not a mask per row.
    """

    numbers: np.ndarray  # float32 or float64
    missing: np.ndarray  # bool
    values: list[str] | None = None  # None: read as numbers, every present value finite
    codes: np.ndarray | None = None

    @classmethod
    def from_strings(cls, strings: list[str] | pa.Array | pa.ChunkedArray) -> Column:
        """From each row's text (a list, or pyarrow strings, dictionary-encoded or not):
        the distinct values are stripped and parsed once each."""
        if isinstance(strings, list):
            index: dict[str, int] = {}
            codes = np.fromiter(
                (index.setdefault(v, len(index)) for v in strings), np.int32, len(strings)
            )
            return cls._coded(list(index), [codes])
        chunks = strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]
        raw: list[str] = []
        parts = []
        for chunk in chunks:  # each chunk's own dictionary, made one for the column
            if not pa.types.is_dictionary(chunk.type):
                chunk = chunk.cast(pa.string()).dictionary_encode()
            known = {v: i for i, v in enumerate(raw)}
            local = np.array(
                [known.setdefault(v, len(known)) for v in chunk.dictionary.to_pylist()] + [-1],
                dtype=np.int32,
            )
            raw = list(known)
            codes = chunk.indices.to_numpy(zero_copy_only=False)  # floats, NaN: null
            if chunk.null_count:
                codes = np.where(np.isnan(codes), len(local) - 1, codes)
            parts.append(local[codes.astype(np.intp, copy=False)])
        return cls._coded(raw, parts)

    @classmethod
    def _coded(cls, raw: list[str], parts: list[np.ndarray]) -> Column:
        """From distinct raw values and each row's index into them (-1: missing)."""
        index: dict[str, int] = {}
        remap = np.array(  # values equal once stripped are one value
            [index.setdefault(v.strip(), len(index)) for v in raw] + [-1], dtype=np.int32
        )
        values = list(index)
        codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        codes = remap[codes]
        codes[codes < 0] = len(values)
        numbers = np.array([number(v) if number(v) is not None else math.nan for v in values])
        missing = np.array([is_missing(v) for v in values], dtype=bool)
        return cls(
            np.append(numbers, math.nan)[codes], np.append(missing, True)[codes], values, codes
        )

    def __len__(self) -> int:
        return len(self.numbers)

    def text(self, row: int) -> str:
        """The value of ``row`` as written (a number column's as Python prints it)."""
        if self.values is not None and self.codes is not None:  # set together
            code = int(self.codes[row])
            return self.values[code] if code < len(self.values) else ""
        if self.missing[row]:
            return ""
        x = self.numbers[row]
        # float32's shortest text is what was written, to float32's 7 digits
        x = float(str(x)) if x.dtype == np.float32 else float(x)
        return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)

    def coded(self) -> tuple[list[str], np.ndarray]:
        """The distinct values as text and each row's index into them (missing: the last
        index, one past the values)."""
        if self.codes is None:
            as_text = Column.from_strings([self.text(i) for i in range(len(self))])
            self.values, self.codes = as_text.values, as_text.codes
        assert self.values is not None and self.codes is not None  # from_strings sets both
        return self.values, self.codes

    def bad(self, rows: np.ndarray) -> np.ndarray:
        """Of ``rows``, those present but not a number (as a mask)."""
        if self.values is None:  # read as numbers: every present value is one
            return np.zeros(len(rows), dtype=bool)
        return np.isnan(self.numbers[rows]) & ~self.missing[rows]

    def take(self, rows: np.ndarray) -> Column:
        """The column of ``rows`` only (copies; of the distinct values, those they use)."""
        missing = self.missing[rows] if self.missing.any() else none_missing(len(rows))
        if self.values is None or self.codes is None:  # set together
            return Column(self.numbers[rows], missing)
        codes = self.codes[rows]
        used = np.unique(codes[codes < len(self.values)])
        recode = np.full(len(self.values) + 1, len(used), dtype=np.int32)  # last: missing
        recode[used] = np.arange(len(used), dtype=np.int32)
        return Column(self.numbers[rows], missing, [self.values[u] for u in used], recode[codes])

    def present(self) -> np.ndarray:
        """Every present row's number (the column itself when none is missing: no copy)."""
        if not self.missing.any():
            return self.numbers
        return self.numbers[~self.missing]


def none_missing(n: int) -> np.ndarray:
    """The ``missing`` of a column of ``n`` rows with none missing: read-only, one byte."""
    return np.broadcast_to(np.False_, (n,))


@dataclass
class Table:
    """A delimited file's header and columns; ``where(i)`` names row ``i`` in errors
    ("FILE, line N", the line numbers found only when an error needs them)."""

    path: Path | None
    header: list[str]
    columns: list[Column]
    delimiter: str
    encoding: str = "utf-8"
    lines: list[int] | None = None  # each row's line; None: found on first use
    label: str | None = None  # rows are "LABEL N" (1-based) instead of file lines
    origin: np.ndarray | None = None  # rows taken from a larger table: their rows there

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def index(self, name: str) -> int:
        if name not in self.header:
            raise UserError(
                f"{self.path}: no column '{printable(name)}'; its columns are "
                f"{printable_names(self.header)}"
            )
        return self.header.index(name)

    def column(self, name: str) -> Column:
        return self.columns[self.index(name)]

    def row(self, i: int, names: list[str] | None = None) -> list[str]:
        """Row ``i``'s values (of the columns ``names``, or all) as text."""
        index = range(len(self.header)) if names is None else map(self.index, names)
        return [self.columns[c].text(i) for c in index]

    def rows(self) -> list[list[str]]:
        """Every row's values as text (a table read with ``text=True``: as written)."""
        return [self.row(i) for i in range(len(self))]

    def where(self, i: int) -> str:
        if self.origin is not None:
            i = int(self.origin[i])
        if self.label is not None:
            return f"{self.label} {i + 1}"
        if self.lines is None:
            assert self.path is not None  # a table made without a file has a label
            self.lines = _python_rows(self.path, self.delimiter, self.encoding)[2]
        return f"{self.path}, line {self.lines[i]}"

    def select(self, names: list[str]) -> Table:
        """A table of the columns ``names`` only (the same arrays, not copies)."""
        return replace(self, header=list(names), columns=[self.column(n) for n in names])

    def take(self, rows: np.ndarray) -> Table:
        """A table of ``rows`` only (copies), each still named by its line in the file (the
        lines found again on first use, as the file's are)."""
        origin = np.array(rows if self.origin is None else self.origin[rows], dtype=np.int64)
        columns = [c.take(rows) for c in self.columns]
        return replace(self, columns=columns, lines=None, origin=origin)

    @classmethod
    def from_rows(
        cls, header: list[str], rows: list[list[str]], label: str, delimiter: str = ","
    ) -> Table:
        """Rows of text (prediction inputs) as a table; row ``i`` is "LABEL i+1" in errors."""
        columns = [Column.from_strings([r[c] for r in rows]) for c in range(len(header))]
        return cls(None, header, columns, delimiter, label=label)


def read_table(
    path: Path,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    text: tuple[str, ...] | bool = (),
) -> Table:
    """A CSV/TSV file's columns, read by pyarrow's columnar reader; the columns named in
    ``text`` (every column for ``text=True``) keep their values as written (labels:
    "1.0" stays "1.0").

    A file pyarrow does not read (a ragged row, bad bytes, quoted newlines...) is read
    again by Python's csv module, which names the line of the problem or reads it.
    """
    path = Path(path)
    head = _head(path, encoding)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else _sniff(head)
    try:
        names = next(csv.reader([head.partition("\n")[0]], delimiter=delimiter), [])
    except csv.Error as exc:  # e.g. a lone carriage return inside the header line
        raise UserError(f"{path}, line 1: cannot read the header ({exc})") from None
    header = _check_header(path, names)
    text_columns = (
        set(names) if text is True else {names[header.index(t)] for t in text or () if t in header}
    )
    guess = _rows(path, head, encoding, len(names))
    columns = _arrow_columns(path, delimiter, encoding, names, text_columns, guess)
    if columns is not None:
        blank = np.logical_and.reduce([c.missing for c in columns])
        if not blank.any() and len(columns[0]):
            return Table(path, header, columns, delimiter, encoding)
    # Python's reader: today's messages for a malformed file, or a file pyarrow refuses.
    header, rows, lines = _python_rows(path, delimiter, encoding)
    columns = [Column.from_strings([r[c] for r in rows]) for c in range(len(header))]
    return Table(path, header, columns, delimiter, encoding, lines)


def _head(path: Path, encoding: str, size: int = 1 << 16) -> str:
    """The file's first lines (its header and a sample to detect the delimiter)."""
    with open(path, "rb") as f:
        raw = f.read(size)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start < len(raw) - 8:  # not a character cut at the end of the sample
            read_text(path, encoding, key="dataset.encoding")  # the one-line message
        text = raw[: exc.start].decode(encoding)
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise UserError(f"{path}: empty file; expected a header row and data rows")
    return text if len(raw) < size else text[: text.rfind("\n") + 1]


def _rows(path: Path, head: str, encoding: str, columns: int) -> int:
    """A guess of a file's rows from its size and its first lines' length, at most one
    per ``columns`` bytes (a row of empty values)."""
    lines = head.count("\n") - 1  # below the header
    size = path.stat().st_size
    if lines < 1:
        return 0
    per_line = len(head.encode(encoding, "replace")) / (lines + 1)
    return min(int(size / per_line * 1.1), size // max(1, columns))


def _check_header(path: Path, names: list[str]) -> list[str]:
    header = [h.strip() for h in names]
    if len(set(header)) != len(header) or "" in header:
        raise UserError(f"{path}: the header row needs distinct, non-empty column names")
    return header


def _arrow_columns(
    path: Path, delimiter: str, encoding: str, names: list[str], text: set[str], rows: int
) -> list[Column] | None:
    """The file's columns as pyarrow reads them, a block at a time (numbers as numbers,
    no copy of the whole file as text), or None where it cannot read the file. ``rows``
    is a guess of the file's rows (room for more is made as they come).

    pyarrow guesses a column's type from the first block; a column with text further
    down, or of another type (dates...), is read again as text.
    """
    previous = pa.default_memory_pool()
    # pyarrow's reader takes buffers from the default pool as well as from the one it is
    # given; glibc's malloc (then trimmed) gives them back, jemalloc and mimalloc keep them.
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        while True:
            try:
                return _arrow_blocks(path, delimiter, encoding, names, text, rows)
            except _AsText as exc:
                if exc.name in text:
                    return None  # e.g. bytes that are not ``encoding``
                text.add(exc.name)
            except (pa.ArrowException, UnicodeError, ValueError, KeyError):
                return None
    finally:
        pa.set_memory_pool(previous)
        give_back_freed_memory()


class _AsText(Exception):
    """Read column ``name`` again, as text."""

    def __init__(self, name: str):
        self.name = name


TEXT = pa.dictionary(pa.int32(), pa.string())  # text dictionary-encoded as it is read
# pyarrow guesses the columns' types from a first block (of 4 MiB, its default size), then
# reads blocks of 512 KiB: its reader holds a few dozen blocks at once (of 4 MiB: 155 MB).
GUESS_BLOCK, READ_BLOCK = 1 << 22, 1 << 19


def _options(
    delimiter: str, encoding: str, types: dict[str, pa.DataType], block: int, only: str | None
) -> dict[str, Any]:
    convert = pacsv.ConvertOptions(
        null_values=sorted(MISSING_SPELLINGS),
        strings_can_be_null=False,
        true_values=["\0"],  # no booleans: "true"/"false" stay categories as written
        false_values=["\0"],
        column_types=types,
        include_columns=[] if only is None else [only],  # []: every column
    )
    return dict(
        read_options=pacsv.ReadOptions(encoding=encoding, block_size=block),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=convert,
        memory_pool=pa.system_memory_pool(),
    )


def _open_csv(
    path: Path,
    delimiter: str,
    encoding: str,
    types: dict[str, pa.DataType],
    only: str | None = None,
) -> pacsv.CSVStreamingReader:
    """A reader of the file's blocks (of ``READ_BLOCK``), the columns in ``types`` of those
    types (every column, or ``only`` that one)."""
    return pacsv.open_csv(path, **_options(delimiter, encoding, types, READ_BLOCK, only))


def _guess_types(path: Path, delimiter: str, encoding: str, text: set[str]) -> pa.Schema:
    """The columns' types as pyarrow guesses them from the file's first ``GUESS_BLOCK``
    bytes (to their last line end, as its first block would be). Read from memory: a
    streaming reader's first block of that size kept 90 MB after it was gone. Decoded
    here (a line end is two bytes in UTF-16), given to pyarrow as UTF-8."""
    with open(path, "rb") as f:
        raw = f.read(GUESS_BLOCK)
    head = codecs.getincrementaldecoder(encoding)().decode(raw, final=len(raw) < GUESS_BLOCK)
    if len(raw) == GUESS_BLOCK:
        head = head[: head.rfind("\n") + 1]
    options = _options(delimiter, "utf-8", dict.fromkeys(text, TEXT), 2 * GUESS_BLOCK, None)
    options["read_options"].use_threads = False
    return pacsv.read_csv(pa.BufferReader(head.encode("utf-8")), **options).schema


def _arrow_blocks(
    path: Path, delimiter: str, encoding: str, names: list[str], text: set[str], rows: int
) -> list[Column] | None:
    try:
        schema = _guess_types(path, delimiter, encoding, text)
    except pa.ArrowInvalid as exc:
        _retry_as_text(exc, names)
        raise
    if schema.names != names:
        return None
    types: dict[str, pa.DataType] = {}
    for name, kind in zip(names, schema.types):
        if pa.types.is_dictionary(kind):
            types[name] = kind
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            types[name] = pa.float64()  # a later block's 1.5 in a column of ints is a number
        else:
            raise _AsText(name)  # dates, bytes...: text as written
    # Per column, its text blocks (pyarrow's), or its numbers as float32 (with what float32
    # changes in them, ``_Floats``) and where values are missing.
    numbers = {i: _Floats(rows) for i, n in enumerate(names) if types[n] == pa.float64()}
    parts: list[list] = [[] for _ in names]
    gaps: list[list] = [[] for _ in names]
    reader = _open_csv(path, delimiter, encoding, types)
    try:
        for block in reader:
            for i, arr in enumerate(block.columns):
                if i not in numbers:
                    parts[i].append(arr)
                    continue
                x = arr.to_numpy(zero_copy_only=False)
                if np.isinf(x).any():
                    raise _AsText(names[i])  # "inf" is not a number to dlrun: as written
                nan = np.isnan(x)
                some_missing = bool(nan.any())
                gaps[i].append(nan if some_missing else len(x))
                numbers[i].add(x, ~nan if some_missing else None)
            del block
    except pa.ArrowInvalid as exc:
        _retry_as_text(exc, names)
        raise
    del reader
    columns = []
    for i, name in enumerate(names):
        if i not in numbers:
            columns.append(Column.from_strings(pa.chunked_array(parts[i], TEXT)))
            parts[i] = []
            continue
        floats = numbers.pop(i)
        x = floats.result() if floats.narrow() else _float64(path, delimiter, encoding, name)
        if all(isinstance(g, int) for g in gaps[i]):
            missing = none_missing(len(x))
        else:
            missing = np.concatenate(
                [np.zeros(g, bool) if isinstance(g, int) else g for g in gaps[i]]
            )
        columns.append(Column(x, missing))
    return columns


class _Floats:
    """A number column read block by block into float32, with what tells whether float32
    keeps it (``narrow``): the finite values' range and float32's largest change.
    Room is made for ``rows`` at first (pages never written cost no memory), 1.5x more
    when they run out."""

    def __init__(self, rows: int):
        self.data = np.empty(max(rows, 1024), np.float32)
        self.n, self.lo, self.hi, self.blur = 0, math.inf, -math.inf, 0.0

    def add(self, x: np.ndarray, finite: np.ndarray | None) -> None:
        """Block ``x`` (float64) appended; ``finite`` marks its numbers (None: all)."""
        end = self.n + len(x)
        if end > len(self.data):
            grown = np.empty(max(end, len(self.data) * 3 // 2), np.float32)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        x32 = self.data[self.n : end]
        with np.errstate(over="ignore"):  # beyond float32: inf, so the column stays float64
            x32[...] = x
        self.n = end
        if finite is not None:
            x, x32 = x[finite], x32[finite]
        if len(x):
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
            self.blur = max(self.blur, float(np.abs(x32 - x).max()))

    def narrow(self) -> bool:
        """True where float32 keeps the column to a millionth of its spread (most columns:
        the model reads float32), False for ids, timestamps, offsets: kept as float64."""
        return self.lo > self.hi or self.blur <= 1e-6 * (self.hi - self.lo)

    def result(self) -> np.ndarray:
        self.data.resize(self.n, refcheck=False)  # shrunk in place: no copy
        return self.data


def _float64(path: Path, delimiter: str, encoding: str, name: str) -> np.ndarray:
    """Column ``name`` read again as float64: float32 would blur it (ids, timestamps)."""
    reader = _open_csv(path, delimiter, encoding, {name: pa.float64()}, only=name)
    blocks = [b.column(0).to_numpy(zero_copy_only=False) for b in reader]
    return np.concatenate(blocks) if blocks else np.zeros(0)


def _retry_as_text(exc: Exception, names: list[str]) -> None:
    """A block with text in a column read as numbers: read that column as text."""
    found = re.search(r"In CSV column #(\d+)", str(exc))
    if found and int(found.group(1)) < len(names):
        raise _AsText(names[int(found.group(1))]) from None


def _python_rows(
    path: Path, delimiter: str, encoding: str
) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows of stripped strings and each row's line, by Python's csv module."""
    text = read_text(path, encoding, key="dataset.encoding").lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = _check_header(path, next(reader))
        rows, lines = [], []
        for row in reader:
            if not any(v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise UserError(
                    f"{path}, line {reader.line_num}: {len(row)} values, the header has "
                    f"{len(header)} columns (delimiter {delimiter!r}; set dataset.delimiter "
                    "if wrong)"
                )
            rows.append([v.strip() for v in row])
            lines.append(reader.line_num)
    except StopIteration:
        raise UserError(f"{path}: empty file; expected a header row and data rows") from None
    except csv.Error as exc:  # a NUL byte, a stray carriage return, an endless field
        raise UserError(f"{path}, line {reader.line_num}: not readable as CSV ({exc})") from None
    if not rows:
        raise UserError(f"{path}: no data rows under the header")
    return header, rows, lines


def _sniff(text: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def _non_finite(value: str) -> bool:
    """Whether ``value`` is a number that is not finite (inf, -Infinity, nan, 1e999)."""
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


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
        table: Table,
        rows: np.ndarray,
        features: list[str],
        impute: bool,
        categorical: list[str] | tuple[str, ...] = (),
    ) -> Encoder:
        """From the training ``rows`` (indices) of ``table``'s ``features`` columns.

        A column is numeric when every present value is a number, else one-hot; one
        whose training values are numbers but for at most a tenth is refused, naming the
        first other value's line (a typo or a placeholder, most likely). A text column
        whose values are mostly distinct is free text, not categories: it is refused
        (naming the table's file). Listing a column in ``categorical`` makes it one-hot
        whatever its values (codes, ids, "90+").
        """
        enc = cls(features, impute=impute)
        source = "the table" if table.path is None else str(table.path)
        for name in features:
            col = table.column(name)
            present = rows[~col.missing[rows]] if col.missing.any() else rows
            if name not in categorical and len(present) and not col.bad(present).any():
                x = col.numbers[present]
                with np.errstate(over="ignore", invalid="ignore"):  # checked below
                    mean = float(x.mean(dtype=np.float64))
                    std = spread(x, mean)
                if not math.isfinite(std):
                    raise UserError(too_large(source, name, x))
                enc.numeric[name] = (mean, std or 1.0)
                continue
            values, codes = col.coded()
            bad = present[col.bad(present)]
            if name not in categorical and len(bad) and _non_finite(values[codes[bad[0]]]):
                where = table.where(int(bad[0]))
                raise UserError(
                    f"{where}, column '{printable(name)}': {printable(values[codes[bad[0]]])} "
                    "is not a finite number; fix the value, or leave it empty and set "
                    "dataset.missing=mean or dataset.missing=drop"
                )
            if name not in categorical and len(bad) and len(bad) <= 0.1 * len(present):
                where = table.where(int(bad[0]))  # numbers but for a few: a typo, not classes
                raise UserError(
                    f"{where}, column '{printable(name)}': '{printable(values[codes[bad[0]]], 40)}'"
                    f" is not a number, where {len(present) - len(bad):,} of {len(present):,} "
                    "training values are; fix it (a thousands separator; a placeholder such as "
                    "'-': leave the cell empty and set dataset.missing), or one-hot encode the "
                    f"column with dataset.categorical=[{printable(name)}]"
                )
            distinct = sorted(values[c] for c in np.unique(codes[present]))
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

    def encode(self, table: Table, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), width) floats of ``table``'s ``rows`` (indices), column by column."""
        out = torch.zeros(len(rows), self.width)
        at = 0
        for name in self.features:
            col = table.column(name)
            missing = col.missing[rows]
            if missing.any() and not self.impute:
                raise UserError(missing_message(table.where(rows[missing.argmax()]), name))
            if name in self.numeric:
                bad = col.bad(rows)
                if bad.any():
                    i = rows[bad.argmax()]
                    raise UserError(
                        f"{table.where(i)}, column '{name}': '{printable(col.text(i), 40)}' is "
                        "not a number"
                    )
                mean, std = self.numeric[name]
                with np.errstate(over="ignore"):  # checked: float32 may not hold the result
                    x = ((col.numbers[rows] - mean) / std).astype(np.float32, copy=False)
                x[missing] = 0.0  # imputed: the training mean
                if not np.isfinite(x).all():
                    i = rows[np.argmin(np.isfinite(x))]
                    raise UserError(
                        f"{table.where(i)}, column '{printable(name)}': {col.text(i)} is too "
                        f"large for this column (training mean {mean:.3g}, standard deviation "
                        f"{std:.3g}); fix or rescale the value"
                    )
                out[:, at] = torch.from_numpy(x)
                at += 1
            else:
                cats = self.categories[name]
                values, codes = col.coded()
                lookup = {c: k for k, c in enumerate(cats)}
                onehot = np.array([lookup.get(v, -1) for v in values] + [-1])[codes[rows]]
                known = onehot >= 0  # a category training never saw: all zeros
                out[
                    torch.from_numpy(np.flatnonzero(known)), at + torch.from_numpy(onehot[known])
                ] = 1.0
                at += len(cats)
        return out


def is_free_text(distinct: int, present: int) -> bool:
    """More than FREE_TEXT_DISTINCT distinct values, and more than half of the rows distinct:
    one-hot categories that would rarely recur, so they could not generalize."""
    return distinct > FREE_TEXT_DISTINCT and distinct > present / 2


def missing_message(where: str, column: str, target: bool = False) -> str:
    """A missing value's line; the target's cannot be imputed, only its row dropped."""
    fix = (
        "dataset.missing=drop (leave the row out)"
        if target
        else "dataset.missing=mean (impute) or dataset.missing=drop (leave the row out)"
    )
    return f"{where}, column '{printable(column)}': missing value; fill it in, or set {fix}"


def split_indices(n: int, d: Any) -> dict[str, np.ndarray]:
    """Row indices shuffled (seeded) and cut into train/val(/test)."""
    order = array.array("q", [0]) * n  # 8 bytes a row (a list of ints: 36), allocated once
    rows = np.frombuffer(order, dtype=np.int64)
    step = 1 << 16
    for start in range(0, n, step):  # 0..n-1, without a second array of n
        rows[start : start + step] = np.arange(start, min(n, start + step))
    random.Random(d.seed).shuffle(order)  # the same order as a list's
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


def too_large(source: str, name: str, x: np.ndarray) -> str:
    """A column whose numbers float64 cannot hold the statistics of (near 1e308), or a
    regression target whose squared errors it cannot (over 1e150): one line to fix it."""
    top = float(np.abs(x).max())
    return (
        f"{source}, column '{printable(name)}': values as large as {top:.3g} overflow its "
        "statistics or errors; rescale the column (e.g. to other units or a logarithm)"
    )


def target_numbers(table: Table, name: str, rows: np.ndarray) -> np.ndarray:
    """The numbers of column ``name`` at ``rows``: a regression target, none missing."""
    col = table.column(name)
    missing, bad = col.missing[rows], col.bad(rows)
    if missing.any():
        raise UserError(missing_message(table.where(rows[missing.argmax()]), name, target=True))
    if bad.any():
        i = rows[bad.argmax()]
        raise UserError(
            f"{table.where(i)}, column '{printable(name)}': '{printable(col.text(i), 40)}' is not "
            "a number; regression needs a numeric target (or task.problem=classification)"
        )
    return col.numbers[rows]


def sorted_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ('2' before '10'), others alphabetically."""
    if all(number(v) is not None for v in labels):
        return sorted(labels, key=lambda v: float(v))
    return sorted(labels)


def describe(values: np.ndarray) -> dict[str, float]:
    """count, mean, std (n-1, as pandas), min, quartiles, max."""
    x = np.asarray(values)  # float32 or float64, not copied; sums in float64
    q = np.quantile(x, [0.25, 0.5, 0.75])  # linear, as pandas; by partition, not a sort
    mean = float(x.mean(dtype=np.float64))
    return {
        "count": len(x),
        "mean": round(mean, 6),
        "std": round(spread(x, mean, ddof=1), 6) if len(x) > 1 else 0.0,
        "min": round(float(x.min()), 6),
        "25%": round(float(q[0]), 6),
        "50%": round(float(q[1]), 6),
        "75%": round(float(q[2]), 6),
        "max": round(float(x.max()), 6),
    }


STATS_CHUNK = 1 << 14  # rows per step of the statistics: float64 work of 128 KiB a column


def spread(x: np.ndarray, mean: float, ddof: int = 0) -> float:
    """The standard deviation of ``x`` about ``mean`` (``ddof`` as numpy's), in float64, a
    chunk at a time (``x.std(dtype=float64)`` makes a float64 copy of the whole column).
    Deviations are scaled by the largest before squaring: values up to float64's limit
    (1.8e308) do not overflow; inf only where a deviation itself does."""
    chunks = range(0, len(x), STATS_CHUNK)

    def deviations(start: int) -> np.ndarray:
        return x[start : start + STATS_CHUNK].astype(np.float64) - mean

    scale = max((float(np.abs(deviations(s)).max()) for s in chunks), default=0.0)
    if scale == 0.0 or not math.isfinite(scale):
        return scale  # every value the mean (0), or a deviation past float64 (inf)
    total = 0.0
    for start in chunks:
        d = deviations(start) / scale
        total += float(d @ d)
    return scale * math.sqrt(total / (len(x) - ddof))


def summary(table: Table, target: str, features: list[str], classes: bool) -> dict[str, Any]:
    """Per numeric column count, mean, std, min, quartiles, max; the ``target`` classes and
    their counts (when ``classes``); the correlations of the numeric ``features``."""
    out: dict[str, Any] = {}
    out["columns"] = {}
    for name, col in zip(table.header, table.columns):
        x = col.present()  # no copy where none is missing
        if len(x) and not np.isnan(x).any():
            out["columns"][name] = describe(x)
    numeric = out["columns"]
    if classes:
        values, codes = table.column(target).coded()
        counts: dict[str, int] = {}
        for value, n in zip(values + [""], np.bincount(codes, minlength=len(values) + 1).tolist()):
            if n:
                counts[value] = counts.get(value, 0) + n
        out["classes"] = {k: counts[k] for k in sorted_labels(set(counts))}
    features = [f for f in features if f in numeric]
    if len(features) >= 2:
        cols = [table.column(f) for f in features]
        lacking = [c.missing for c in cols if c.missing.any()]
        complete = None  # every row
        if lacking:  # one mask at a time (a reduce over the list stacks them first)
            complete = np.flatnonzero(~functools.reduce(np.logical_or, lacking))
        if (len(table) if complete is None else len(complete)) > 1:
            matrix = _correlation([c.numbers for c in cols], complete)
            out["correlation"] = {
                a: {b: round(float(matrix[i, j]), 4) for j, b in enumerate(features)}
                for i, a in enumerate(features)
            }
    return out


def _correlation(columns: list[np.ndarray], rows: np.ndarray | None) -> np.ndarray:
    """Pearson correlations of ``columns`` over ``rows`` (None: all), a chunk of rows at a
    time: no copy of a whole column, let alone of the table."""
    n = len(columns[0]) if rows is None else len(rows)

    def chunks():
        for start in range(0, n, STATS_CHUNK):
            part = (
                slice(start, start + STATS_CHUNK)
                if rows is None
                else rows[start : start + STATS_CHUNK]
            )
            yield np.stack([c[part] for c in columns], axis=1).astype(np.float64)

    sums, spans = np.zeros(len(columns)), np.zeros(len(columns))
    for x in chunks():
        sums += x.sum(axis=0)
        spans = np.maximum(spans, np.abs(x).max(axis=0))
    spans[spans == 0] = 1.0  # each column scaled to at most 1: its squares cannot overflow
    means = sums / n / spans
    gram = np.zeros((len(columns), len(columns)))
    for x in chunks():
        x /= spans
        x -= means
        gram += x.T @ x
    scale = np.sqrt(np.diag(gram))
    with np.errstate(invalid="ignore", divide="ignore"):
        return gram / np.outer(scale, scale)
