"""Drive the REAL ComfyUI web frontend (comfyui-frontend-package 1.32.9, the
version ComfyUI 0.3.75's requirements.txt pins) with Playwright + Debian's
chromium. No browser is downloaded: ``playwright`` only drives the system
``chromium`` binary.

    with ComfyFrontend(server) as fe:            # server: harness.ComfyServer
        report = fe.load_workflow(ui_json)        # LoadReport
        assert report.missing_node_types == []
        assert report.invalid_widgets == []
        api_prompt = fe.graph_to_prompt()["output"]
        server.client.run(api_prompt)
        fe.screenshot(path)

Facts about this frontend version used here (from its source maps):
  * ``window.app`` / ``window.graph`` are set in GraphCanvas.vue after
    ``comfyApp.setup()``; LiteGraph classes are globals (window.LiteGraph ...).
  * ``app.loadGraphData(graphData, clean=true, restore_view=true, workflow=null,
    {showMissingNodesDialog, showMissingModelsDialog, ...})`` collects
    missing node types (``!(n.type in LiteGraph.registered_node_types)``) and
    calls the (TS-private, JS-visible) ``app.showMissingNodesError(types)``,
    which opens a dialog if the setting Comfy.Workflow.ShowMissingNodesWarning.
  * ``app.graphToPrompt()`` -> ``{workflow, output}``: ``output`` is the API
    prompt, ``workflow`` the UI JSON that "Export" writes
    (workflowService.exportWorkflow = JSON.stringify(p.workflow, null, 2)).
  * ``app.loadApiJson(apiPrompt, fileName)`` builds a graph from an API prompt
    (LiteGraph.createNode per node, widgets set by name, links, graph.arrange()).
  * Settings live on the server: GET/POST /settings ->
    <user-directory>/default/comfy.settings.json. With no settings (or
    Comfy.TutorialCompleted false) a new user gets a blank workflow plus the
    template browser dialog; Comfy.Workflow.Persist=false skips restoring /
    loading any workflow at start, so nothing races our loadGraphData.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage",
]

# Settings written before the page is opened.
DEFAULT_FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,          # no template browser dialog
    "Comfy.Workflow.Persist": False,           # no default/previous workflow load
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Minimap.Visible": False,            # cleaner screenshots
}
# localStorage keys set before any page script runs.
DEFAULT_LOCAL_STORAGE = {
    "vueNodesBannerDismissed": "true",         # "Introducing Nodes 2.0" banner
}


def chromium_path() -> str | None:
    return (os.environ.get("ZECON_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))


def browser_available() -> tuple[bool, str]:
    """(ok, reason) - for pytest.skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False, "python package playwright is not installed"
    if not chromium_path():
        return False, "chromium is not on PATH (apt-get install chromium)"
    return True, ""


@dataclass
class LoadReport:
    missing_node_types: list = field(default_factory=list)   # from the frontend
    missing_dialog_calls: list = field(default_factory=list)  # showMissingNodesError args
    invalid_widgets: list = field(default_factory=list)       # [{node, type, widget, value, problem}]
    node_count: int = 0
    console_errors: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_node_types or self.missing_dialog_calls
                    or self.invalid_widgets)


_INSTALL_HOOKS_JS = """
() => {
  if (window.__zecon) return true;
  window.__zecon = { missingDialog: [] };
  const orig = app.showMissingNodesError;
  app.showMissingNodesError = function (types) {
    window.__zecon.missingDialog.push(JSON.parse(JSON.stringify(types)));
    return orig.apply(this, arguments);
  };
  return true;
}
"""

# Widget checks done on the configured graph: values must be among a combo's
# options (or be a file the node's properties.models declares for download), within min/max of number widgets, and the saved widgets_values
# must not be longer than the node's widget list (shifted/stale values).
_CHECK_WIDGETS_JS = """
(graphData) => {
  const out = [];
  const saved = {};
  for (const n of (graphData && graphData.nodes) || []) saved[String(n.id)] = n;
  for (const node of app.graph.nodes) {
    const widgets = node.widgets || [];
    // a file the workflow declares for download (properties.models, as ComfyUI's templates) is a missing
    // model the frontend offers to fetch, not an invalid value
    const declared = ((node.properties || {}).models || []).map(m => m.name);
    for (const w of widgets) {
      const o = w.options || {};
      const v = w.value;
      const rec = (problem) => out.push({node: String(node.id), type: node.type,
                                         widget: w.name, value: v, problem});
      if (w.type === 'combo') {
        let values = o.values;
        if (typeof values === 'function') { try { values = values(w, node); } catch (e) { values = null; } }
        if (Array.isArray(values) && values.length && !values.includes(v) && !declared.includes(v))
          rec('value not in combo options: ' + JSON.stringify(values.slice(0, 20)));
      } else if (w.type === 'number' || w.type === 'slider' || typeof v === 'number') {
        if (typeof v !== 'number' || Number.isNaN(v)) { rec('not a number'); continue; }
        if (o.min !== undefined && v < o.min) rec('below min ' + o.min);
        if (o.max !== undefined && v > o.max) rec('above max ' + o.max);
      }
    }
    const s = saved[String(node.id)];
    if (s && Array.isArray(s.widgets_values)) {
      // more saved values than widgets: stale workflow / shifted values
      if (s.widgets_values.length > widgets.length)
        out.push({node: String(node.id), type: node.type, widget: null,
                  value: s.widgets_values,
                  problem: `workflow has ${s.widgets_values.length} widgets_values, node has ${widgets.length} widgets`});
    }
  }
  return out;
}
"""


# One Playwright driver per process, shared by every open ComfyFrontend: the sync API
# refuses a second sync_playwright().start() while another one runs in the same thread
# ("using Playwright Sync API inside the asyncio loop"), and the session-scoped frontend
# factory keeps one page per server open, so a second server's page needs the same driver.
_PLAYWRIGHT = {"driver": None, "users": 0}


def _acquire_playwright():
    if _PLAYWRIGHT["driver"] is None:
        from playwright.sync_api import sync_playwright
        _PLAYWRIGHT["driver"] = sync_playwright().start()
    _PLAYWRIGHT["users"] += 1
    return _PLAYWRIGHT["driver"]


def _release_playwright() -> None:
    _PLAYWRIGHT["users"] -= 1
    if _PLAYWRIGHT["users"] <= 0 and _PLAYWRIGHT["driver"] is not None:
        driver, _PLAYWRIGHT["driver"], _PLAYWRIGHT["users"] = _PLAYWRIGHT["driver"], None, 0
        try:
            driver.stop()
        except Exception:  # noqa: BLE001 - best effort teardown
            pass


class ComfyFrontend:
    """A chromium page showing the frontend served by a running ComfyServer."""

    def __init__(self, server, settings: dict | None = None, headless: bool = True,
                 viewport: tuple[int, int] = (1400, 900), timeout_ms: int = 60_000):
        self.server = server
        self.settings = dict(DEFAULT_FRONTEND_SETTINGS)
        if settings:
            self.settings.update(settings)
        self.headless = headless
        self.viewport = viewport
        self.timeout_ms = timeout_ms
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.http_errors: list[tuple[int, str]] = []   # (status, url) of >= 400 responses
        self._pw = self._browser = self._context = self.page = None
        self.load_seconds: float | None = None

    # -- lifecycle
    def open(self) -> "ComfyFrontend":
        import time

        exe = chromium_path()
        if not exe:
            raise RuntimeError("chromium not found (apt-get install chromium)")
        # Settings are server-side; write them before the page reads them.
        self.server.write_user_settings(self.settings)
        t0 = time.monotonic()
        self._pw = _acquire_playwright()
        self._browser = self._pw.chromium.launch(
            executable_path=exe, headless=self.headless, args=CHROMIUM_ARGS)
        self._context = self._browser.new_context(
            viewport={"width": self.viewport[0], "height": self.viewport[1]})
        self._context.add_init_script(
            "(() => { const kv = %s; for (const k in kv) localStorage.setItem(k, kv[k]); })()"
            % json.dumps(DEFAULT_LOCAL_STORAGE))
        self.page = self._context.new_page()
        self.page.set_default_timeout(self.timeout_ms)
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("response", lambda r: r.status >= 400
                     and self.http_errors.append((r.status, r.url)))
        self.page.goto(self.server.url + "/", wait_until="domcontentloaded")
        self.wait_ready()
        self.load_seconds = time.monotonic() - t0
        return self

    def wait_ready(self) -> None:
        """Until window.app is set up (GraphCanvas.vue's onMounted reached it)
        and the node definitions are registered."""
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas"
            " && window.LiteGraph && Object.keys(LiteGraph.registered_node_types).length > 0",
            timeout=self.timeout_ms)
        self.page.evaluate(_INSTALL_HOOKS_JS)

    def close(self) -> None:
        for obj, meth in ((self._context, "close"), (self._browser, "close")):
            if obj is not None:
                try:
                    getattr(obj, meth)()
                except Exception:  # noqa: BLE001 - best effort teardown
                    pass
        if self._pw is not None:
            _release_playwright()
        self._pw = self._browser = self._context = self.page = None

    def __enter__(self) -> "ComfyFrontend":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- queries
    def registered_node_types(self) -> list[str]:
        return self.page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")

    def console_errors(self) -> list[str]:
        return [t for kind, t in self.console if kind == "error"] + list(self.page_errors)

    # -- workflows
    def load_workflow(self, workflow: dict | str | Path, show_dialogs: bool = True) -> LoadReport:
        """app.loadGraphData(ui_workflow) and report missing node types and
        invalid widget values."""
        if isinstance(workflow, (str, Path)) and Path(workflow).is_file():
            workflow = json.loads(Path(workflow).read_text())
        elif isinstance(workflow, str):
            workflow = json.loads(workflow)
        n_console = len(self.console)
        result = self.page.evaluate(
            """async ([wf, dialogs]) => {
                 window.__zecon.missingDialog = [];
                 const registered = LiteGraph.registered_node_types;
                 const missing = [];
                 const walk = (nodes) => { for (const n of nodes || [])
                     if (!(n.type in registered)) missing.push(n.type); };
                 walk(wf.nodes);
                 for (const sg of (wf.definitions && wf.definitions.subgraphs) || []) walk(sg.nodes);
                 await app.loadGraphData(wf, true, true, null,
                     {showMissingNodesDialog: dialogs, showMissingModelsDialog: dialogs});
                 return {missing, dialog: window.__zecon.missingDialog,
                         count: app.graph.nodes.length};
               }""",
            [workflow, show_dialogs])
        invalid = self.page.evaluate(_CHECK_WIDGETS_JS, workflow)
        errors = [t for kind, t in self.console[n_console:] if kind == "error"]
        return LoadReport(missing_node_types=result["missing"],
                          missing_dialog_calls=result["dialog"],
                          invalid_widgets=invalid, node_count=result["count"],
                          console_errors=errors)

    def graph_to_prompt(self) -> dict:
        """``await app.graphToPrompt()`` -> {"workflow": UI JSON, "output": API prompt}."""
        return self.page.evaluate(
            "async () => JSON.parse(JSON.stringify(await app.graphToPrompt()))")

    def api_prompt(self) -> dict:
        return self.graph_to_prompt()["output"]

    def queue_from_frontend(self) -> None:
        """Press the frontend's own queue path (app.queuePrompt(0))."""
        self.page.evaluate("async () => await app.queuePrompt(0, 1)")

    def load_api_prompt(self, api_prompt: dict, name: str = "workflow.json") -> LoadReport:
        """Build the graph from an API prompt with the frontend's own
        app.loadApiJson (LiteGraph.createNode + widgets + links + arrange)."""
        result = self.page.evaluate(
            """async ([p, name]) => {
                 window.__zecon.missingDialog = [];
                 const missing = Object.values(p).map(n => n.class_type)
                     .filter(t => !(t in LiteGraph.registered_node_types));
                 app.loadApiJson(p, name);
                 await new Promise(r => requestAnimationFrame(() => r()));
                 return {missing, dialog: window.__zecon.missingDialog,
                         count: app.graph.nodes.length};
               }""", [api_prompt, name])
        invalid = self.page.evaluate(_CHECK_WIDGETS_JS, None)
        return LoadReport(missing_node_types=result["missing"],
                          missing_dialog_calls=result["dialog"],
                          invalid_widgets=invalid, node_count=result["count"])

    def build_graph(self, nodes: list[dict], links: list[tuple] = ()) -> None:
        """Build a graph node by node with LiteGraph.createNode.

        nodes: [{"id": 1, "type": "EmptyImage", "pos": [x, y],
                 "widgets": {"width": 64}, "title": "..."}]
        links: [(from_id, from_slot, to_id, to_input_name_or_slot)]
        """
        self.page.evaluate(
            """([nodes, links]) => {
                 app.graph.clear();
                 for (const spec of nodes) {
                   const node = LiteGraph.createNode(spec.type);
                   if (!node) throw new Error('unknown node type ' + spec.type);
                   if (spec.id !== undefined) node.id = spec.id;
                   if (spec.title) node.title = spec.title;
                   if (spec.pos) node.pos = spec.pos;
                   app.graph.add(node);
                   for (const [name, value] of Object.entries(spec.widgets || {})) {
                     const w = (node.widgets || []).find(w => w.name === name);
                     if (!w) throw new Error(`${spec.type} has no widget ${name}`);
                     w.value = value;
                     w.callback && w.callback(value);
                   }
                 }
                 for (const [fromId, fromSlot, toId, toSlot] of links) {
                   const a = app.graph.getNodeById(fromId), b = app.graph.getNodeById(toId);
                   const slot = typeof toSlot === 'string'
                       ? b.inputs.findIndex(i => i.name === toSlot) : toSlot;
                   if (slot < 0) throw new Error(`${b.type} has no input ${toSlot}`);
                   if (!a.connect(fromSlot, b, slot))
                     throw new Error(`could not link ${fromId}:${fromSlot} -> ${toId}:${toSlot}`);
                 }
                 if (!nodes.some(n => n.pos)) app.graph.arrange();
                 app.graph.setDirtyCanvas(true, true);
               }""", [nodes, [list(link) for link in links]])

    def export_workflow(self, path: str | Path | None = None) -> dict:
        """The UI workflow exactly as the frontend's Export writes it
        (graphToPrompt().workflow), optionally saved to ``path``."""
        wf = self.graph_to_prompt()["workflow"]
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(wf, indent=2) + "\n")
        return wf

    def fit_view(self) -> None:
        """The frontend's own "Zoom to fit" command (Comfy.Canvas.FitView)."""
        self.page.evaluate(
            "async () => { app.canvas.deselectAll && app.canvas.deselectAll();"
            " await app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")

    def screenshot(self, path: str | Path, full_page: bool = False, fit: bool = True) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fit:
            self.fit_view()
            self.page.wait_for_timeout(400)  # FitView animates the canvas
        self.page.evaluate("() => new Promise(r => { app.graph.setDirtyCanvas(true, true);"
                           " requestAnimationFrame(() => requestAnimationFrame(r)); })")
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def evaluate(self, js: str, arg: Any = None) -> Any:
        return self.page.evaluate(js, arg)
