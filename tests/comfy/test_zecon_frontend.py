"""The shipped UI workflows in the REAL ComfyUI frontend (headless Chromium via Playwright).

Each workflows/*.json is loaded with app.loadGraphData: no node type may be
missing and no widget value invalid (with the tiny model files present; the
known models are offered as "(download on first use)" labels). The frontend's
own app.graphToPrompt() must equal the API-format copy in tests/workflows_api
and must run on the server (with the tiny model files swapped in). A
screenshot of each graph is saved under test-artifacts/frontend/.
"""
from __future__ import annotations

import json

import pytest

import zecon_testing as zt
import zecon_workflows as zw

pytestmark = [pytest.mark.comfy, pytest.mark.browser]

UI_WORKFLOWS = sorted(p.stem for p in zt.WORKFLOWS_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def frontend(comfy_frontend_factory, server):
    return comfy_frontend_factory(server)


def _strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def test_tutorial_setting_written_and_nodes_registered(server, frontend):
    assert server.client.get_json("/settings").get("Comfy.TutorialCompleted") is True
    registered = set(frontend.registered_node_types())
    assert set(zt.NODE_IDS) <= registered


def test_every_shipped_workflow_has_a_thumbnail_and_an_index_entry():
    assert set(zw.WORKFLOWS) <= set(UI_WORKFLOWS)
    for name in UI_WORKFLOWS:
        thumb = zt.WORKFLOWS_DIR / f"{name}.jpg"
        assert thumb.is_file() and thumb.read_bytes()[:3] == b"\xff\xd8\xff", name
    index = json.loads((zt.WORKFLOWS_DIR / "index.json").read_text())
    entries = {e["name"]: e for e in index["extra"]["zecon_workflows"]}
    assert set(entries) == set(zw.WORKFLOWS) == set(zt.api_names())
    for e in entries.values():
        assert e["title"] and e["description"] and e["models"]
    # only UI-format workflows in workflows/ (the template browser lists every json there)
    for name in UI_WORKFLOWS:
        wf = json.loads((zt.WORKFLOWS_DIR / f"{name}.json").read_text())
        assert isinstance(wf.get("nodes"), list) and "links" in wf and "class_type" not in json.dumps(wf)[:200]


@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_ui_workflow_loads_clean_and_runs(server, frontend, name):
    path = zt.WORKFLOWS_DIR / f"{name}.json"
    report = frontend.load_workflow(path)
    assert report.missing_node_types == [] and report.missing_dialog_calls == []
    assert report.invalid_widgets == [], report.invalid_widgets
    saved = json.loads(path.read_text())
    assert report.node_count == len(saved["nodes"])
    frontend.screenshot(zt.ARTIFACTS / "frontend" / f"{name}.png")

    api = frontend.api_prompt()
    if name == "index":
        assert api == {}  # a note only
        return
    # the frontend's prompt is the API-format copy shipped for headless runs
    assert _strip_meta(api) == _strip_meta(zt.load_api(name))
    prompt = zt.tiny(api)
    for node in prompt.values():  # another seed than the server tests: the samplers really run here
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = 1234
    entry = server.client.run(prompt, timeout=300)
    saves = zt.nodes_of(prompt, "SaveImage")
    assert saves and all(server.client.output_paths(entry, s) for s in saves)


def test_templates_open_from_the_template_endpoint(server, frontend):
    """What the template browser does: fetch /api/workflow_templates/<pack>/<name>.json and load it."""
    names = server.client.get_json("/workflow_templates")[zt.PACK_NAME]
    for name in zw.WORKFLOWS:
        assert name in names
        wf = frontend.evaluate(
            "async ([pack, name]) => (await fetch(`/api/workflow_templates/${pack}/${name}.json`)).json()",
            [zt.PACK_NAME, name])
        report = frontend.load_workflow(wf)
        assert report.ok, (name, report)


LATENT_WORKFLOWS = ("zecon_sd15_latent", "zecon_sdxl_latent", "zecon_flux_latent", "zecon_zimage_latent")
MODEL_LOADERS = ("CheckpointLoaderSimple", "UNETLoader")


@pytest.mark.parametrize("name", LATENT_WORKFLOWS)
def test_latent_workflow_ships_the_clip_losses_bypassed_and_they_turn_on(server, frontend, name):
    """The latent workflows' ZeCon CLIP Loader + Style Prompt are bypassed (mode 4): the frontend's prompt
    leaves them out (the guider's optional clip/style stay unconnected). Turned on (as Ctrl+B does), the
    prompt wires them into the guider, and it runs on the tiny models with the CLIP losses."""
    report = frontend.load_workflow(zt.WORKFLOWS_DIR / f"{name}.json")
    assert report.ok, report
    modes = frontend.evaluate("() => Object.fromEntries(app.graph.nodes.map(n => [n.type, n.mode]))")
    assert modes["ZeconClipLoader"] == 4 and modes["ZeconStylePrompt"] == 4
    assert all(m == 0 for t, m in modes.items() if t not in ("ZeconClipLoader", "ZeconStylePrompt")), modes
    assert [modes[t] for t in MODEL_LOADERS if t in modes] == [0] and modes["ZeconGuider"] == 0
    frontend.evaluate("() => { for (const n of app.graph.nodes) if (n.mode === 4) n.mode = 0; }")
    api = frontend.api_prompt()
    [guider] = zt.nodes_of(api, "ZeconGuider")
    [clip] = zt.nodes_of(api, "ZeconClipLoader")
    [style] = zt.nodes_of(api, "ZeconStylePrompt")
    assert api[guider]["inputs"]["clip"] == [clip, 0] and api[guider]["inputs"]["style"] == [style, 0]
    prompt = zt.tiny(api)
    assert prompt[clip]["inputs"]["local_file"] == zt.TINY_CLIP
    [save] = zt.nodes_of(prompt, "SaveImage")
    prompt[save]["inputs"]["filename_prefix"] = f"zecon_test/{name}_clip_on"
    entry = server.client.run(prompt, timeout=300)
    assert server.client.output_paths(entry, save)


# the folder each stock loader's file widgets read (ComfyUI's folder_paths names)
LOADER_FOLDERS = {"UNETLoader": ("diffusion_models", ("unet_name",)),
                  "DualCLIPLoader": ("text_encoders", ("clip_name1", "clip_name2")),
                  "CLIPLoader": ("text_encoders", ("clip_name",)),
                  "VAELoader": ("vae", ("vae_name",)),
                  "CheckpointLoaderSimple": ("checkpoints", ("ckpt_name",))}


@pytest.mark.parametrize("name", ("zecon_flux_latent", "zecon_zimage_latent"))
def test_flow_workflows_declare_the_files_to_fetch(server, frontend, name):
    """As ComfyUI's templates: every file a loader names is in its properties.models (name, https URL on
    Hugging Face, the loader's models folder), and the note tells where each file goes. The loaded graph
    keeps the declarations (the frontend's missing-models dialog reads them)."""
    wf = json.loads((zt.WORKFLOWS_DIR / f"{name}.json").read_text())
    [note] = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    loaders = [n for n in wf["nodes"] if n["type"] in LOADER_FOLDERS]
    assert {n["type"] for n in loaders} >= {"UNETLoader", "VAELoader"}
    for node in loaders:
        folder, widgets = LOADER_FOLDERS[node["type"]]
        declared = {m["name"]: m for m in node["properties"]["models"]}
        files = node["widgets_values"][:len(widgets)]
        assert set(files) == set(declared), (node["type"], files, declared)
        for f in files:
            m = declared[f]
            assert m["directory"] == folder and m["url"].startswith("https://huggingface.co/"), m
            assert m["url"].split("?")[0].endswith("/" + f), m
            assert f"`{f}` -> `models/{folder}/`" in note["widgets_values"][0], f
    report = frontend.load_workflow(zt.WORKFLOWS_DIR / f"{name}.json")
    assert report.ok, report
    kept = frontend.evaluate("() => Object.fromEntries(app.graph.nodes.filter(n => n.properties?.models)"
                             ".map(n => [n.type, n.properties.models.map(m => m.name)]))")
    assert kept == {**{n["type"]: [m["name"] for m in n["properties"]["models"]] for n in loaders},
                    "ZeconGuider": ["taef1_decoder.pth"]}


_MISSING_MODELS_HOOK_JS = """
async (on) => {
  await app.extensionManager.setting.set('Comfy.Workflow.ShowMissingModelsWarning', on);
  if (!window.__zeconModels) {
    window.__zeconModels = { calls: [] };
    const orig = app.showMissingModelsError;
    app.showMissingModelsError = function (models, paths) {
      window.__zeconModels.calls.push(JSON.parse(JSON.stringify(models)));
      return orig.apply(this, arguments);
    };
  }
  window.__zeconModels.calls = [];
}
"""

_DIALOG_JS = """
() => {
  const dialogs = [...document.querySelectorAll('.p-dialog')];
  const text = dialogs.map(d => d.innerText).join('\\n');
  const downloads = dialogs.flatMap(d => [...d.querySelectorAll('button')])
      .filter(b => b.innerText.trim().startsWith('Download') && !b.disabled).map(b => b.title);
  return {text, downloads};
}
"""


def test_missing_checkpoint_is_offered_for_download(server, frontend):
    """With the frontend's missing-model check on (ComfyUI's default; the other tests switch it off), the SD1.5
    workflow's checkpoint (the test server has none) is reported with the metadata the workflow carries, and the
    dialog shows it with an enabled Download button for its URL instead of a bare "missing"; the pixel
    workflows (ADM labels "download on first use": the pack fetches those itself) raise no dialog."""
    import zecon_core.files.registry as R

    ckpt = zw.SD15_CKPT
    try:
        frontend.evaluate(_MISSING_MODELS_HOOK_JS, True)
        frontend.load_workflow(zt.WORKFLOWS_DIR / "zecon_sd15_latent.json")
        frontend.page.wait_for_timeout(1500)
        calls = frontend.evaluate("() => window.__zeconModels.calls")
        assert len(calls) == 1, calls
        [missing] = calls[0]
        assert {k: missing[k] for k in ("name", "url", "directory")} == R.frontend_model(ckpt)
        dialog = frontend.evaluate(_DIALOG_JS)
        assert f"checkpoints / {ckpt}" in dialog["text"], dialog
        assert dialog["downloads"] == [R.WORKFLOW_CHECKPOINTS[ckpt].url], dialog
        frontend.screenshot(zt.ARTIFACTS / "frontend" / "missing_checkpoint_dialog.png", fit=False)
        frontend.page.keyboard.press("Escape")

        for name in ("zecon_style_transfer_imagenet", "zecon_faces_ffhq"):
            frontend.evaluate(_MISSING_MODELS_HOOK_JS, True)
            report = frontend.load_workflow(zt.WORKFLOWS_DIR / f"{name}.json")
            frontend.page.wait_for_timeout(500)
            assert report.ok and frontend.evaluate("() => window.__zeconModels.calls") == [], name
    finally:
        frontend.evaluate(_MISSING_MODELS_HOOK_JS, False)
