"""Git blob id verification of downloads and existing files, and the TAESD registry entries.

Downloads come from the 127.0.0.1 server of tests/test_download.py (no real network).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from test_download import _clean_env, closed_port_url, leftovers, server  # noqa: F401  (fixtures)
from zecon_core.files import download as dl
from zecon_core.files import registry as reg
from zecon_core.files.registry import KnownModel

DATA = os.urandom(200_000)
OTHER = os.urandom(200_000)  # same size, other bytes
TAESD_MIRROR = Path("/work/.mirror/madebyollin+taesd/repo")


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


DATA_BLOB = blob_id(DATA)


def blob_entry(base: str, *, name="w.pth", git_blob=DATA_BLOB, sha256=None, key="blobby") -> KnownModel:
    return KnownModel(key=key, kind="taesd", filename=name, urls=(f"{base}/{name}",), git_blob=git_blob,
                      sha256=sha256, description="test file")


def stamp(d: Path, name="w.pth") -> dict:
    return json.loads((d / f".{name}.verified.json").read_text())


# ---------------------------------------------------------------------------
# the digest itself
# ---------------------------------------------------------------------------
def test_git_blob_file_is_gits_blob_id(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(DATA)
    assert dl.git_blob_file(f) == DATA_BLOB
    (tmp_path / "empty").write_bytes(b"")
    assert dl.git_blob_file(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    if shutil.which("git"):
        out = subprocess.run(["git", "hash-object", "--no-filters", str(f)], capture_output=True, text=True)
        if out.returncode == 0:
            assert out.stdout.strip() == DATA_BLOB


# ---------------------------------------------------------------------------
# downloads
# ---------------------------------------------------------------------------
def test_download_with_right_blob_is_accepted_and_stamped(server, tmp_path, monkeypatch):
    server.files["/w.pth"] = DATA
    entry = blob_entry(server.base)
    out = dl.download(entry, tmp_path, progress=False)
    assert out == tmp_path / "w.pth" and out.read_bytes() == DATA
    assert leftovers(tmp_path) == []
    rec = stamp(tmp_path)
    assert rec["git_blob"] == DATA_BLOB and rec["sha256"] == hashlib.sha256(DATA).hexdigest()
    # next time: no request, and the stamp is trusted (no hashing)
    monkeypatch.setattr(dl, "git_blob_file", lambda *a, **k: pytest.fail("file was hashed again"))
    monkeypatch.setattr(dl, "sha256_file", lambda *a, **k: pytest.fail("file was hashed again"))
    assert dl.download(entry, tmp_path, progress=False) == out
    assert len(server.requests) == 1


def test_download_with_wrong_blob_is_rejected_and_deleted(server, tmp_path):
    server.files["/w.pth"] = OTHER
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.download(blob_entry(server.base), tmp_path, progress=False)
    msg = str(ei.value)
    assert f"expected Git blob id {DATA_BLOB}, got Git blob id {blob_id(OTHER)}" in msg
    assert "the downloaded file was deleted" in msg
    assert ei.value.expected == f"Git blob id {DATA_BLOB}" and ei.value.actual == blob_id(OTHER)
    assert f"Download it by hand from {server.base}/w.pth" in msg and f"Git blob id {DATA_BLOB}" in msg
    assert not (tmp_path / "w.pth").exists() and leftovers(tmp_path) == []


def test_resumed_part_is_verified_by_blob(server, tmp_path):
    server.files["/w.pth"] = DATA
    (tmp_path / "w.pth.part").write_bytes(DATA[:50_000])
    out = dl.download(blob_entry(server.base), tmp_path, progress=False)
    assert out.read_bytes() == DATA
    assert server.requests[0]["range"] == "bytes=50000-"
    # a part that starts with other bytes ends up with the wrong blob id: rejected
    (out).unlink()
    (tmp_path / "w.pth.part").write_bytes(OTHER[:50_000])
    with pytest.raises(dl.DownloadVerificationError):
        dl.download(blob_entry(server.base), tmp_path, progress=False)
    assert not (tmp_path / "w.pth").exists() and leftovers(tmp_path) == []


def test_sha256_and_blob_are_both_checked(server, tmp_path):
    server.files["/w.pth"] = DATA
    good_sha = hashlib.sha256(DATA).hexdigest()
    out = dl.download(blob_entry(server.base, sha256=good_sha), tmp_path / "a", progress=False)
    assert out.read_bytes() == DATA
    with pytest.raises(dl.DownloadVerificationError) as ei:  # right SHA256, wrong blob id
        dl.download(blob_entry(server.base, sha256=good_sha, git_blob=blob_id(OTHER)), tmp_path / "b",
                    progress=False)
    assert "got Git blob id" in str(ei.value)
    with pytest.raises(dl.DownloadVerificationError) as ei:  # wrong SHA256, right blob id
        dl.download(blob_entry(server.base, sha256=hashlib.sha256(OTHER).hexdigest()), tmp_path / "c",
                    progress=False)
    assert "got SHA256" in str(ei.value)


def test_plain_url_with_explicit_blob(server, tmp_path):
    server.files["/x/w.pth"] = DATA
    url = f"{server.base}/x/w.pth"
    assert dl.download(url, tmp_path, git_blob=DATA_BLOB.upper(), progress=False).read_bytes() == DATA
    with pytest.raises(dl.DownloadVerificationError):
        dl.download(url, tmp_path / "other", git_blob=blob_id(OTHER), progress=False)
    for bad in ("abc", "z" * 40, DATA_BLOB + "00"):
        with pytest.raises(dl.DownloadError, match="git_blob"):
            dl.download(url, tmp_path / "bad", git_blob=bad, progress=False)


def test_explicit_digest_replaces_the_entrys(server, tmp_path):
    server.files["/w.pth"] = OTHER
    entry = blob_entry(server.base)  # expects DATA's blob id
    out = dl.download(entry, tmp_path, git_blob=blob_id(OTHER), progress=False)
    assert out.read_bytes() == OTHER


# ---------------------------------------------------------------------------
# existing files
# ---------------------------------------------------------------------------
def test_existing_file_with_right_blob_needs_no_request(server, tmp_path):
    (tmp_path / "w.pth").write_bytes(DATA)
    assert dl.download(blob_entry(server.base), tmp_path, progress=False) == tmp_path / "w.pth"
    assert server.requests == []
    assert stamp(tmp_path)["git_blob"] == DATA_BLOB


def test_existing_file_with_wrong_blob_is_kept_and_reported(server, tmp_path):
    server.files["/w.pth"] = DATA
    f = tmp_path / "w.pth"
    f.write_bytes(OTHER)
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.download(blob_entry(server.base), tmp_path, progress=False)
    msg = str(ei.value)
    assert f"its Git blob id is {blob_id(OTHER)}, expected Git blob id {DATA_BLOB}" in msg
    assert "left untouched" in msg
    assert f.read_bytes() == OTHER and server.requests == []
    out = dl.download(blob_entry(server.base), tmp_path, progress=False, overwrite_invalid=True)
    assert out.read_bytes() == DATA


def test_sha256_only_stamp_gets_the_blob_added(server, tmp_path):
    """A stamp written by an older version (SHA256 only) is completed, not trusted blindly."""
    f = tmp_path / "w.pth"
    f.write_bytes(OTHER)
    st = f.stat()
    (tmp_path / ".w.pth.verified.json").write_text(json.dumps(
        {"sha256": hashlib.sha256(OTHER).hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    with pytest.raises(dl.DownloadVerificationError):
        dl.download(blob_entry(server.base), tmp_path, progress=False)
    f.write_bytes(DATA)
    st = f.stat()
    (tmp_path / ".w.pth.verified.json").write_text(json.dumps(
        {"sha256": hashlib.sha256(DATA).hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    assert dl.download(blob_entry(server.base), tmp_path, progress=False) == f
    assert stamp(tmp_path)["git_blob"] == DATA_BLOB


def test_changed_file_is_hashed_again(server, tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(DATA)
    dl.download(blob_entry(server.base), tmp_path, progress=False)
    f.write_bytes(OTHER)
    os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
    with pytest.raises(dl.DownloadVerificationError):
        dl.download(blob_entry(server.base), tmp_path, progress=False)


# ---------------------------------------------------------------------------
# the TAESD entries
# ---------------------------------------------------------------------------
TAESD = {"taesd_decoder": ("taesd_decoder.pth", "5915a429fc08eba4adf62bf74f96705b8b0d5c1f"),
         "taesdxl_decoder": ("taesdxl_decoder.pth", "477bc7e9604f418029508e72ac8719bb9d048291"),
         "taesd3_decoder": ("taesd3_decoder.pth", "7943be72a9151d0b330c5d8a4fbb885d889b60a1"),
         "taef1_decoder": ("taef1_decoder.pth", "0052642b054c2cb6e1b40e4cf43777774a98cdf9")}


def test_taesd_entries_are_pinned_and_verifiable():
    assert re.fullmatch(r"[0-9a-f]{40}", reg.TAESD_COMMIT)
    assert reg.comfy_models_subdir("taesd") == "vae_approx" and reg.comfy_models_subdir("unet") == "zecon"
    assert [m.key for m in reg.known_for_kind("taesd")] == list(TAESD)
    for key, (filename, blob) in TAESD.items():
        m = reg.KNOWN_MODELS[key]
        assert (m.kind, m.filename, m.git_blob) == ("taesd", filename, blob)
        assert re.fullmatch(r"[0-9a-f]{40}", m.git_blob)
        assert m.sha256 is None and m.sha256_prefix is None and m.verifiable and m.downloadable
        assert m.urls[0] == f"https://raw.githubusercontent.com/madebyollin/taesd/{reg.TAESD_COMMIT}/{filename}"
        for url in m.urls:
            parts = urllib.parse.urlsplit(url)
            assert parts.scheme == "https" and parts.netloc in ("raw.githubusercontent.com", "github.com")
            commit = re.fullmatch(r"/madebyollin/taesd/(?:raw/)?([0-9a-f]+)/" + re.escape(filename), parts.path)
            assert commit and len(commit.group(1)) == 40 and commit.group(1) == reg.TAESD_COMMIT, url
        note = m.source_note
        assert "MIT" in note and reg.TAESD_COMMIT in note and blob in note
        assert "SHA256" in note and "could not be recorded" in note and "Git blob id" in note
        assert reg.get_known(filename) is m
        assert "vae_approx" in m.manual_text()


@pytest.mark.skipif(not (TAESD_MIRROR / "HEAD").exists(), reason="no local mirror of madebyollin/taesd")
def test_taesd_blob_ids_match_the_mirror():
    tree = subprocess.run(["git", "-C", str(TAESD_MIRROR), "ls-tree", reg.TAESD_COMMIT],
                          capture_output=True, text=True, check=True).stdout
    listed = {line.split("\t")[1]: line.split()[2] for line in tree.splitlines()}
    for key, (filename, blob) in TAESD.items():
        assert listed[filename] == blob
        if key in ("taesd3_decoder", "taef1_decoder"):
            continue   # older files of the same pinned tree (taef1 1.1 came later; the pin keeps 1.0)
        later = subprocess.run(["git", "-C", str(TAESD_MIRROR), "log", "--format=%H", "-1", "--", filename],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert later == reg.TAESD_COMMIT  # no later commit changed the file


def test_real_taesd_entry_rejects_other_bytes_via_override(server, tmp_path, monkeypatch):
    server.files["/mirror/taesd_decoder.pth"] = DATA
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, json.dumps({"taesd_decoder": f"{server.base}/mirror/taesd_decoder.pth"}))
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.ensure_known_model("taesd_decoder", tmp_path, progress=False)
    assert f"expected Git blob id {TAESD['taesd_decoder'][1]}" in str(ei.value)
    assert [r["path"] for r in server.requests] == ["/mirror/taesd_decoder.pth"]
    assert not (tmp_path / "taesd_decoder.pth").exists()


def test_known_model_rejects_bad_git_blob():
    for bad in ("abc", "G" * 40, "5915A429FC08EBA4ADF62BF74F96705B8B0D5C1F", "0" * 64):
        with pytest.raises(ValueError, match="git_blob"):
            KnownModel(key="k", kind="taesd", filename="f.pth", urls=("https://example.invalid/f.pth",),
                       git_blob=bad)


def test_unreachable_server_names_the_pinned_url(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, closed_port_url("").rstrip("/"))
    with pytest.raises(dl.DownloadNetworkError) as ei:
        dl.ensure_known_model("taesdxl_decoder", tmp_path, progress=False, timeout=5)
    msg = str(ei.value)
    assert "connection refused" in msg
    assert reg.KNOWN_MODELS["taesdxl_decoder"].urls[0] in msg and str(tmp_path) in msg
