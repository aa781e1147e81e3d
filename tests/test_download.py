"""Registry + downloader tests against a real HTTP server on 127.0.0.1 (no real network)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zecon_core.files import download as dl
from zecon_core.files import registry as reg
from zecon_core.files.registry import KnownModel

DATA = os.urandom(300_000)
DATA_SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 32 * 1024


# ---------------------------------------------------------------------------
# a small HTTP server with Range support and failure switches
# ---------------------------------------------------------------------------
@dataclass
class ServerState:
    files: dict = field(default_factory=dict)        # path -> bytes
    cut_once: dict = field(default_factory=dict)     # path -> send N body bytes, then drop the connection (once)
    ignore_range: bool = False                       # answer 200 with the whole file even to Range requests
    delay: float = 0.0                               # sleep before answering
    requests: list = field(default_factory=list)     # one dict per request
    lock: threading.Lock = field(default_factory=threading.Lock)


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        rec = {"path": urllib.parse.urlsplit(self.path).path, "range": self.headers.get("Range"), "status": None,
               "sent": 0, "answered": threading.Event()}
        with self.server.state.lock:
            self.server.state.requests.append(rec)
        try:
            self._answer(rec)
        finally:
            rec["answered"].set()

    def _answer(self, rec):
        state: ServerState = self.server.state
        path, rng = rec["path"], rec["range"]
        if state.delay:
            time.sleep(state.delay)
        data = state.files.get(path)
        if data is None:
            rec["status"] = 404
            body = b"not found"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        start, end, status = 0, len(data) - 1, 200
        if rng and not state.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            assert m, rng
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                rec["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end + 1]
        rec["status"] = status
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        with state.lock:
            cut = state.cut_once.pop(path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            rec["sent"] = cut
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)
        rec["sent"] = len(body)


def sent(server, index) -> int:
    """Body bytes the server sent for request ``index``, once its handler is done (the client can
    see the whole body, and fail, before the handler records it)."""
    rec = server.requests[index]
    assert rec["answered"].wait(5), "the server never finished answering"
    return rec["sent"]


@pytest.fixture
def server():
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    httpd.state = state
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.base = base
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                dl.URL_OVERRIDE_ENV, reg.MODELS_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.01)


def tiny_entry(base: str, *, name="tiny.bin", sha256=DATA_SHA, sha256_prefix=None, size=len(DATA), key="tiny"):
    return KnownModel(
        key=key, kind="unet", filename=name, urls=(f"{base}/{name}",), size=size,
        sha256=sha256, sha256_prefix=sha256_prefix, description="test file",
    )


def closed_port_url(name="tiny.bin") -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/{name}"


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith((".part", ".lock", ".tmp")))


# ---------------------------------------------------------------------------
# downloads
# ---------------------------------------------------------------------------
def test_good_download_progress_monotonic(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    calls = []
    out = dl.download(tiny_entry(server.base), tmp_path / "models", progress=lambda d, t: calls.append((d, t)),
                      chunk_size=CHUNK)
    assert out == tmp_path / "models" / "tiny.bin"
    assert out.read_bytes() == DATA
    assert leftovers(out.parent) == []
    assert len(calls) >= len(DATA) // CHUNK
    dones = [d for d, _ in calls]
    assert dones == sorted(dones), "progress must be monotonic"
    assert all(t == len(DATA) for _, t in calls)
    assert calls[-1] == (len(DATA), len(DATA))
    assert len(server.requests) == 1 and server.requests[0]["range"] is None


def test_resume_after_cut_within_one_call(server, tmp_path):
    n = 100_000
    server.files["/tiny.bin"] = DATA
    server.cut_once["/tiny.bin"] = n
    calls = []
    out = dl.download(tiny_entry(server.base), tmp_path, progress=lambda d, t: calls.append(d), chunk_size=CHUNK)
    assert out.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [None, f"bytes={n}-"]
    assert server.requests[1]["status"] == 206
    assert sent(server, 1) == len(DATA) - n, "only the remainder may be transferred"
    assert calls == sorted(calls) and calls[-1] == len(DATA)
    assert leftovers(tmp_path) == []


def test_resume_across_calls(server, tmp_path):
    n = 123_456
    server.files["/tiny.bin"] = DATA
    server.cut_once["/tiny.bin"] = n
    entry = tiny_entry(server.base)
    with pytest.raises(dl.DownloadNetworkError) as ei:
        dl.download(entry, tmp_path, retries=0, progress=False)
    msg = str(ei.value)
    assert f"{server.base}/tiny.bin" in msg and "cut" in msg and "resumes" in msg
    assert ei.value.kinds == ("cut",)
    part = tmp_path / "tiny.bin.part"
    assert part.stat().st_size == n
    assert not (tmp_path / "tiny.bin").exists()
    assert not (tmp_path / "tiny.bin.part.lock").exists()

    out = dl.download(entry, tmp_path, retries=0, progress=False)
    assert out.read_bytes() == DATA
    assert server.requests[-1]["range"] == f"bytes={n}-"
    assert sent(server, -1) == len(DATA) - n
    assert leftovers(tmp_path) == []


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    server.ignore_range = True
    (tmp_path / "tiny.bin.part").write_bytes(b"garbage that is not the start of the file")
    out = dl.download(tiny_entry(server.base), tmp_path, progress=False)
    assert out.read_bytes() == DATA
    assert server.requests[0]["range"] is not None and server.requests[0]["status"] == 200


def test_416_on_resume_discards_part(server, tmp_path):
    server.files["/tiny.bin"] = DATA[:1000]  # the server now has a different, shorter file
    (tmp_path / "tiny.bin.part").write_bytes(DATA[:2000])
    with pytest.raises(dl.DownloadVerificationError):
        dl.download(tiny_entry(server.base), tmp_path, progress=False)
    assert [r["status"] for r in server.requests] == [416, 200]
    assert leftovers(tmp_path) == []


def test_complete_part_is_verified_without_request(server, tmp_path):
    (tmp_path / "tiny.bin.part").write_bytes(DATA)
    out = dl.download(tiny_entry(server.base), tmp_path, progress=False)
    assert out.read_bytes() == DATA
    assert server.requests == []


def test_wrong_content_rejected_and_deleted(server, tmp_path):
    bad = bytes(len(DATA))  # right size, wrong bytes
    server.files["/tiny.bin"] = bad
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.download(tiny_entry(server.base), tmp_path, progress=False)
    msg = str(ei.value)
    assert DATA_SHA in msg and hashlib.sha256(bad).hexdigest() in msg
    assert ei.value.actual == hashlib.sha256(bad).hexdigest()
    assert f"{server.base}/tiny.bin" in msg and str(tmp_path) in msg
    assert not (tmp_path / "tiny.bin").exists()
    assert leftovers(tmp_path) == []


def test_wrong_size_rejected_early(server, tmp_path):
    server.files["/tiny.bin"] = DATA[:1000]
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.download(tiny_entry(server.base), tmp_path, progress=False)
    assert "1,000 bytes" in str(ei.value) and f"{len(DATA):,} bytes" in str(ei.value)
    assert not (tmp_path / "tiny.bin").exists()
    assert sent(server, 0) == 1000


def test_404(server, tmp_path):
    with pytest.raises(dl.DownloadNetworkError) as ei:
        dl.download(tiny_entry(server.base), tmp_path / "m", progress=False)
    msg = str(ei.value)
    assert "404" in msg
    assert f"{server.base}/tiny.bin" in msg
    assert "by hand" in msg and str(tmp_path / "m") in msg
    assert ei.value.kinds == ("http_404",)
    assert not (tmp_path / "m" / "tiny.bin").exists()
    assert leftovers(tmp_path / "m") == []


def test_server_gone(tmp_path):
    url = closed_port_url()
    entry = KnownModel(key="gone", kind="vgg", filename="tiny.bin", urls=(url,), size=len(DATA), sha256=DATA_SHA)
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadNetworkError) as ei:
        dl.download(entry, tmp_path, progress=False, timeout=5)
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "connection refused" in msg
    assert url in msg
    assert f"Download it by hand from {url} and put it in {tmp_path} as tiny.bin" in msg
    assert ei.value.kinds == ("refused",) and ei.value.urls == (url,)


def test_timeout(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    server.delay = 1.0
    with pytest.raises(dl.DownloadNetworkError) as ei:
        dl.download(tiny_entry(server.base), tmp_path, progress=False, timeout=0.2, retries=0)
    assert "timed out" in str(ei.value) and ei.value.kinds == ("timeout",)


def test_fallback_to_second_url(server, tmp_path):
    server.files["/mirror/tiny.bin"] = DATA
    urls = [f"{server.base}/missing/tiny.bin", f"{server.base}/mirror/tiny.bin"]
    out = dl.download(tiny_entry(server.base), tmp_path, urls_override=urls, progress=False)
    assert out.read_bytes() == DATA
    assert [r["path"] for r in server.requests] == ["/missing/tiny.bin", "/mirror/tiny.bin"]


def test_already_present_makes_no_request(server, tmp_path, monkeypatch):
    server.files["/tiny.bin"] = DATA
    (tmp_path / "tiny.bin").write_bytes(DATA)
    entry = tiny_entry(server.base)
    assert dl.download(entry, tmp_path, progress=False) == tmp_path / "tiny.bin"
    assert server.requests == []
    # second time the verification stamp is trusted: no hashing at all
    monkeypatch.setattr(dl, "sha256_file", lambda *a, **k: pytest.fail("file was hashed again"))
    assert dl.download(entry, tmp_path, progress=False) == tmp_path / "tiny.bin"
    assert server.requests == []


def test_stamp_ignored_after_file_changes(server, tmp_path):
    entry = tiny_entry(server.base)
    f = tmp_path / "tiny.bin"
    f.write_bytes(DATA)
    dl.download(entry, tmp_path, progress=False)  # writes the stamp
    f.write_bytes(bytes(len(DATA)))  # same size, new content, new mtime
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    with pytest.raises(dl.DownloadVerificationError):
        dl.download(entry, tmp_path, progress=False)


def test_existing_invalid_file_is_kept_unless_asked(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    f = tmp_path / "tiny.bin"
    f.write_bytes(b"user's own file")
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.download(tiny_entry(server.base), tmp_path, progress=False)
    assert "left untouched" in str(ei.value)
    assert f.read_bytes() == b"user's own file" and server.requests == []
    out = dl.download(tiny_entry(server.base), tmp_path, progress=False, overwrite_invalid=True)
    assert out.read_bytes() == DATA


def test_sha256_prefix_only_entry(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    good = tiny_entry(server.base, sha256=None, sha256_prefix=DATA_SHA[:8])
    assert dl.download(good, tmp_path / "a", progress=False).read_bytes() == DATA
    wrong_prefix = "0" * 8 if not DATA_SHA.startswith("0" * 8) else "f" * 8
    bad = tiny_entry(server.base, sha256=None, sha256_prefix=wrong_prefix)
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.download(bad, tmp_path / "b", progress=False)
    assert f"starting with {wrong_prefix}" in str(ei.value) and DATA_SHA in str(ei.value)
    assert list((tmp_path / "b").iterdir()) == []


def test_plain_url_with_explicit_hash(server, tmp_path):
    server.files["/dir/plain%20name.bin"] = DATA
    out = dl.download(f"{server.base}/dir/plain%20name.bin", tmp_path, sha256=DATA_SHA.upper(), progress=False)
    assert out.name == "plain name.bin" and out.read_bytes() == DATA


def test_default_tqdm_bar_does_not_break(server, tmp_path, capsys):
    server.files["/tiny.bin"] = DATA
    out = dl.download(tiny_entry(server.base), tmp_path)  # progress=None -> tqdm if importable
    assert out.read_bytes() == DATA


def test_non_http_urls_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    with pytest.raises(dl.DownloadError, match="only http"):
        dl.download(secret.as_uri(), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="only http"):
        KnownModel(key="x", kind="unet", filename="x.pt", urls=("ftp://example.org/x.pt",))
    assert not (tmp_path / "out").exists()


def test_not_enough_disk_space(server, tmp_path, monkeypatch):
    server.files["/tiny.bin"] = DATA

    class Usage:
        free = 10

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(dl.DownloadError, match="Not enough disk space"):
        dl.download(tiny_entry(server.base), tmp_path, progress=False)
    assert server.requests == []


# ---------------------------------------------------------------------------
# URL override environment variable
# ---------------------------------------------------------------------------
def test_env_override_json_mapping(server, tmp_path, monkeypatch):
    server.files["/local/tiny.bin"] = DATA
    entry = KnownModel(key="tiny", kind="unet", filename="tiny.bin", urls=("https://example.invalid/tiny.bin",),
                       size=len(DATA), sha256=DATA_SHA)
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, json.dumps({"tiny": f"{server.base}/local/tiny.bin"}))
    assert dl.resolve_urls(entry, "tiny.bin") == (f"{server.base}/local/tiny.bin",)
    assert dl.download(entry, tmp_path, progress=False).read_bytes() == DATA
    # a mapping that does not name a model leaves its registry URLs alone
    assert dl.resolve_urls(reg.KNOWN_MODELS["imagenet"], "256x256_diffusion_uncond.pt") == reg.KNOWN_MODELS["imagenet"].urls


def test_env_override_base_url_with_registry_key(server, tmp_path, monkeypatch):
    # the real registry entry for vgg19, served by the local mirror: size/hash still enforced
    server.files["/mirror/vgg19-dcbb9e9d.pth"] = DATA
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, f"{server.base}/mirror/")
    with pytest.raises(dl.DownloadVerificationError) as ei:
        dl.ensure_known_model("vgg19", tmp_path, progress=False)
    assert f"{server.base}/mirror/vgg19-dcbb9e9d.pth" in str(ei.value)
    assert server.requests[0]["path"] == "/mirror/vgg19-dcbb9e9d.pth"
    # the by-hand hint names the official URL too
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in str(ei.value)
    assert not (tmp_path / "vgg19-dcbb9e9d.pth").exists()


def test_env_override_bad_values(monkeypatch):
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, "{not json")
    with pytest.raises(dl.DownloadError, match="not valid JSON"):
        dl.resolve_urls(None, "x.pt")
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, "file:///tmp")
    with pytest.raises(dl.DownloadError, match="only http"):
        dl.resolve_urls(None, "x.pt")


# ---------------------------------------------------------------------------
# lock
# ---------------------------------------------------------------------------
def test_fresh_lock_blocks_second_writer(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    lock = tmp_path / "tiny.bin.part.lock"
    lock.write_text("pid=1 other process")
    with pytest.raises(dl.DownloadLockedError, match="Another process"):
        dl.download(tiny_entry(server.base), tmp_path, progress=False, lock_timeout=0.3)
    assert server.requests == [] and lock.read_text() == "pid=1 other process"


def test_stale_lock_is_taken_over(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    lock = tmp_path / "tiny.bin.part.lock"
    lock.write_text("pid=1 crashed process")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    out = dl.download(tiny_entry(server.base), tmp_path, progress=False, lock_timeout=0.3)
    assert out.read_bytes() == DATA and not lock.exists()


def test_waiter_returns_file_finished_by_lock_holder(server, tmp_path):
    entry = tiny_entry(server.base)
    lock = tmp_path / "tiny.bin.part.lock"
    lock.write_text("pid=1 other process")

    def finish():
        time.sleep(0.3)
        (tmp_path / "tiny.bin").write_bytes(DATA)
        lock.unlink()

    t = threading.Thread(target=finish)
    t.start()
    out = dl.download(entry, tmp_path, progress=False, lock_timeout=5)
    t.join()
    assert out.read_bytes() == DATA and server.requests == []


def test_two_concurrent_downloads_fetch_once(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    server.delay = 0.3
    entry = tiny_entry(server.base)
    results, errors = [], []

    def run():
        try:
            results.append(dl.download(entry, tmp_path, progress=False, lock_timeout=10))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [tmp_path / "tiny.bin"] * 2
    assert len(server.requests) == 1
    assert (tmp_path / "tiny.bin").read_bytes() == DATA and leftovers(tmp_path) == []


def test_lock_lost_is_detected(tmp_path, monkeypatch):
    lock = dl._PartLock(tmp_path / "x.part.lock", timeout=1, stale_after=60)
    lock.acquire()
    (tmp_path / "x.part.lock").write_text("someone else")
    with pytest.raises(dl.DownloadLockedError, match="Lost"):
        lock.heartbeat(force=True)
    lock.release()
    assert (tmp_path / "x.part.lock").read_text() == "someone else"


# ---------------------------------------------------------------------------
# ensure_known_model and registry
# ---------------------------------------------------------------------------
def test_ensure_known_model_manual_entry(tmp_path):
    with pytest.raises(dl.ManualDownloadRequired) as ei:
        dl.ensure_known_model("ffhq_baseline", tmp_path)
    msg = str(ei.value)
    assert "https://github.com/jychoi118/P2-weighting" in msg
    assert str(tmp_path) in msg and "ffhq_baseline.pt" in msg
    (tmp_path / "ffhq_baseline.pt").write_bytes(b"weights")
    assert dl.ensure_known_model("ffhq_baseline", tmp_path) == tmp_path / "ffhq_baseline.pt"


def test_ensure_known_model_clip_is_open_clips_job(tmp_path):
    with pytest.raises(dl.ManualDownloadRequired) as ei:
        dl.ensure_known_model("clip_vit_b16_openai", tmp_path)
    assert "open_clip" in str(ei.value) and "timm/vit_base_patch16_clip_224.openai" in str(ei.value)


def test_ensure_known_model_unknown(tmp_path):
    with pytest.raises(dl.DownloadError, match="Unknown model"):
        dl.ensure_known_model("nope", tmp_path)


def test_ensure_known_model_with_entry(server, tmp_path):
    server.files["/tiny.bin"] = DATA
    assert dl.ensure_known_model(tiny_entry(server.base), tmp_path, progress=False).read_bytes() == DATA


def test_cli_list(capsys):
    assert dl.main(["--list"]) == 0
    out = capsys.readouterr().out
    for key in reg.KNOWN_MODELS:
        assert key in out


def test_no_network_at_import(monkeypatch):
    def no_connect(*a, **k):
        raise AssertionError("network used at import time")

    import zecon_core

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket, "create_connection", no_connect)
    for attr in ("registry", "download", "convert"):  # restore the package attributes afterwards
        if hasattr(zecon_core, attr):
            monkeypatch.setattr(zecon_core, attr, getattr(zecon_core, attr))
    for name in ("zecon_core.files.registry", "zecon_core.files.download", "zecon_core.files.convert"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ("zecon_core.files.registry", "zecon_core.files.download", "zecon_core.files.convert"):
        importlib.import_module(name)


def test_registry_table():
    assert set(reg.KNOWN_MODELS) == {"imagenet", "ffhq", "ffhq_baseline", "vgg19", "clip_vit_b16_openai",
                                     "taesd_decoder", "taesdxl_decoder", "taesd3_decoder", "taef1_decoder"}
    im = reg.KNOWN_MODELS["imagenet"]
    assert (im.kind, im.filename, im.size) == ("unet", "256x256_diffusion_uncond.pt", 2_211_383_297)
    assert im.sha256 == "a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1"
    ff = reg.KNOWN_MODELS["ffhq"]
    assert (ff.filename, ff.size) == ("ffhq_10m.pt", 374_417_833)
    assert ff.urls == ("https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt",)
    assert not reg.KNOWN_MODELS["ffhq_baseline"].urls
    vgg = reg.KNOWN_MODELS["vgg19"]
    assert vgg.kind == "vgg" and vgg.sha256_prefix == "dcbb9e9d" and vgg.sha256 is None
    assert vgg.filename.split("-")[-1].split(".")[0] == vgg.sha256_prefix  # torchvision naming convention
    clip = reg.KNOWN_MODELS["clip_vit_b16_openai"]
    assert clip.kind == "clip" and not clip.urls and clip.managed_by_open_clip
    assert (clip.open_clip_model, clip.open_clip_pretrained) == ("ViT-B-16", "openai")
    for m in reg.KNOWN_MODELS.values():
        assert m.verifiable or not m.urls, "every downloadable entry must be verifiable"
        assert m.size or m.git_blob or not m.urls  # a Git blob id fixes the size too
        hash(m)  # frozen and hashable
    with pytest.raises(Exception):
        im.size = 1


def test_registry_lookups():
    im = reg.KNOWN_MODELS["imagenet"]
    assert reg.get_known("imagenet") is im
    assert reg.get_known("256x256_diffusion_uncond.pt") is im
    assert reg.get_known("/some/dir/256x256_diffusion_uncond.pt") is im
    assert reg.get_known("C:\\models\\256x256_diffusion_uncond.pt") is im
    assert reg.get_known("diffusion_ffhq_10m.pt") is reg.KNOWN_MODELS["ffhq"]
    assert reg.get_known("unknown.pt") is None and reg.get_known(None) is None
    assert [m.key for m in reg.known_for_kind("unet")] == ["imagenet", "ffhq", "ffhq_baseline"]
    assert [m.key for m in reg.known_for_kind("vgg")] == ["vgg19"]
    assert [m.key for m in reg.known_for_kind("clip")] == ["clip_vit_b16_openai"]
    assert [m.key for m in reg.known_for_kind("taesd")] == ["taesd_decoder", "taesdxl_decoder", "taesd3_decoder",
                                                           "taef1_decoder"]
    with pytest.raises(ValueError):
        reg.known_for_kind("lora")


def test_display_names_round_trip():
    im = reg.KNOWN_MODELS["imagenet"]
    assert reg.display_name_not_downloaded(im) == "256x256_diffusion_uncond.pt (download on first use)"
    labels = set()
    for m in reg.KNOWN_MODELS.values():
        label = reg.display_name_not_downloaded(m)
        labels.add(label)
        assert reg.parse_display_name(label) is m
        assert reg.get_known(label) is m
    assert len(labels) == len(reg.KNOWN_MODELS)
    assert "place it by hand" in reg.display_name_not_downloaded(reg.KNOWN_MODELS["ffhq_baseline"])
    assert reg.parse_display_name("256x256_diffusion_uncond.pt") is None
    assert reg.parse_display_name("my_model.pt (download on first use)") is None


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert reg.default_cache_dir() == tmp_path / "home" / ".cache" / "zecon" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert reg.default_cache_dir() == tmp_path / "xdg" / "zecon" / "models"
    monkeypatch.setenv(reg.MODELS_DIR_ENV, str(tmp_path / "explicit"))
    assert reg.default_cache_dir() == tmp_path / "explicit"
    assert not (tmp_path / "explicit").exists()  # never created by the lookup
