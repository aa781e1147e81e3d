"""The shipped workflows in the NEWEST ComfyUI frontend (comfyui-frontend-package 1.58.1), served by
ComfyUI 0.3.75 with ``--front-end-root $ZECON_FRONTEND_158`` (scripts/setup_env.sh installs it in a
folder of its own; the venv keeps the 1.32.9 that 0.3.75 pins, see test_zecon_frontend.py).

1.58 has no missing-models dialog any more: after a load it scans every combo widget whose value is a
model file name, marks those not among the widget's options as missing, enriches them with the node's
``properties.models`` entry of the same name (url, directory), raises a toast "<file> is missing" with
"View details", and lists the missing files in the right side panel's Issues tab; a file with a url
(Hugging Face / Civitai) and a directory gets a "Download" button there, one without only its name.
One server and one page serve every case here; screenshots go to test-artifacts/frontend_158/.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

import zecon_testing as zt
from zecon_core.files import registry as R

pytestmark = [pytest.mark.comfy, pytest.mark.browser]

FRONTEND_VERSION = "1.58.1"
SHOTS = zt.ARTIFACTS / "frontend_158"
UI_WORKFLOWS = sorted(p.stem for p in zt.WORKFLOWS_DIR.glob("*.json"))
#: workflows whose loader names a checkpoint the user fetches (the test server has none)
CHECKPOINT_WORKFLOWS = {"zecon_sd15_latent": "v1-5-pruned-emaonly.safetensors",
                        "zecon_sdxl_latent": "sd_xl_base_1.0.safetensors"}
# settings of 1.58 that show what a new user sees (both default on; written so the test says so)
SETTINGS = {"Comfy.ErrorSystem.ShowMissingModels": True, "Comfy.RightSidePanel.ShowErrorsTab": True}


@pytest.fixture(scope="module")
def server(comfy_server_factory, tmp_path_factory):
    cache = Path(os.environ.get("ZECON_CACHE") or Path.home() / ".cache" / "zecon")
    root = os.environ.get("ZECON_FRONTEND_158") or str(
        cache / f"frontend-{FRONTEND_VERSION}" / "comfyui_frontend_package" / "static")
    if not (Path(root) / "index.html").is_file():
        reason = f"frontend {FRONTEND_VERSION} not installed at {root} (scripts/setup_env.sh)"
        if os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"):
            pytest.fail(reason + " (required: CI / ZECON_REQUIRE_COMFY is set)", pytrace=False)
        pytest.skip(reason)
    server = comfy_server_factory(**zt.server_config(tmp_path_factory), extra_args=("--front-end-root", root))
    zt.ensure_sample(server)
    return server


@pytest.fixture(scope="module")
def frontend(comfy_frontend_factory, server):
    fe = comfy_frontend_factory(server, settings=SETTINGS)
    # record what a Download button opens (the browser route: an <a href download target=_blank>.click())
    fe.evaluate("""() => {
      window.__zeconOpened = [];
      const click = HTMLAnchorElement.prototype.click;
      HTMLAnchorElement.prototype.click = function () {
        if (this.target === '_blank') { window.__zeconOpened.push({href: this.href, download: this.download}); return; }
        return click.apply(this, arguments);
      };
    }""")
    return fe


_STATE_JS = """
() => {
  const pinia = document.getElementById('vue-app').__vue_app__.config.globalProperties.$pinia;
  const models = pinia._s.get('missingModel'), errors = pinia._s.get('executionError');
  const nodes = pinia._s.get('missingNodesError');
  return JSON.parse(JSON.stringify({
    missingModels: (models.missingModelCandidates || []).filter(c => c.isMissing)
        .map(c => ({name: c.name, url: c.url ?? null, directory: c.directory ?? null, nodeType: c.nodeType})),
    missingNodes: nodes.missingNodesError ?? null,
    hasAnyError: errors.hasAnyError, overlay: errors.isErrorOverlayOpen,
    overlayText: [...document.querySelectorAll('[data-testid=error-overlay-messages]')]
        .map(e => (e.closest('[role=status]') || e).innerText).join('\\n'),
    dialogs: [...document.querySelectorAll('[role=dialog]')].map(d => d.innerText.slice(0, 300)),
  }));
}
"""

_PANEL_JS = """
() => {
  const buttons = [...document.querySelectorAll('button')];
  return {
    downloads: buttons.filter(b => b.innerText.trim() === 'Download' && !b.disabled).map(b => b.getAttribute('aria-label')),
    downloadAll: buttons.some(b => b.innerText.trim() === 'Download all' && !b.disabled),
    text: document.body.innerText,
  };
}
"""


def _reset(fe) -> None:
    fe.evaluate("() => { window.__zeconOpened = []; for (const d of document.querySelectorAll('[role=dialog]'))"
                " d.querySelector('button[aria-label=Close], button.p-dialog-close-button')?.click(); }")
    fe.page.keyboard.press("Escape")


def _load(fe, workflow) -> tuple:
    """Load a UI workflow the way a user's drop/open does; after the frontend's asynchronous missing-model
    verification, its state (missing models/nodes, error overlay, open dialogs) and the load report."""
    _reset(fe)
    n_errors = len(fe.page_errors)
    report = fe.load_workflow(workflow)
    fe.page.wait_for_timeout(2000)
    state = fe.evaluate(_STATE_JS)
    state["pageErrors"] = fe.page_errors[n_errors:]
    return report, state


def _without_metadata(name: str) -> dict:
    wf = json.loads((zt.WORKFLOWS_DIR / f"{name}.json").read_text())
    for node in wf["nodes"]:
        node.get("properties", {}).pop("models", None)
    return wf


def test_comfyui_serves_the_newest_frontend(server, frontend):
    assert frontend.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") == FRONTEND_VERSION
    assert set(zt.NODE_IDS) <= set(frontend.registered_node_types())


def test_sd15_missing_checkpoint_offers_its_download(server, frontend):
    """The SD1.5 workflow without its checkpoint: the toast names the file, View details opens the Issues
    tab, and the row offers Download, which opens the registry's URL; the same workflow without the
    metadata shows only the name (the dead end the issue reported)."""
    ckpt = CHECKPOINT_WORKFLOWS["zecon_sd15_latent"]
    report, state = _load(frontend, zt.WORKFLOWS_DIR / "zecon_sd15_latent.json")
    assert report.ok, report
    assert state["missingModels"] == [{**R.frontend_model(ckpt), "nodeType": "CheckpointLoaderSimple"}], state
    assert state["overlay"] and f"{ckpt} is missing" in state["overlayText"], state
    frontend.screenshot(SHOTS / "sd15_missing_toast.png", fit=False)
    frontend.page.get_by_text("View details").click()
    frontend.page.wait_for_timeout(1000)
    panel = frontend.evaluate(_PANEL_JS)
    assert "Missing Models" in panel["text"] and ckpt in panel["text"], panel["text"][-600:]
    assert panel["downloads"] == [f"Download {ckpt}"] and panel["downloadAll"], panel
    frontend.screenshot(SHOTS / "sd15_missing_issues_tab.png", fit=False)
    frontend.page.get_by_role("button", name=f"Download {ckpt}", exact=True).click()
    frontend.page.wait_for_timeout(500)
    opened = frontend.evaluate("() => window.__zeconOpened")
    assert opened == [{"href": R.WORKFLOW_CHECKPOINTS[ckpt].url, "download": ckpt}], opened

    # the control: without properties.models the same file is listed with no way to get it
    report, state = _load(frontend, _without_metadata("zecon_sd15_latent"))
    assert state["missingModels"] == [{"name": ckpt, "url": None, "directory": "checkpoints",
                                       "nodeType": "CheckpointLoaderSimple"}], state
    frontend.page.get_by_text("View details").click()
    frontend.page.wait_for_timeout(1000)
    panel = frontend.evaluate(_PANEL_JS)
    assert ckpt in panel["text"] and panel["downloads"] == [] and not panel["downloadAll"], panel["downloads"]
    frontend.screenshot(SHOTS / "sd15_without_metadata_issues_tab.png", fit=False)


@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_shipped_workflow_loads_without_errors(server, frontend, name):
    """Every workflows/*.json: no missing node type, no invalid widget value, no uncaught page error, no
    dialog. The pixel workflows (the pack downloads their ADM / TAESD files itself; the loader shows
    "(download on first use)") raise no issue at all; a file the test server lacks (the latent workflows'
    checkpoints) is listed with the registry's metadata and offered for download in the Issues tab."""
    path = zt.WORKFLOWS_DIR / f"{name}.json"
    saved = json.loads(path.read_text())
    report, state = _load(frontend, path)
    assert report.ok, report
    assert report.node_count == len(saved["nodes"])
    assert state["pageErrors"] == [] and state["dialogs"] == [] and not state["missingNodes"], state
    for model in state["missingModels"]:
        assert {k: model[k] for k in ("name", "url", "directory")} == R.frontend_model(model["name"]), model
    if name in CHECKPOINT_WORKFLOWS:
        assert [m["name"] for m in state["missingModels"]] == [CHECKPOINT_WORKFLOWS[name]], state
    if any(n["type"] == "ZeconDiffusionLoader" for n in saved["nodes"]) or name == "index":
        assert state["missingModels"] == [] and not state["hasAnyError"] and not state["overlay"], state
    if state["missingModels"]:
        frontend.page.get_by_text("View details").click()
        frontend.page.wait_for_timeout(1000)
        panel = frontend.evaluate(_PANEL_JS)
        assert sorted(panel["downloads"]) == sorted(f"Download {m['name']}" for m in state["missingModels"])
    frontend.screenshot(SHOTS / f"{name}.png", fit=not state["missingModels"])


def test_template_browser_lists_the_pack_workflows(server, frontend):
    """Browse Templates → Extensions → the pack: a card per shipped workflow; opening one loads it."""
    _reset(frontend)
    frontend.evaluate("async () => await app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = frontend.page.locator("[role=dialog]").last
    dialog.get_by_text(zt.PACK_NAME, exact=True).first.click()
    frontend.page.wait_for_timeout(1500)
    text = dialog.inner_text()
    listed = {name for name in UI_WORKFLOWS if f"\n{name}\n" in f"\n{text}\n"}
    assert listed == set(UI_WORKFLOWS), text[-800:]
    assert f"Showing {len(UI_WORKFLOWS)} of {len(UI_WORKFLOWS)} templates" in text
    frontend.screenshot(SHOTS / "template_browser.png", fit=False)
    dialog.get_by_text("zecon_style_transfer_imagenet", exact=True).click()
    frontend.page.wait_for_timeout(2000)
    types = frontend.evaluate("() => app.graph.nodes.map(n => n.type)")
    saved = json.loads((zt.WORKFLOWS_DIR / "zecon_style_transfer_imagenet.json").read_text())
    assert sorted(types) == sorted(n["type"] for n in saved["nodes"])
