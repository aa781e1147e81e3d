"""The miniature world's UI workflow (bench/world/workflows/zecon_world_latent.json) in the REAL frontend.

world_workflows.py builds it in the frontend and writes its API twin (tests/workflows_world, which
test_world_latent_server.py runs) from the same graph. Here the UI file is loaded with app.loadGraphData in a
server with the pack and the test pack (ZeconTestWorldSD): no missing node, no invalid widget value, and the
frontend's graphToPrompt() gives exactly the API twin (titles included), so the two cannot drift.
"""
from __future__ import annotations

import copy
import json

import pytest

import world_workflows as ww
import zecon_testing as zt

pytestmark = [pytest.mark.comfy, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(comfy_server_factory):
    server = comfy_server_factory(packs=ww.PACKS, env=zt.SERVER_ENV)
    ww.write_source_picture(server.input_dir)   # before the page opens: Load Image lists the input folder
    return server


@pytest.fixture(scope="module")
def frontend(comfy_frontend_factory, server):
    return comfy_frontend_factory(server)


def ui_workflow() -> dict:
    return json.loads(ww.UI_PATH.read_text())


def test_world_workflow_files_are_where_they_belong():
    """UI format with a thumbnail under bench/world/workflows, never in the shipped template folder; its note
    says what it is and what it needs."""
    wf = ui_workflow()
    assert isinstance(wf["nodes"], list) and "links" in wf
    thumb = ww.UI_DIR / f"{ww.NAME}.jpg"
    assert thumb.is_file() and thumb.read_bytes()[:3] == b"\xff\xd8\xff"
    assert not (zt.WORKFLOWS_DIR / f"{ww.NAME}.json").exists()
    assert not any("ZeconTestWorldSD" in p.read_text() for p in zt.WORKFLOWS_DIR.glob("*.json"))
    [note] = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    for needed in ("bench/world", "tests/comfy/tiny_sd_pack", "custom_nodes", "64", ww.SOURCE_NAME,
                   ww.TAESD_DECODER_NAME):
        assert needed in text, needed
    api = json.loads(ww.API_PATH.read_text())
    assert api[zt.node_of(api, "LoadImage")]["inputs"]["image"] == ww.SOURCE_NAME
    from bench.world import latent_model as lm
    assert ww.IMAGE_SIZE == lm.IMAGE_SIZE   # the picture is at the size the world's model knows


def test_world_ui_workflow_loads_clean_and_converts_to_its_api_twin(server, frontend):
    report = frontend.load_workflow(ww.UI_PATH)
    assert report.missing_node_types == [] and report.missing_dialog_calls == [], report
    assert report.invalid_widgets == [], report.invalid_widgets
    assert report.node_count == len(ui_workflow()["nodes"])
    frontend.screenshot(zt.ARTIFACTS / "frontend" / f"{ww.NAME}.png")
    assert frontend.api_prompt() == json.loads(ww.API_PATH.read_text())


def test_the_comparison_sees_a_changed_value_and_a_missing_node(server, frontend):
    """The controls: a UI file whose target prompt differs converts to another prompt than the twin, and a
    node type the server lacks is reported missing."""
    twin = json.loads(ww.API_PATH.read_text())
    changed = ui_workflow()
    [positive] = [n for n in changed["nodes"] if n.get("title") == "Positive prompt (the target)"]
    positive["widgets_values"] = ["a dots green square"]
    assert frontend.load_workflow(changed).ok
    api = frontend.api_prompt()
    assert api != twin and api[str(positive["id"])]["inputs"]["text"] == "a dots green square"

    renamed = copy.deepcopy(ui_workflow())
    [model] = [n for n in renamed["nodes"] if n["type"] == "ZeconTestWorldSD"]
    model["type"] = "ZeconTestWorldSDMissing"
    report = frontend.load_workflow(renamed, show_dialogs=False)
    assert report.missing_node_types == ["ZeconTestWorldSDMissing"]
