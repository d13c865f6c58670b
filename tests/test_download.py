"""Downloads: md5 checked, written atomically, never half-written; no network (fake opener)."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest

from dlrun.data.download import download, md5sum
from dlrun.errors import UserError

PAYLOAD = b"kuzushiji" * 1000
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": str(len(PAYLOAD))}


def opener(calls: list):
    def open_url(url):
        calls.append(url)
        return FakeResponse(PAYLOAD)

    return open_url


def test_download_writes_the_verified_file(tmp_path):
    calls = []
    dest = download("http://mirror/x.gz", tmp_path / "sub" / "x.gz", MD5, opener(calls))
    assert dest.read_bytes() == PAYLOAD and md5sum(dest) == MD5
    assert calls == ["http://mirror/x.gz"]
    # A file that already matches is kept; nothing is fetched again.
    download("http://mirror/x.gz", dest, MD5, opener(calls))
    assert len(calls) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.gz"]


def test_md5_mismatch_leaves_nothing(tmp_path):
    with pytest.raises(UserError, match=r"md5 .* != expected 0+; the transfer was corrupt"):
        download("http://mirror/x.gz", tmp_path / "x.gz", "0" * 32, opener([]))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_existing_file_is_replaced(tmp_path):
    dest = tmp_path / "x.gz"
    dest.write_bytes(PAYLOAD[:10])  # an earlier transfer cut short
    download("http://mirror/x.gz", dest, MD5, opener([]))
    assert dest.read_bytes() == PAYLOAD


def test_network_failure_is_a_user_error(tmp_path):
    def offline(url):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(UserError, match=r"could not download http://mirror/x.gz .*no route"):
        download("http://mirror/x.gz", tmp_path / "x.gz", MD5, offline)
    assert list(tmp_path.iterdir()) == []


def test_file_url_through_the_real_opener(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(PAYLOAD)
    dest = download(source.as_uri(), tmp_path / "out" / "copy.bin", MD5)
    assert dest.read_bytes() == PAYLOAD
