"""Word tokenizers, n-grams, frequency vocabularies, the aclImdb reader and your own
labelled texts (CSV, TSV, JSON Lines or class folders).

A few dozen lines instead of torchtext (unmaintained; its last release does not
import with current torch): ``basic_english`` follows torchtext's rules.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import json
import re
import sys
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from dlrun import walk
from dlrun.errors import UserError, first_line, printable, printable_names

# torchtext's basic_english: lowercase, then these substitutions, then split on whitespace.
_BASIC_ENGLISH = [
    (re.compile(pattern), replacement)
    for pattern, replacement in zip(
        [r"\'", r"\"", r"\.", r"<br \/>", r",", r"\(", r"\)", r"\!", r"\?", r"\;", r"\:", r"\s+"],
        [" '  ", "", " . ", " ", " , ", " ( ", " ) ", " ! ", " ? ", " ", " ", " "],
        strict=True,
    )
]


# The same rules in one pass: after dropping double quotes and <br />, a token is one of
# ' . , ( ) ! ? or a run of anything else that is neither space nor ; or :.
_BASIC_ENGLISH_TOKEN = re.compile(r"[',.()!?]|[^\s',.()!?;:]+")


def basic_english(text: str) -> list[str]:
    """Lowercase, drop ``<br />`` and double quotes, split punctuation off words."""
    text = text.lower().replace('"', "").replace("<br />", " ")
    return _BASIC_ENGLISH_TOKEN.findall(text)


def basic_english_reference(text: str) -> list[str]:
    """torchtext's rules as written there, one substitution at a time (tests compare)."""
    text = text.lower()
    for pattern, replacement in _BASIC_ENGLISH:
        text = pattern.sub(replacement, text)
    return text.split()


def whitespace(text: str) -> list[str]:
    """``str.split``: the seed's first tokenizer, case and punctuation kept."""
    return text.split()


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": whitespace,
    "basic_english": basic_english,
}


def with_ngrams(tokens: list[str], n: int) -> list[str]:
    """The tokens followed by every run of 2..n consecutive tokens, joined by spaces."""
    out = list(tokens)
    for k in range(2, n + 1):
        out += [" ".join(tokens[i : i + k]) for i in range(len(tokens) - k + 1)]
    return out


class WordVocab:
    """The ``size`` most frequent tokens get ids 1..size; id 0 is every other token (OOV)."""

    oov_id = 0

    def __init__(self, tokens: list[str]):
        self.itos = ["<oov>", *tokens]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, documents: Iterable[list[str]], size: int) -> WordVocab:
        counts = Counter(t for doc in documents for t in doc)
        # Ties keep first-seen order (Counter.most_common is stable), so builds are repeatable.
        return cls([t for t, _ in counts.most_common(size)])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, self.oov_id) for t in tokens]


def decode(raw: bytes, where: object, encoding: str = "utf-8", key: str | None = None) -> str:
    """``raw`` as text; a byte that is not ``encoding`` is one line naming the file and byte.

    ``key`` names the config key that picks another encoding, when there is one.
    """
    try:
        return raw.decode(bom_free(encoding))
    except UnicodeDecodeError as exc:
        at = exc.start + skipped_bom(raw, encoding)  # counted in the file, mark and all
        fix = f"; set {key}=NAME if it is in another encoding (e.g. latin-1)" if key else ""
        raise UserError(
            f"{where}: not {encoding} text (byte {at:,} is 0x{raw[at]:02x}){fix}"
        ) from None


def bom_free(encoding: str) -> str:
    """The codec that reads ``encoding``, UTF-8's without the byte-order mark that Excel's
    "CSV UTF-8" and Notepad write at the start of a file (it would be part of the first
    column's name, or of the first word)."""
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return encoding  # refused where it is used, naming the key
    return "utf-8-sig" if utf8 else encoding


def skipped_bom(raw: bytes, encoding: str) -> int:
    """The bytes ``bom_free``'s codec skips at the start of ``raw``: its mark's 3, or 0."""
    return 3 if bom_free(encoding) == "utf-8-sig" and raw.startswith(codecs.BOM_UTF8) else 0


def is_text_file(path: Path) -> bool:
    """A ``.txt`` file (of an IMDB folder or a class folder)."""
    return path.suffix == ".txt"


def read_text(path: Path, encoding: str = "utf-8", key: str | None = None) -> str:
    """A text file decoded with ``decode``."""
    return decode(Path(path).read_bytes(), path, encoding, key)


class _NotPlain(Exception):
    """A tar header that ``_plain_tar_files`` does not read."""


def _plain_tar_files(path: Path):
    """(name, bytes) of each regular file in a ustar or GNU tar (gzipped or not), read
    block by block: several times faster than tarfile for 50,000 small files. Raises
    ``_NotPlain`` at a header it does not read (pax, long names, huge sizes)."""
    opener = gzip.open if path.name.endswith(("gz", ".tgz")) else open
    with opener(path, "rb") as f:
        while True:
            header = f.read(512)
            if len(header) < 512 or not header.strip(b"\0"):
                return  # end of archive: zero blocks
            kind, size_field = header[156:157], header[124:136]
            if kind not in (b"0", b"\0", b"5") or size_field[0] & 0x80:
                raise _NotPlain
            try:
                size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                raise _NotPlain from None
            name = header[:100].split(b"\0", 1)[0]
            if header[257:263] == b"ustar\x00":  # POSIX: a prefix may hold the directories
                prefix = header[345:500].split(b"\0", 1)[0]
                name = prefix + b"/" + name if prefix else name
            body = f.read((size + 511) // 512 * 512)
            if len(body) < size:
                raise EOFError("unexpected end of data")
            if kind != b"5":
                yield name.decode("utf-8", "surrogateescape"), body[:size]


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A regular file's bytes (``extractfile`` gives None only for other members)."""
    file = tar.extractfile(member)
    if file is None:
        raise tarfile.TarError(f"{member.name}: not a regular file")
    return file.read()


def read_aclimdb(path: Path, splits: tuple[str, ...] = ("train", "test")):
    """Reviews of the Large Movie Review Dataset from its folder or its ``.tar.gz``.

    Returns ``{split: [(text, label, rating), ...]}`` with label 1 for ``pos``
    and 0 for ``neg``, ordered by label and review id so reads are repeatable.
    The layout is ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``.
    """
    path = Path(path).expanduser()
    name = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
    found: dict[str, list[tuple[int, int, str, int]]] = {s: [] for s in splits}

    def add(member: str, read: Callable[[], bytes]) -> None:
        m = name.search(member)
        if m and m.group(1) in found:
            label = int(m.group(2) == "pos")
            text = decode(read(), f"{path}: {member}")
            found[m.group(1)].append((label, int(m.group(3)), text, int(m.group(4))))

    if path.is_dir():
        for file in walk.files(path, is_text_file):
            add(file.relative_to(path).as_posix(), file.read_bytes)
    elif path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            try:
                for member, content in _plain_tar_files(path):
                    add(member, functools.partial(bytes, content))
            except _NotPlain:  # pax or GNU long-name headers: tarfile reads those
                for rows in found.values():
                    rows.clear()
                with tarfile.open(path) as tar:
                    for member in tar:
                        if member.isfile():
                            add(member.name, functools.partial(_member_bytes, tar, member))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            reason = first_line(exc, 120)
            raise UserError(
                f"{path}: not a readable aclImdb tarball ({reason}); it is damaged or "
                "truncated: download it again (dataset.download=true after deleting it)"
            ) from None
    else:
        raise UserError(
            f"{path}: no aclImdb data there; expected the folder aclImdb/ (train/{{pos,neg}}, "
            "test/{pos,neg}) or the official aclImdb_v1.tar.gz"
        )
    empty = [s for s, rows in found.items() if not rows]
    if empty:
        raise UserError(f"{path}: no {empty[0]}/pos or {empty[0]}/neg reviews in it")
    return {
        s: [(text, label, rating) for label, _, text, rating in sorted(rows)]
        for s, rows in found.items()
    }


# -- your own labelled texts ------------------------------------------------------------------

TEXT_FILES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json")


def read_labelled(
    path: Path, text_column: str, label_column: str, encoding: str = "utf-8"
) -> list[tuple[str, str]]:
    """(text, label) pairs from a CSV, TSV or JSON Lines file, or from a folder with one
    subfolder of ``.txt`` files per class (the subfolder's name is the label).

    Every mistake is one line naming the file, the line and the column (or key).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return _read_class_folders(path, encoding)
    suffix = path.suffix.lower()
    if suffix not in TEXT_FILES:
        raise UserError(
            f"{path}: not a file dlrun reads texts from; give a .csv, .tsv or .jsonl file, "
            "or a folder with one subfolder of .txt files per class"
        )
    # Read as a stream of lines: the file's rows are the only copy of its texts held.
    try:
        with open(path, encoding=bom_free(encoding), newline="") as f:
            if suffix in (".jsonl", ".ndjson", ".json"):
                rows = _jsonl_rows(path, f, text_column, label_column)
            else:
                delimiter = "," if suffix == ".csv" else "\t"
                rows = _delimited_rows(path, f, delimiter, text_column, label_column)
    except UnicodeDecodeError:
        decode_lines(path.read_bytes(), path, encoding)  # the one line: file, line, byte
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({first_line(exc, 120)})") from None
    if not rows:
        raise UserError(f"{path}: no rows of text and label in it")
    return rows


def decode_lines(raw: bytes, path: Path, encoding: str) -> str:
    """``decode`` whose one line also names the line of the first bad byte."""
    try:
        return raw.decode(bom_free(encoding))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start + skipped_bom(raw, encoding)) + 1
        return decode(raw, f"{path}: line {line:,}", encoding, key="dataset.encoding")


def _checked(path: Path, line: int, text: object, label: object, keys: tuple[str, str]):
    """The row's text and label as strings; an empty one is one line naming where."""
    for value, key, what in ((text, keys[0], "text"), (label, keys[1], "label")):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(
                f"{path}: line {line}, column '{printable(key)}': expected a {what}, got "
                f"{printable(repr(value), 40)}"
            )
        if not str(value).strip():
            raise UserError(
                f"{path}: line {line}, column '{printable(key)}': empty {what}; fill it or "
                "remove the row"
            )
    return str(text), str(label).strip()


def _missing_column(path: Path, name: str, key: str, found: list[str], where: str = "") -> str:
    return (
        f"{path}{where}: no column '{printable(name)}' (its columns: "
        f"{printable_names(found) or 'none'}); set dataset.{key}=NAME"
    )


def _delimited_rows(
    path: Path, lines: Iterable[str], delimiter: str, text_column: str, label_column: str
):
    csv.field_size_limit(sys.maxsize)  # a review is often longer than csv's 128 KiB default
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path}: empty file; expected a header row, then rows") from None
    except csv.Error as exc:
        raise UserError(f"{path}: line 1: not a valid header row ({exc})") from None
    columns = []
    for name, key in ((text_column, "text_column"), (label_column, "label_column")):
        if name not in header:
            raise UserError(_missing_column(path, name, key, header))
        columns.append(header.index(name))
    rows, line = [], reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UserError(f"{path}: line {start}: not valid CSV ({exc})") from None
        line = reader.line_num
        if not any(v.strip() for v in row):
            continue  # a blank line
        if len(row) != len(header):
            sep = "tab" if delimiter == "\t" else "comma"
            raise UserError(
                f"{path}: line {start}: {len(row)} fields where the header has {len(header)}; "
                f'quote a text that holds a {sep} ("...")'
            )
        rows.append(
            _checked(path, start, row[columns[0]], row[columns[1]], (text_column, label_column))
        )
    return rows


def _jsonl_rows(path: Path, lines: Iterable[str], text_column: str, label_column: str):
    rows = []
    for number, ending in enumerate(lines, 1):
        line = ending.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: line {number}: not JSON ({exc.msg} at column {exc.colno}); JSON "
                "Lines hold one object per line"
            ) from None
        if not isinstance(obj, dict):
            raise UserError(
                f"{path}: line {number}: expected a JSON object like "
                f'{{"{text_column}": "...", "{label_column}": "..."}}'
            )
        for name, key in ((text_column, "text_column"), (label_column, "label_column")):
            if name not in obj:
                raise UserError(_missing_column(path, name, key, list(obj), f": line {number}"))
        rows.append(
            _checked(path, number, obj[text_column], obj[label_column], (text_column, label_column))
        )
    return rows


def _read_class_folders(root: Path, encoding: str) -> list[tuple[str, str]]:
    rows = []
    for folder, paths in walk.class_folders(root, is_text_file):
        for file in paths:
            try:
                raw = file.read_bytes()
            except OSError as exc:
                raise UserError(f"{file}: cannot read it ({first_line(exc, 120)})") from None
            text = decode(raw, file, encoding, key="dataset.encoding")
            if not text.strip():
                raise UserError(f"{file}: empty text; fill it or remove the file")
            rows.append((text, folder))
    if not rows:
        raise UserError(
            f"{root}: no .txt files in subfolders; give one subfolder of .txt files per "
            "class (e.g. pos/, neg/), or a .csv, .tsv or .jsonl file"
        )
    return rows
