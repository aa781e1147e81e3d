"""Smoke test of the ComfyUI test infrastructure itself (harness + browser).

Uses only ComfyUI core nodes and throw-away packs written into a tmp dir:
  * zecon_smoke_pack    - V3 pack (+ a sub-package imported relatively):
                          io.ComfyNode, io.Custom type, ComfyExtension,
                          async comfy_entrypoint, ProgressBar previews,
                          validate_inputs, a model-folder combo, workflows/
  * zecon_smoke_mixed   - defines NODE_CLASS_MAPPINGS *and* comfy_entrypoint
                          (ComfyUI 0.3.75 ignores the entrypoint then)
  * zecon_smoke_broken  - raises on import: the harness must report it
One server for the whole module (started with check_imports=False so the
broken pack can be asserted on from the real log).
"""
from __future__ import annotations

import io as _io
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

import harness
from harness import ComfyStartupError, PromptFailed, PromptRejected

pytestmark = pytest.mark.comfy

SMOKE_PACK = textwrap.dedent('''
    """Throw-away V3 node pack used by tests/comfy/test_harness_smoke.py."""
    import os
    import time

    import folder_paths
    import torch
    from PIL import Image

    import comfy.model_management
    import comfy.utils
    from comfy_api.latest import ComfyExtension, io, ui

    # --- a model folder of our own ("smoke_models"): keep paths the yaml may
    # already have added (extra_model_paths are applied BEFORE packs import),
    # and give it an extension filter.
    _FOLDER = "smoke_models"
    _default = os.path.join(folder_paths.models_dir, _FOLDER)
    if _FOLDER in folder_paths.folder_names_and_paths:
        _paths, _exts = folder_paths.folder_names_and_paths[_FOLDER]
        if _default not in _paths:
            _paths.append(_default)
        folder_paths.folder_names_and_paths[_FOLDER] = (_paths, {".safetensors", ".pt"})
    else:
        folder_paths.folder_names_and_paths[_FOLDER] = ([_default], {".safetensors", ".pt"})

    from .helpers import CHANNELS  # relative imports of sub-packages work

    SmokeTint = io.Custom("SMOKE_TINT")


    class SmokeMakeTint(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="SmokeMakeTint",
                display_name="Smoke: make tint",
                category="zecon_smoke",
                description="Builds a SMOKE_TINT value.",
                inputs=[
                    io.Float.Input("strength", default=0.5, min=0.0, max=1.0, step=0.01,
                                   tooltip="how much tint"),
                    io.Combo.Input("channel", options=CHANNELS, default="red"),
                    io.Combo.Input("model_file", options=folder_paths.get_filename_list(_FOLDER),
                                   optional=True),
                    io.String.Input("label", default="", multiline=False, optional=True),
                ],
                outputs=[SmokeTint.Output("tint", display_name="tint",
                                          tooltip="a tint for SmokeApplyTint")],
            )

        @classmethod
        def validate_inputs(cls, label=None) -> bool | str:
            if label == "forbidden":
                return "label must not be 'forbidden'"
            return True

        @classmethod
        async def execute(cls, strength, channel, model_file=None, label="") -> io.NodeOutput:
            # async execute is allowed (FUNCTION -> EXECUTE_NORMALIZED_ASYNC)
            if model_file is not None:
                folder_paths.get_full_path_or_raise(_FOLDER, model_file)
            return io.NodeOutput({"strength": strength, "channel": CHANNELS.index(channel)})


    class SmokeApplyTint(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="SmokeApplyTint",
                display_name="Smoke: apply tint",
                category="zecon_smoke",
                inputs=[
                    io.Image.Input("image"),
                    SmokeTint.Input("tint"),
                    io.Int.Input("steps", default=3, min=1, max=1000),
                    io.Float.Input("sleep", default=0.0, min=0.0, max=1.0, step=0.01),
                ],
                outputs=[io.Image.Output("image_out", display_name="IMAGE")],
                hidden=[io.Hidden.unique_id],
            )

        @classmethod
        def fingerprint_inputs(cls, **kwargs):
            return float("nan")  # never cached: every run really executes

        @classmethod
        def execute(cls, image, tint, steps, sleep) -> io.NodeOutput:
            # cls is a locked clone during execution: no class attribute writes
            try:
                cls.cache = {}
            except AttributeError:
                pass
            else:
                raise RuntimeError("expected a locked class in execute()")
            out = image.clone()
            pbar = comfy.utils.ProgressBar(steps, node_id=cls.hidden.unique_id)
            for i in range(steps):
                comfy.model_management.throw_exception_if_processing_interrupted()
                if sleep:
                    time.sleep(sleep)
                frac = (i + 1) / steps
                out[..., tint["channel"]] = image[..., tint["channel"]] * (1 - frac * tint["strength"]) + frac * tint["strength"]
                arr = (out[0].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
                pbar.update_absolute(i + 1, steps, ("JPEG", Image.fromarray(arr), 64))
            return io.NodeOutput(out, ui=ui.PreviewImage(out, cls=cls))


    class SmokeExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return [SmokeMakeTint, SmokeApplyTint]


    async def comfy_entrypoint() -> SmokeExtension:
        return SmokeExtension()
''')

MIXED_PACK = textwrap.dedent('''
    from comfy_api.latest import ComfyExtension, io


    class SmokeV1Node:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {"default": 1})}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"
        CATEGORY = "zecon_smoke"

        def run(self, x):
            return (x,)


    class SmokeIgnoredV3(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="SmokeIgnoredV3", inputs=[], outputs=[])

        @classmethod
        def execute(cls):
            return io.NodeOutput()


    class _Ext(ComfyExtension):
        async def get_node_list(self):
            return [SmokeIgnoredV3]


    async def comfy_entrypoint():
        return _Ext()


    NODE_CLASS_MAPPINGS = {"SmokeV1Node": SmokeV1Node}
''')

BROKEN_PACK = "raise ImportError('zecon smoke: this pack is broken on purpose')\n"


def _write_pack(root: Path, name: str, init_py: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(init_py)
    return d


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke_packs")
    pack = _write_pack(root, "zecon_smoke_pack", SMOKE_PACK)
    (pack / "helpers").mkdir()
    (pack / "helpers" / "__init__.py").write_text('CHANNELS = ["red", "green", "blue"]\n')
    (pack / "workflows").mkdir()
    (pack / "workflows" / "smoke_template.json").write_text(json.dumps({"nodes": [], "links": []}))
    mixed = _write_pack(root, "zecon_smoke_mixed", MIXED_PACK)
    broken = _write_pack(root, "zecon_smoke_broken", BROKEN_PACK)
    models = tmp_path_factory.mktemp("smoke_models")
    (models / "tiny.safetensors").write_bytes(b"\0" * 16)
    (models / "README.txt").write_text("not a model")
    return {"packs": [pack, mixed, broken], "models": models}


@pytest.fixture(scope="module")
def server(comfy_server_factory, smoke_env):
    return comfy_server_factory(packs=smoke_env["packs"],
                                model_folders={"smoke_models": smoke_env["models"]},
                                check_imports=False)


@pytest.fixture(scope="module")
def client(server):
    return server.client


def _empty_image(w=32, h=24, color=0x000000):
    return {"class_type": "EmptyImage",
            "inputs": {"width": w, "height": h, "batch_size": 1, "color": color}}


def _tint_prompt(strength=1.0, channel="green", steps=3, sleep=0.0, **make_extra):
    return {
        "1": _empty_image(),
        "2": {"class_type": "SmokeMakeTint",
              "inputs": {"strength": strength, "channel": channel, **make_extra}},
        "3": {"class_type": "SmokeApplyTint",
              "inputs": {"image": ["1", 0], "tint": ["2", 0], "steps": steps, "sleep": sleep}},
        "4": {"class_type": "SaveImage",
              "inputs": {"images": ["3", 0], "filename_prefix": "smoke/tint"}},
    }


# ------------------------------------------------------------------ server side
def test_import_failures_detected_from_real_log(server):
    bad = server.import_failures()
    assert bad, server.log_tail()
    assert all("zecon_smoke_broken" in line for line in bad), bad
    with pytest.raises(ComfyStartupError, match="zecon_smoke_broken"):
        server.check_log()
    # torchaudio-less built-ins are the only tolerated "IMPORT FAILED" lines
    log = server.log_text()
    for line in log.splitlines():
        m = harness.BUILTIN_FAILURE_RE.search(line)
        if m:
            assert m.group(1) in harness.DEFAULT_ALLOWED_BUILTIN_IMPORT_FAILURES, line


def test_object_info_lists_v3_nodes(client):
    make = client.object_info("SmokeMakeTint")
    assert make["display_name"] == "Smoke: make tint"
    assert make["category"] == "zecon_smoke"
    assert make["output"] == ["SMOKE_TINT"]
    assert make["output_tooltips"] == ["a tint for SmokeApplyTint"]
    strength = make["input"]["required"]["strength"]
    assert strength[0] == "FLOAT" and strength[1]["max"] == 1.0
    assert strength[1]["tooltip"] == "how much tint"
    # COMBO in V3 is sent as ("COMBO", {"options": [...]})
    assert make["input"]["required"]["channel"][0] == "COMBO"
    assert make["input"]["required"]["channel"][1]["options"] == ["red", "green", "blue"]
    # model folder from the extra_model_paths yaml, filtered by the pack's extensions
    assert make["input"]["optional"]["model_file"][1]["options"] == ["tiny.safetensors"]
    apply = client.object_info("SmokeApplyTint")
    assert apply["input"]["required"]["tint"][0] == "SMOKE_TINT"
    assert apply["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"]}
    assert apply["python_module"] == "custom_nodes.zecon_smoke_pack"
    all_info = client.object_info()
    assert "EmptyImage" in all_info and "SaveImage" in all_info
    # NODE_CLASS_MAPPINGS wins: the mixed pack's comfy_entrypoint is never called
    assert "SmokeV1Node" in all_info and "SmokeIgnoredV3" not in all_info


def test_templates_endpoint_reads_pack_workflows_dir(client):
    templates = client.get_json("/workflow_templates")
    assert templates.get("zecon_smoke_pack") == ["smoke_template"]
    status, body, _ = client.request(
        "GET", "/api/workflow_templates/zecon_smoke_pack/smoke_template.json")
    assert status == 200 and json.loads(body) == {"nodes": [], "links": []}


def test_core_only_prompt_saves_image(client):
    prompt = {"1": _empty_image(40, 20, 0xFF0000),
              "2": {"class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "core/empty"}}}
    entry = client.run(prompt, timeout=60)
    paths = client.output_paths(entry)
    assert len(paths) == 1 and paths[0].is_file()
    from PIL import Image
    with Image.open(paths[0]) as im:
        assert im.size == (40, 20)
        assert im.getpixel((0, 0))[:3] == (255, 0, 0)
    assert client.view(client.output_images(entry)[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_nodes_run_with_progress_and_previews(client):
    with client.listen() as events:
        entry = client.run(_tint_prompt(strength=1.0, channel="green", steps=3), timeout=60)
        deadline = time.monotonic() + 5
        while not events.of_type("executed") and time.monotonic() < deadline:
            time.sleep(0.05)
    from PIL import Image
    [path] = client.output_paths(entry, node_id="4")
    with Image.open(path) as im:
        assert im.getpixel((0, 0))[:3] == (0, 255, 0)
    # ui=ui.PreviewImage(...) of SmokeApplyTint lands in the history as a temp image
    temp = client.output_images(entry, node_id="3")
    assert temp and temp[0]["type"] == "temp"
    progress = [p for p in events.of_type("progress") if p["node"] == "3"]
    assert [p["value"] for p in progress] == [1, 2, 3], progress
    assert len(events.previews) >= 1
    mime, data, meta = events.previews[-1]
    assert mime == "image/jpeg" and data[:2] == b"\xff\xd8"
    assert meta.get("node_id") == "3"
    with Image.open(_io.BytesIO(data)) as im:
        assert max(im.size) <= 64


@pytest.mark.parametrize("change, input_name, err_type", [
    ({"strength": 5.0}, "strength", "value_bigger_than_max"),
    ({"label": "forbidden"}, "label", "custom_validation_failed"),
])
def test_invalid_input_is_http_400_with_node_errors(client, change, input_name, err_type):
    prompt = _tint_prompt()
    prompt["2"]["inputs"].update(change)
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    rej = ei.value
    assert rej.status == 400
    assert rej.error["type"] == "prompt_outputs_failed_validation"
    assert set(rej.node_errors) == {"2"}
    errors = rej.node_errors["2"]["errors"]
    assert rej.node_errors["2"]["class_type"] == "SmokeMakeTint"
    assert any(e["type"] == err_type and e["extra_info"]["input_name"] == input_name
               for e in errors), errors
    assert input_name in rej.error_inputs()


def test_v3_combo_values_are_not_validated_by_server(client):
    """ComfyUI 0.3.75 trap: execution.validate_inputs only checks combo values
    when the input type is a *list* (V1 style); a V3 io.Combo.Input has type
    "COMBO" + {"options": [...]}, so a wrong value passes validation (HTTP 200)
    and reaches execute(). Packs must check combo values themselves."""
    prompt = _tint_prompt()
    prompt["2"]["inputs"]["channel"] = "purple"
    status, body = client.post_prompt(prompt)
    assert status == 200, body
    with pytest.raises(PromptFailed) as ei:
        client.wait_for(body["prompt_id"], timeout=60)
    err = ei.value.message("execution_error")
    assert err["node_id"] == "2" and "purple" in err["exception_message"]


def test_unknown_node_type_is_rejected(client):
    status, body = client.post_prompt({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt"
    assert body["node_errors"] == {}


def test_interrupt_stops_a_running_prompt(client):
    prompt_id = client.queue_prompt(_tint_prompt(steps=400, sleep=0.05))
    client.wait_until_running(prompt_id)
    time.sleep(0.3)
    client.interrupt(prompt_id)
    with pytest.raises(PromptFailed) as ei:
        client.wait_for(prompt_id, timeout=30)
    assert ei.value.message("execution_interrupted") is not None


# ------------------------------------------------------------------ frontend
GRAPH_NODES = [
    {"id": 1, "type": "EmptyImage", "pos": [40, 60],
     "widgets": {"width": 48, "height": 32, "color": 0x000000}},
    {"id": 2, "type": "SmokeMakeTint", "pos": [40, 320],
     "widgets": {"strength": 1.0, "channel": "blue"}},
    {"id": 3, "type": "SmokeApplyTint", "pos": [420, 60], "widgets": {"steps": 2}},
    {"id": 4, "type": "SaveImage", "pos": [800, 60],
     "widgets": {"filename_prefix": "smoke/frontend"}},
]
GRAPH_LINKS = [(1, 0, 3, "image"), (2, 0, 3, "tint"), (3, 0, 4, "images")]


@pytest.fixture(scope="module")
def frontend(comfy_frontend_factory, server):
    return comfy_frontend_factory(server)


@pytest.mark.browser
def test_frontend_settings_were_written(server, frontend, client):
    settings = client.get_json("/settings")
    assert settings.get("Comfy.TutorialCompleted") is True
    assert "SmokeApplyTint" in frontend.registered_node_types()


@pytest.mark.browser
def test_frontend_saved_workflow_roundtrip(server, frontend, client, tmp_path):
    # 1. build in the real frontend and save it like "Export" does
    frontend.build_graph(GRAPH_NODES, GRAPH_LINKS)
    wf_path = frontend.export_workflow(tmp_path / "smoke_workflow.json") and tmp_path / "smoke_workflow.json"
    saved = json.loads(wf_path.read_text())
    assert {n["type"] for n in saved["nodes"]} == {"EmptyImage", "SmokeMakeTint",
                                                   "SmokeApplyTint", "SaveImage"}
    # 2. load the saved UI workflow back: nothing missing, no invalid widget
    report = frontend.load_workflow(wf_path)
    assert report.missing_node_types == [] and report.missing_dialog_calls == []
    assert report.invalid_widgets == []
    assert report.node_count == 4
    # 3. the frontend's API prompt runs on the server
    api = frontend.api_prompt()
    assert api["2"]["class_type"] == "SmokeMakeTint" and api["2"]["inputs"]["channel"] == "blue"
    assert api["3"]["inputs"]["tint"] == ["2", 0]
    entry = client.run(api, timeout=60)
    [path] = client.output_paths(entry, node_id="4")
    from PIL import Image
    with Image.open(path) as im:
        assert im.size == (48, 32) and im.getpixel((0, 0))[:3] == (0, 0, 255)
    shot = frontend.screenshot(Path(os.environ.get("ZECON_ARTIFACTS", tmp_path)) / "smoke_frontend.png")
    assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_frontend_reports_missing_nodes_and_bad_widgets(frontend, tmp_path):
    frontend.build_graph(GRAPH_NODES, GRAPH_LINKS)
    wf = frontend.export_workflow()
    bad = json.loads(json.dumps(wf))
    for n in bad["nodes"]:
        if n["type"] == "SmokeMakeTint":
            n["widgets_values"] = [5.0, "purple", *n["widgets_values"][2:]]
        if n["type"] == "SaveImage":
            n["type"] = "NoSuchSaveNode"
    report = frontend.load_workflow(bad, show_dialogs=False)
    assert report.missing_node_types == ["NoSuchSaveNode"]
    problems = {(w["type"], w["widget"]) for w in report.invalid_widgets}
    assert ("SmokeMakeTint", "strength") in problems
    assert ("SmokeMakeTint", "channel") in problems
    # with dialogs on, the frontend's own missing-nodes path is hit
    report = frontend.load_workflow(bad, show_dialogs=True)
    assert report.missing_dialog_calls == [["NoSuchSaveNode"]]


@pytest.mark.browser
def test_frontend_builds_ui_workflow_from_api_prompt(frontend, client):
    report = frontend.load_api_prompt(_tint_prompt(channel="red", steps=2))
    assert report.missing_node_types == [] and report.invalid_widgets == []
    wf = frontend.export_workflow()
    assert len(wf["nodes"]) == 4 and len(wf["links"]) == 3
    api = frontend.api_prompt()
    assert api["2"]["inputs"]["channel"] == "red"
    client.run(api, timeout=60)
