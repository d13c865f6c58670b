"""Word tokenizers, n-grams, frequency vocabularies and the aclImdb reader.

A few dozen lines instead of torchtext (unmaintained; its last release does not
import with current torch): ``basic_english`` follows torchtext's rules.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from dlrun.errors import UserError, first_line

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
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        fix = f"; set {key}=NAME if it is in another encoding (e.g. latin-1)" if key else ""
        raise UserError(
            f"{where}: not {encoding} text (byte {exc.start:,} is 0x{raw[exc.start]:02x}){fix}"
        ) from None


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
        for file in path.rglob("*.txt"):
            add(file.relative_to(path).as_posix(), file.read_bytes)
    elif path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            try:
                for member, content in _plain_tar_files(path):
                    add(member, lambda c=content: c)
            except _NotPlain:  # pax or GNU long-name headers: tarfile reads those
                for rows in found.values():
                    rows.clear()
                with tarfile.open(path) as tar:
                    for member in tar:
                        if member.isfile():
                            add(member.name, lambda m=member: tar.extractfile(m).read())
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
