"""Verified, resumable downloads of model files (stdlib ``urllib`` only).

Nothing here runs at import time: a file is fetched only when :func:`download` or
:func:`ensure_known_model` is called, and only from a URL of the registry table
(:mod:`zecon_core.files.registry`), an explicit ``urls_override``/URL argument, or the
override environment variable below.

What a download does
--------------------
1. If ``<dest_dir>/<filename>`` exists and matches the expected size and digests
   (SHA256 or its prefix, and/or the Git blob id, see below), it is returned
   without any request. Hashing a big file takes seconds, so after a successful
   check a stamp ``.<filename>.verified.json`` (size, mtime, the digests computed)
   is written next to it and later checks trust the stamp while size and mtime
   are unchanged. An existing file that does *not* match is never overwritten
   unless ``overwrite_invalid=True``: the error tells the user to remove it.
2. Otherwise the bytes go to ``<filename>.part``. If a ``.part`` is already there
   the request carries ``Range: bytes=<len>-``; a ``206`` answer is appended, a
   ``200`` answer restarts the file from zero. A cut connection or a timeout is
   retried ``retries`` times (resuming each time); then the next URL is tried.
3. The complete ``.part`` is checked (size, then SHA256 or its prefix, then the
   Git blob id). On a mismatch it is deleted and a :class:`DownloadVerificationError` names the
   expected and actual values. On success it is fsynced and moved into place
   with :func:`os.replace` (atomic on the same file system).
4. A lock file ``<filename>.part.lock`` (created with ``O_EXCL``) keeps two
   processes from writing the same ``.part``. Its owner touches it at least every
   :data:`LOCK_HEARTBEAT_S` seconds; a lock untouched for ``lock_stale_after``
   seconds (default :data:`LOCK_STALE_AFTER_S`) is considered left over by a dead
   process and removed. A waiting process polls until the lock is released, then
   finds the finished file and returns it.

Git blob ids: for a file fetched from a pinned commit of a Git repository whose
SHA256 is not known, an entry (or ``download(git_blob=...)``) gives the file's Git
blob id: the hex SHA-1 over ``b"blob <size>\\0" + content``, what ``git ls-tree``
lists and ``git hash-object`` prints. It fixes the content and the size. The
SHA256 is hashed while the bytes arrive; the blob id needs the final size in its
header, so it is computed by reading the finished ``.part`` once more.

Progress: ``progress(done_bytes, total_bytes)`` (``total_bytes`` is ``None`` when
unknown) is called after every chunk. With ``progress=None`` a tqdm bar is shown
when tqdm is importable; ``progress=False`` shows nothing. An exception raised by
the callback (e.g. a user interrupt) stops the download; the ``.part`` is kept for
a later resume. After a restart (server ignored the Range request) ``done``
starts again from 0.

Offline mirrors and tests
-------------------------
The environment variable :data:`URL_OVERRIDE_ENV` (``ZECON_DOWNLOAD_URL_OVERRIDE``)
redirects downloads:

* a JSON object mapping a registry key or a file name to a URL or a list of URLs,
  e.g. ``{"imagenet": "http://127.0.0.1:8000/256x256_diffusion_uncond.pt"}``;
  entries not named keep their registry URLs;
* or a base URL, e.g. ``http://127.0.0.1:8000/models``: every file is fetched from
  ``<base>/<filename>``.

The expected size and digests are still enforced. Only ``http``/``https`` URLs are
accepted (also for redirects).

Errors are :class:`DownloadError` subclasses whose message lists each URL tried
with its cause (HTTP status, connection refused, timeout, DNS failure, cut
connection, ...) and ends with "Download it by hand from <url> and put it in
<folder> as <filename>".
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

from .registry import KNOWN_MODELS, KnownModel, default_cache_dir, get_known

__all__ = [
    "URL_OVERRIDE_ENV",
    "LOCK_STALE_AFTER_S",
    "LOCK_HEARTBEAT_S",
    "DownloadError",
    "DownloadNetworkError",
    "DownloadVerificationError",
    "DownloadLockedError",
    "ManualDownloadRequired",
    "download",
    "ensure_known_model",
    "resolve_urls",
    "sha256_file",
    "git_blob_file",
    "main",
]

URL_OVERRIDE_ENV = "ZECON_DOWNLOAD_URL_OVERRIDE"
LOCK_STALE_AFTER_S = 120.0
LOCK_HEARTBEAT_S = 10.0
#: Pause before retry number n of one URL: n * RETRY_BACKOFF_S seconds (at most 10 s).
RETRY_BACKOFF_S = 1.0
USER_AGENT = "zecon-comfyui-downloader/1.0 (python-urllib)"
_HASH_BLOCK = 1 << 20

ProgressCallback = Callable[[int, Union[int, None]], None]


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
class DownloadError(RuntimeError):
    """A model file could not be obtained. ``urls`` are the URLs tried,
    ``dest_dir``/``filename`` where the file was meant to go, ``causes`` a list of
    ``(url, text)`` pairs."""

    def __init__(
        self,
        message: str,
        *,
        urls: Sequence[str] = (),
        dest_dir: str | os.PathLike | None = None,
        filename: str | None = None,
        causes: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.urls = tuple(urls)
        self.dest_dir = Path(dest_dir) if dest_dir is not None else None
        self.filename = filename
        self.causes = tuple(causes)


class DownloadNetworkError(DownloadError):
    """No URL could be fetched (HTTP error, refused, timeout, DNS, cut connection).
    ``kinds`` holds a short code per failure: ``http_404``, ``refused``, ``timeout``,
    ``dns``, ``cut``, ``tls``, ``unreachable``, ``other``."""

    def __init__(self, message: str, *, kinds: Sequence[str] = (), **kw) -> None:
        super().__init__(message, **kw)
        self.kinds = tuple(kinds)


class DownloadVerificationError(DownloadError):
    """A file had the wrong size, SHA256 or Git blob id (``expected``/``actual`` describe it)."""

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class DownloadLockedError(DownloadError):
    """Another process is downloading the same file (its lock is fresh)."""


class ManualDownloadRequired(DownloadError):
    """The file has no direct download link (or another library fetches it)."""


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def _hash_into(hasher, path: str | os.PathLike, tick: Callable[[], None] | None = None):
    """Feed the file at ``path`` to ``hasher`` in 1 MiB blocks (``tick()`` after each); returns ``hasher``."""
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            hasher.update(block)
            if tick is not None:
                tick()
    return hasher


def sha256_file(path: str | os.PathLike, *, tick: Callable[[], None] | None = None) -> str:
    """Hex SHA256 of a file, read in 1 MiB blocks."""
    return _hash_into(hashlib.sha256(), path, tick).hexdigest()


def git_blob_file(path: str | os.PathLike, *, tick: Callable[[], None] | None = None) -> str:
    """Git blob id of a file: hex SHA-1 over ``b"blob <size>\\0" + content`` (what
    ``git hash-object <path>`` prints), read in 1 MiB blocks."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        hasher = hashlib.sha1(b"blob %d\0" % size)
        done = 0
        while block := f.read(_HASH_BLOCK):
            hasher.update(block)
            done += len(block)
            if tick is not None:
                tick()
    if done != size:
        raise DownloadError(f"{path} changed size while it was hashed ({size:,} -> {done:,} bytes)")
    return hasher.hexdigest()


def _check_url(url: str) -> str:
    if not isinstance(url, str):
        raise DownloadError(f"URL must be a string, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"Refusing to fetch {url!r}: only http:// and https:// URLs are allowed.")
    return url


def _is_url(s: str) -> bool:
    return "://" in s


def _safe_filename(name: str) -> str:
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or Path(name).name != name
    ):
        raise DownloadError(f"Unsafe or empty file name {name!r}")
    return name


def _norm_hex(value: str | None, what: str, digits: int = 64) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DownloadError(f"{what} must be a hex string, got {type(value).__name__}")
    v = value.strip().lower()
    if not v or any(c not in "0123456789abcdef" for c in v) or len(v) > digits:
        raise DownloadError(f"{what} must be hexadecimal (at most {digits} digits), got {value!r}")
    return v


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "unknown size"
    return f"{n:,} bytes"


def _env_override(key: str | None, filename: str) -> tuple[str, ...] | None:
    raw = os.environ.get(URL_OVERRIDE_ENV, "").strip()
    if not raw:
        return None
    if raw.startswith("{"):
        try:
            mapping = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DownloadError(f"{URL_OVERRIDE_ENV} is not valid JSON: {e}") from None
        if not isinstance(mapping, dict):
            raise DownloadError(f"{URL_OVERRIDE_ENV} must be a JSON object (name -> URL or list of URLs)")
        for name in (key, filename):
            if name and name in mapping:
                value = mapping[name]
                urls = [value] if isinstance(value, str) else value
                if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
                    raise DownloadError(f"{URL_OVERRIDE_ENV}[{name!r}] must be a URL or a non-empty list of URLs")
                return tuple(_check_url(u) for u in urls)
        return None
    base = _check_url(raw)
    return (base.rstrip("/") + "/" + urllib.parse.quote(filename),)


def resolve_urls(
    entry: KnownModel | None,
    filename: str,
    urls: Sequence[str] = (),
    *,
    urls_override: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """URLs that would be tried, in order of precedence: ``urls_override`` (explicit
    argument), the environment variable ``ZECON_DOWNLOAD_URL_OVERRIDE`` if it names
    this key/file (or is a base URL), then ``urls`` (a URL given to
    :func:`download`) or the registry entry's URLs."""
    if isinstance(urls_override, str):
        urls_override = (urls_override,)
    if urls_override:
        return tuple(_check_url(u) for u in urls_override)
    override = _env_override(entry.key if entry is not None else None, filename)
    if override is not None:
        return override
    if urls:
        return tuple(_check_url(u) for u in urls)
    if entry is not None:
        return tuple(_check_url(u) for u in entry.urls)
    return ()


# ---------------------------------------------------------------------------
# classification of network failures
# ---------------------------------------------------------------------------
@dataclass(eq=False)
class _Failure(Exception):
    kind: str
    text: str
    transient: bool = False
    verification: bool = False
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:  # pragma: no cover - debugging aid
        return self.text


def _classify(exc: BaseException, timeout: float) -> _Failure:
    if isinstance(exc, urllib.error.HTTPError):
        hint = ""
        if exc.code == 404:
            hint = " (the file is not at this address)"
        elif exc.code in (401, 403):
            hint = " (access denied)"
        return _Failure(f"http_{exc.code}", f"HTTP {exc.code} {exc.reason}{hint}", transient=exc.code >= 500)
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _classify(reason, timeout)
        return _Failure("other", f"URL error: {reason}")
    if isinstance(exc, socket.gaierror):
        return _Failure("dns", f"DNS lookup failed, no network or unknown host ({exc})")
    if isinstance(exc, ConnectionRefusedError):
        return _Failure("refused", "connection refused (the server is not reachable at this address/port)")
    if isinstance(exc, TimeoutError):  # socket.timeout is an alias since 3.10
        return _Failure("timeout", f"timed out after {timeout:g} s", transient=True)
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return _Failure("tls", f"TLS/SSL error ({exc})")
    if isinstance(exc, (ConnectionError, http.client.IncompleteRead, http.client.HTTPException)):
        return _Failure("cut", f"connection broken ({type(exc).__name__}: {exc})", transient=True)
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return _Failure("unreachable", f"network unreachable ({exc})")
    return _Failure("other", f"{type(exc).__name__}: {exc}")


class _HttpOnlyRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"refused redirect to non-HTTP URL {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HttpOnlyRedirect())


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------
class _Reporter:
    def __init__(self, progress, desc: str) -> None:
        self._cb = progress if callable(progress) else None
        self._want_bar = progress is None or progress is True
        self._desc = desc
        self._bar = None
        self._last: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._last == (done, total):
            return
        self._last = (done, total)
        if self._cb is not None:
            self._cb(done, total)
            return
        if not self._want_bar:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                desc=self._desc, leave=True, dynamic_ncols=True,
            )
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------------
# lock
# ---------------------------------------------------------------------------
class _PartLock:
    """``O_EXCL`` lock file holding a random token; stale after ``stale_after`` s
    without a heartbeat."""

    def __init__(self, path: Path, *, timeout: float, stale_after: float, poll: float = 0.1) -> None:
        self.path = path
        self.timeout = timeout
        self.stale_after = stale_after
        self.poll = poll
        self.token = f"pid={os.getpid()} host={socket.gethostname()} id={uuid.uuid4().hex}\n"
        self._last_beat = 0.0
        self._held = False

    def __enter__(self) -> "_PartLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._remove_if_stale():
                    continue
                if time.monotonic() >= deadline:
                    raise DownloadLockedError(
                        f"Another process is downloading into {self.path.parent} (lock file "
                        f"{self.path.name} is in use). Wait for it to finish, or delete the lock "
                        f"file if no download is running (it also expires after "
                        f"{self.stale_after:g} s without activity).",
                        dest_dir=self.path.parent,
                    ) from None
                time.sleep(self.poll)
                continue
            except OSError as e:
                raise DownloadError(
                    f"Cannot create the lock file {self.path}: {e} (is the folder writable?)",
                    dest_dir=self.path.parent,
                ) from e
            with os.fdopen(fd, "w") as f:
                f.write(self.token)
            self._held = True
            self._last_beat = time.monotonic()
            return

    def _remove_if_stale(self) -> bool:
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return True
        if age < self.stale_after:
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        return True

    def _read(self) -> str | None:
        try:
            with open(self.path, "r") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def heartbeat(self, force: bool = False) -> None:
        if not self._held:
            return
        now = time.monotonic()
        if not force and now - self._last_beat < LOCK_HEARTBEAT_S:
            return
        self._last_beat = now
        if self._read() != self.token:
            self._held = False
            raise DownloadLockedError(
                f"Lost the download lock {self.path} (another process removed it as stale); "
                f"stopping so that two processes do not write the same file.",
                dest_dir=self.path.parent,
            )
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            if self._read() == self.token:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------
# verification stamp
# ---------------------------------------------------------------------------
def _stamp_path(final: Path) -> Path:
    return final.with_name("." + final.name + ".verified.json")


#: Digests a stamp may record: "sha256" (hex SHA256), "git_blob" (hex Git blob id).
_DIGEST_NAMES = ("sha256", "git_blob")


def _read_stamp(final: Path) -> dict[str, str]:
    """Digests recorded for ``final`` while its size and mtime are unchanged; ``{}`` otherwise."""
    try:
        st = final.stat()
        data = json.loads(_stamp_path(final).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if data.get("size") != st.st_size or data.get("mtime_ns") != st.st_mtime_ns:
        return {}
    return {k: data[k] for k in _DIGEST_NAMES if isinstance(data.get(k), str)}


def _write_stamp(final: Path, digests: dict[str, str]) -> None:
    try:
        st = final.stat()
        stamp = _stamp_path(final)
        tmp = stamp.with_name(stamp.name + f".{uuid.uuid4().hex}.tmp")
        record = {k: digests[k] for k in _DIGEST_NAMES if digests.get(k) is not None}
        tmp.write_text(json.dumps({**record, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        os.replace(tmp, stamp)
    except OSError:
        pass  # the stamp is only an optimisation


# ---------------------------------------------------------------------------
# the download itself
# ---------------------------------------------------------------------------
@dataclass
class _Spec:
    key: str | None
    filename: str
    size: int | None
    sha256: str | None
    sha256_prefix: str | None
    manual: str | None  # manual instructions of a registry entry (may contain {folder})
    official_urls: tuple[str, ...] = ()  # the registry's own URLs (shown in hints even when mirrored)
    git_blob: str | None = None  # hex Git blob id (SHA-1 over b"blob <size>\0" + content)

    @property
    def has_sha256(self) -> bool:
        return self.sha256 is not None or self.sha256_prefix is not None

    @property
    def has_hash(self) -> bool:
        return self.has_sha256 or self.git_blob is not None

    def needed(self) -> tuple[str, ...]:
        """Names of the digests this spec checks, from :data:`_DIGEST_NAMES`."""
        return tuple(n for n, want in (("sha256", self.has_sha256), ("git_blob", self.git_blob is not None)) if want)

    def mismatch(self, digests: dict[str, str]) -> tuple[str, str, str] | None:
        """``(what, expected, actual)`` for the first checked digest that differs
        (``digests`` must hold every name of :meth:`needed`); ``None`` when all match."""
        sha = digests.get("sha256")
        if self.sha256 is not None and sha != self.sha256:
            return "SHA256", self.expected_sha256_text(), sha
        if self.sha256_prefix is not None and not (sha or "").startswith(self.sha256_prefix):
            return "SHA256", self.expected_sha256_text(), sha
        blob = digests.get("git_blob")
        if self.git_blob is not None and blob != self.git_blob:
            return "Git blob id", f"Git blob id {self.git_blob}", blob
        return None

    def expected_sha256_text(self) -> str:
        if self.sha256 is not None:
            return f"SHA256 {self.sha256}"
        if self.sha256_prefix is not None:
            return f"SHA256 starting with {self.sha256_prefix}"
        return "no SHA256 known"

    def expected_hash_text(self) -> str:
        parts = [self.expected_sha256_text()] if self.has_sha256 else []
        if self.git_blob is not None:
            parts.append(f"Git blob id {self.git_blob}")
        return " and ".join(parts) if parts else "no checksum known"


def _manual_hint(spec: _Spec, urls: Sequence[str], dest: Path) -> str:
    details = []
    if spec.size is not None:
        details.append(_fmt_size(spec.size))
    if spec.has_hash:
        details.append(spec.expected_hash_text())
    extra = f" (expected {', '.join(details)})" if details else ""
    if spec.manual and not spec.official_urls:
        return spec.manual.format(folder=str(dest), filename=spec.filename)
    hint_urls = list(spec.official_urls) + [u for u in urls if u not in spec.official_urls]
    if hint_urls:
        alt = "".join(f" or {u}" for u in hint_urls[1:])
        return f"Download it by hand from {hint_urls[0]}{alt} and put it in {dest} as {spec.filename}{extra}."
    return f"Put {spec.filename} in {dest} by hand{extra}."


def _check_existing(final: Path, spec: _Spec, overwrite_invalid: bool, tick=None) -> Path | None:
    """``final`` if it is present and valid; ``None`` if absent (or invalid and
    ``overwrite_invalid``); raises if present and invalid."""
    try:
        st = final.stat()
    except FileNotFoundError:
        return None
    if not final.is_file():
        raise DownloadError(f"{final} exists but is not a file.", dest_dir=final.parent, filename=final.name)
    problem = None
    if spec.size is not None and st.st_size != spec.size:
        problem = f"it has {_fmt_size(st.st_size)}, expected {_fmt_size(spec.size)}"
        expected, actual = _fmt_size(spec.size), _fmt_size(st.st_size)
    elif spec.has_hash:
        digests = _read_stamp(final)
        computed = False
        if "sha256" in spec.needed() and "sha256" not in digests:
            digests["sha256"] = sha256_file(final, tick=tick)
            computed = True
        if "git_blob" in spec.needed() and "git_blob" not in digests:
            digests["git_blob"] = git_blob_file(final, tick=tick)
            computed = True
        bad = spec.mismatch(digests)
        if bad is None:
            if computed:
                _write_stamp(final, digests)
            return final
        what, expected, actual = bad
        problem = f"its {what} is {actual}, expected {expected}"
    else:
        return final
    if overwrite_invalid:
        return None
    raise DownloadVerificationError(
        f"{final} exists but is not the expected file: {problem}. It was left untouched; "
        f"delete or rename it and run again to download the right file.",
        expected=expected, actual=actual, dest_dir=final.parent, filename=final.name,
    )


def _finish_part(part: Path, hasher, spec: _Spec, tick: Callable[[], None] | None = None) -> dict[str, str]:
    """Verify a complete ``.part`` (``hasher``: SHA256 of its bytes); delete it and raise
    ``_Failure`` on mismatch. Returns the digests for the stamp."""
    actual_size = part.stat().st_size
    if spec.size is not None and actual_size != spec.size:
        part.unlink(missing_ok=True)
        raise _Failure("verify", f"wrong size: expected {_fmt_size(spec.size)}, got {_fmt_size(actual_size)}; "
                       f"the partial file was deleted", verification=True,
                       expected=_fmt_size(spec.size), actual=_fmt_size(actual_size))
    digests = {"sha256": hasher.hexdigest()}
    if spec.git_blob is not None:
        digests["git_blob"] = git_blob_file(part, tick=tick)
    bad = spec.mismatch(digests)
    if bad is not None:
        what, expected, actual = bad
        part.unlink(missing_ok=True)
        raise _Failure("verify", f"wrong content: expected {expected}, got {what} {actual}; "
                       f"the downloaded file was deleted", verification=True,
                       expected=expected, actual=actual)
    return digests


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    # "bytes 100-199/1000" or "bytes 100-199/*"
    if not value:
        return None
    try:
        unit, rest = value.strip().split(" ", 1)
        span, total = rest.split("/", 1)
        first, last = span.split("-", 1)
        return int(first), int(last), (None if total.strip() == "*" else int(total))
    except ValueError:
        return None


def _fetch_once(url: str, part: Path, spec: _Spec, *, lock: _PartLock, report: _Reporter,
                timeout: float, chunk_size: int) -> dict[str, str]:
    """One HTTP attempt; returns the verified digests or raises ``_Failure``."""
    start = part.stat().st_size if part.exists() else 0
    if spec.size is not None and start > spec.size:
        part.unlink()
        start = 0
    hasher = hashlib.sha256()
    if start:
        _hash_into(hasher, part, lock.heartbeat)
        if spec.size is not None and start == spec.size:
            report(start, spec.size)
            return _finish_part(part, hasher, spec, lock.heartbeat)

    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = _opener().open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and start:
            part.unlink(missing_ok=True)
            raise _Failure("http_416", "server refused to resume (HTTP 416); the partial file was discarded",
                           transient=True) from None
        raise _classify(e, timeout) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _classify(e, timeout) from None

    with resp:
        status = resp.status
        length_hdr = resp.headers.get("Content-Length")
        try:
            length = int(length_hdr) if length_hdr is not None else None
        except ValueError:
            length = None
        if start and status == 206:
            cr = _parse_content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != start:
                part.unlink(missing_ok=True)
                raise _Failure("cut", f"server answered the resume request with a bad Content-Range "
                               f"({resp.headers.get('Content-Range')!r}); restarting", transient=True)
            total = cr[2] if cr[2] is not None else (start + length if length is not None else None)
            mode = "ab"
        elif status == 200:
            if start:  # the server ignored the Range request: start over
                start = 0
                hasher = hashlib.sha256()
            total = length
            mode = "wb"
        else:
            raise _Failure(f"http_{status}", f"unexpected HTTP status {status}")

        if spec.size is not None and total is not None and total != spec.size:
            raise _Failure("verify", f"the server offers {_fmt_size(total)}, expected {_fmt_size(spec.size)} "
                           f"(a different file?)", verification=True,
                           expected=_fmt_size(spec.size), actual=_fmt_size(total))
        if spec.size is not None:
            total = spec.size

        done = start
        report(done, total)
        try:
            f = open(part, mode)
        except OSError as e:
            raise DownloadError(f"Cannot write {part}: {e}", dest_dir=part.parent, filename=spec.filename) from e
        with f:
            while True:
                try:
                    chunk = resp.read(chunk_size)
                except (OSError, http.client.HTTPException) as e:
                    if isinstance(e, http.client.IncompleteRead) and e.partial:
                        f.write(e.partial)
                        hasher.update(e.partial)
                        done += len(e.partial)
                        report(done, total)
                    fail = _classify(e, timeout)
                    fail.transient = True
                    fail.text = f"connection cut after {done:,} of {_fmt_size(total)} ({fail.text})"
                    raise fail from None
                if not chunk:
                    break
                if total is not None and done + len(chunk) > total:
                    f.close()
                    part.unlink(missing_ok=True)
                    raise _Failure("verify", f"the server sent more than the expected {_fmt_size(total)}; "
                                   f"the partial file was deleted", verification=True,
                                   expected=_fmt_size(total), actual=f"more than {_fmt_size(total)}")
                try:
                    f.write(chunk)
                except OSError as e:
                    raise DownloadError(f"Cannot write {part}: {e}", dest_dir=part.parent,
                                        filename=spec.filename) from e
                hasher.update(chunk)
                done += len(chunk)
                report(done, total)
                lock.heartbeat()
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done < total:
        raise _Failure("cut", f"connection cut after {done:,} of {_fmt_size(total)}", transient=True)
    return _finish_part(part, hasher, spec, lock.heartbeat)


def _spec_from_args(entry_or_url, filename, size, sha256, sha256_prefix,
                    git_blob=None) -> tuple[_Spec, KnownModel | None, tuple[str, ...]]:
    entry: KnownModel | None = None
    base_urls: tuple[str, ...] = ()
    if isinstance(entry_or_url, KnownModel):
        entry = entry_or_url
    elif isinstance(entry_or_url, (str, os.PathLike)):
        s = os.fspath(entry_or_url)
        if _is_url(s):
            base_urls = (_check_url(s),)
            if filename is None:
                filename = urllib.parse.unquote(Path(urllib.parse.urlsplit(s).path).name)
        else:
            entry = get_known(s)
            if entry is None:
                raise DownloadError(
                    f"Unknown model {s!r}: give a registry key ({', '.join(KNOWN_MODELS)}), a known file "
                    f"name, or an http(s) URL."
                )
    else:
        raise DownloadError(f"download() needs a KnownModel, a registry key or a URL, got {type(entry_or_url).__name__}")
    if entry is not None:
        filename = filename or entry.filename
        size = entry.size if size is None else size
        if sha256 is None and sha256_prefix is None and git_blob is None:
            sha256, sha256_prefix, git_blob = entry.sha256, entry.sha256_prefix, entry.git_blob
    if size is not None and (not isinstance(size, int) or size < 0):
        raise DownloadError(f"size must be a non-negative int, got {size!r}")
    spec = _Spec(
        key=entry.key if entry is not None else None,
        filename=_safe_filename(filename or ""),
        size=size,
        sha256=_norm_hex(sha256, "sha256"),
        sha256_prefix=_norm_hex(sha256_prefix, "sha256_prefix"),
        manual=(entry.manual_instructions or None) if entry is not None else None,
        official_urls=tuple(entry.urls) if entry is not None else (),
        git_blob=_norm_hex(git_blob, "git_blob", 40),
    )
    if spec.sha256 is not None and len(spec.sha256) != 64:
        raise DownloadError("sha256 must have 64 hex digits (use sha256_prefix for a prefix)")
    if spec.git_blob is not None and len(spec.git_blob) != 40:
        raise DownloadError("git_blob must have 40 hex digits (the Git blob id, as git ls-tree lists it)")
    return spec, entry, base_urls


def download(
    entry_or_url: KnownModel | str,
    dest_dir: str | os.PathLike | None = None,
    *,
    filename: str | None = None,
    size: int | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    git_blob: str | None = None,
    urls_override: Sequence[str] | None = None,
    progress: ProgressCallback | None | bool = None,
    timeout: float = 30,
    chunk_size: int = 1 << 20,
    retries: int = 2,
    overwrite_invalid: bool = False,
    lock_timeout: float = 3600.0,
    lock_stale_after: float = LOCK_STALE_AFTER_S,
) -> Path:
    """Fetch a model file into ``dest_dir`` (default :func:`default_cache_dir`) and
    return its path; see the module docstring for the full behaviour.

    ``entry_or_url``: a :class:`KnownModel`, a registry key / known file name, or an
    http(s) URL (then ``filename`` defaults to the URL's last path segment).
    ``size``/``sha256``/``sha256_prefix``/``git_blob`` override (or, for a URL,
    supply) the expected values; giving any of the three digests replaces all of
    the entry's digests. ``git_blob`` is a Git blob id (40 hex digits, see the
    module docstring). ``urls_override`` replaces the URLs to try (it wins over the
    environment variable ``ZECON_DOWNLOAD_URL_OVERRIDE``, which wins over the
    registry). ``progress``: callback ``(done, total)``, ``None``/``True`` for a tqdm bar,
    ``False`` for silence. ``overwrite_invalid``: replace an existing file that
    fails verification instead of raising. ``retries``: extra
    attempts per URL after a cut connection or timeout (each resumes the ``.part``).
    """
    spec, entry, base_urls = _spec_from_args(entry_or_url, filename, size, sha256, sha256_prefix, git_blob)
    dest = Path(dest_dir) if dest_dir is not None else default_cache_dir()
    dest = dest.expanduser()
    final = dest / spec.filename
    urls = resolve_urls(entry, spec.filename, base_urls, urls_override=urls_override)

    found = _check_existing(final, spec, overwrite_invalid)
    if found is not None:
        return found
    if not urls:
        raise ManualDownloadRequired(
            f"{spec.filename} is not in {dest} and cannot be downloaded automatically. "
            + _manual_hint(spec, (), dest),
            dest_dir=dest, filename=spec.filename,
        )

    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"Cannot create the model folder {dest}: {e}. " + _manual_hint(spec, urls, dest),
            urls=urls, dest_dir=dest, filename=spec.filename,
        ) from e
    part = dest / (spec.filename + ".part")
    report = _Reporter(progress, spec.filename)
    try:
        with _PartLock(dest / (spec.filename + ".part.lock"), timeout=lock_timeout,
                       stale_after=lock_stale_after) as lock:
            # Another process may have finished the file while we waited for the lock.
            found = _check_existing(final, spec, overwrite_invalid, tick=lock.heartbeat)
            if found is not None:
                return found
            if spec.size is not None:
                have = part.stat().st_size if part.exists() else 0
                need = max(spec.size - have, 0)
                try:
                    free = shutil.disk_usage(dest).free
                except OSError:
                    free = None
                if free is not None and free < need:
                    raise DownloadError(
                        f"Not enough disk space in {dest} for {spec.filename}: {need:,} bytes needed, "
                        f"{free:,} free. Free some space or point {MODELS_DIR_HINT} elsewhere.",
                        urls=urls, dest_dir=dest, filename=spec.filename,
                    )
            failures: list[tuple[str, _Failure]] = []
            for url in urls:
                attempt = 0
                while True:
                    try:
                        digests = _fetch_once(url, part, spec, lock=lock, report=report,
                                              timeout=timeout, chunk_size=chunk_size)
                    except _Failure as fail:
                        if fail.transient and attempt < retries:
                            attempt += 1
                            time.sleep(min(RETRY_BACKOFF_S * attempt, 10.0))
                            continue
                        failures.append((url, fail))
                        break
                    lock.heartbeat(force=True)
                    os.replace(part, final)
                    _write_stamp(final, digests)
                    report(final.stat().st_size, spec.size if spec.size is not None else final.stat().st_size)
                    return final
            raise _compose_error(spec, urls, dest, failures)
    finally:
        report.close()


MODELS_DIR_HINT = "ZECON_MODELS_DIR (outside ComfyUI)"


def _compose_error(spec: _Spec, urls: Sequence[str], dest: Path, failures: list[tuple[str, _Failure]]) -> DownloadError:
    lines = [f"Could not download {spec.filename} into {dest}."]
    for url, fail in failures:
        lines.append(f"  - {url}: {fail.text}")
    part = dest / (spec.filename + ".part")
    if part.exists():
        lines.append(f"The partial file {part} was kept; the next try resumes it.")
    lines.append(_manual_hint(spec, urls, dest))
    message = "\n".join(lines)
    kw = dict(urls=urls, dest_dir=dest, filename=spec.filename, causes=[(u, f.text) for u, f in failures])
    verif = [f for _, f in failures if f.verification]
    if verif:
        return DownloadVerificationError(message, expected=verif[-1].expected, actual=verif[-1].actual, **kw)
    return DownloadNetworkError(message, kinds=[f.kind for _, f in failures], **kw)


def ensure_known_model(
    key: str | KnownModel,
    dest_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None | bool = None,
    **kwargs,
) -> Path:
    """Path of a registry model in ``dest_dir`` (default :func:`default_cache_dir`),
    downloading and verifying it if needed. Entries without a direct URL raise
    :class:`ManualDownloadRequired` with instructions (unless the file is already
    there); open_clip-managed entries (``kind == "clip"``) raise it too, since
    open_clip downloads those itself. ``kwargs`` go to :func:`download`."""
    entry = key if isinstance(key, KnownModel) else get_known(key)
    if entry is None:
        raise DownloadError(f"Unknown model {key!r}; known models: {', '.join(KNOWN_MODELS)}")
    dest = (Path(dest_dir) if dest_dir is not None else default_cache_dir()).expanduser()
    if entry.managed_by_open_clip:
        local = dest / entry.filename
        if local.is_file():
            return local
        raise ManualDownloadRequired(
            f"{entry.key} ({entry.open_clip_model}, pretrained={entry.open_clip_pretrained!r}) is downloaded "
            f"by open_clip itself (Hugging Face {entry.hf_repo_id}), not by this downloader. "
            + entry.manual_text(dest),
            dest_dir=dest, filename=entry.filename,
        )
    return download(entry, dest, progress=progress, **kwargs)


# ---------------------------------------------------------------------------
# command line: python -m zecon_core.files.download imagenet --dest DIR
# ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zecon_core.files.download",
        description="Download and verify ZeCon model files.",
    )
    parser.add_argument("models", nargs="*", help="registry keys, known file names or http(s) URLs")
    parser.add_argument("--dest", default=None, help=f"target folder (default: {default_cache_dir()})")
    parser.add_argument("--list", action="store_true", help="list the known models and exit")
    args = parser.parse_args(argv)
    if args.list or not args.models:
        for m in KNOWN_MODELS.values():
            how = "auto" if m.downloadable else ("open_clip" if m.managed_by_open_clip else "manual")
            print(f"{m.key:22s} {m.kind:5s} {m.filename:32s} {_fmt_size(m.size):>22s}  [{how}]  {m.description}")
        return 0
    status = 0
    for name in args.models:
        try:
            if _is_url(name):
                path = download(name, args.dest)
            else:
                path = ensure_known_model(name, args.dest)
            print(path)
        except DownloadError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
