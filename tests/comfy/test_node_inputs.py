"""Every number and combo input of every node of the pack through ComfyUI's own prompt validation
(``execution.validate_inputs``, in-process, the pack's nodes registered as ComfyUI registers them).

ComfyUI skips its min/max check for an input a node validates itself, and its check lets NaN through
(``NaN < min`` is false); a JSON ``null`` for a V3 combo is not checked at all. Each case here is one
bad literal value in an otherwise default node: refused at validation, by a message naming the input.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import math

import pytest

import comfy_inprocess

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def pack_nodes(tmp_path_factory):
    comfy_inprocess.load(tmp_path_factory.mktemp("comfy_input"))
    import nodes
    from zecon_pack.nodes import NODES
    for node in NODES:
        nodes.NODE_CLASS_MAPPINGS[node.GET_SCHEMA().node_id] = node
    return {node.GET_SCHEMA().node_id: node for node in NODES}


def _spec(node):
    spec = node.INPUT_TYPES()
    return {name: (kind, extra[0] if extra else {}) for group in ("required", "optional")
            for name, (kind, *extra) in spec.get(group, {}).items()}


def _defaults(node) -> dict:
    """Each widget's default (a combo without one: its first option, or a name that is not there)."""
    out = {}
    for name, (kind, info) in _spec(node).items():
        if "default" in info:
            out[name] = info["default"]
        elif kind == "COMBO":
            out[name] = (info.get("options") or ["absent.safetensors"])[0]
    return out


def _problems(node_id: str, inputs: dict, extra_nodes: dict | None = None) -> list[str]:
    """The texts of the node's own validation errors (each problem once, as the pack reports them)."""
    import execution
    prompt = {"1": {"class_type": node_id, "inputs": inputs}, **(extra_nodes or {})}
    try:
        # in a thread of its own: the session's Playwright driver (frontend tests) may run a loop in this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            _, errors, _ = pool.submit(asyncio.run, execution.validate_inputs("test", prompt, "1", {})).result()
    except Exception as e:   # what ComfyUI's validate_prompt reports as the node's one error
        return [part.strip() for part in str(e).split("; ")]
    found = []
    for e in errors:
        if e["type"] in ("exception_during_inner_validation", "custom_validation_failed"):
            found += [part.strip() for part in e["details"].split("; ")]
        elif e["type"] != "required_input_missing":
            found.append(f"{e['extra_info'].get('input_name')}: {e['type']}")
    return found


def _number_cases(pack_nodes):
    cases = []
    for node_id, node in pack_nodes.items():
        for name, (kind, info) in _spec(node).items():
            if kind not in ("INT", "FLOAT"):
                continue
            if kind == "FLOAT":
                cases += [(node_id, name, math.nan), (node_id, name, math.inf), (node_id, name, -math.inf)]
            if "min" in info:
                cases.append((node_id, name, info["min"] - (1 if kind == "INT" else 0.5)))
            if "max" in info and kind == "FLOAT":
                cases.append((node_id, name, info["max"] + 0.5))
    return cases


def test_defaults_pass(pack_nodes):
    """The check is not always failing: every node with its defaults has no problem with a number or combo."""
    for node_id, node in pack_nodes.items():
        spec = _spec(node)
        bad = [p for p in _problems(node_id, _defaults(node))
               if p.split(":")[0] in spec and spec[p.split(":")[0]][0] in ("INT", "FLOAT", "COMBO")
               and "not found" not in p and "missing" not in p]
        assert not bad, (node_id, bad)


def test_every_bad_number_is_refused_naming_the_input(pack_nodes):
    cases = _number_cases(pack_nodes)
    assert len(cases) > 40   # every node's numbers, not a handful
    missed = []
    for node_id, name, value in cases:
        inputs = {**_defaults(pack_nodes[node_id]), name: value}
        if not any(p.startswith(f"{name}:") for p in _problems(node_id, inputs)):
            missed.append((node_id, name, value))
    assert not missed


@pytest.mark.parametrize("node_id, name", [("ZeconGuider", "start_percent"), ("ZeconGuider", "end_percent")])
@pytest.mark.parametrize("value", [2.0, 3.0, -0.5, 1.5, math.nan])
def test_guidance_window_out_of_range_is_refused(pack_nodes, node_id, name, value):
    inputs = {**_defaults(pack_nodes[node_id]), name: value}
    if name == "start_percent" and value > 1:
        inputs["end_percent"] = 3.0
    assert any(p.startswith(f"{name}:") for p in _problems(node_id, inputs))


def test_null_for_a_combo_is_refused_naming_the_input(pack_nodes):
    missed = []
    combos = [(node_id, name) for node_id, node in pack_nodes.items()
              for name, (kind, _) in _spec(node).items() if kind == "COMBO"]
    assert ("ZeconGuider", "mode") in combos and ("ZeconGuider", "decoder") in combos
    for node_id, name in combos:
        inputs = {**_defaults(pack_nodes[node_id]), name: None}
        if not any(p.startswith(f"{name}:") and "null" in p for p in _problems(node_id, inputs)):
            missed.append((node_id, name))
    assert not missed


def test_a_linked_combo_is_not_null_and_link_types_are_still_checked(pack_nodes):
    """A linked input arrives as None during validation too: it is not refused as null; a link of the wrong
    type is still refused (the pack checks link types itself: its validate_inputs take input_types)."""
    import nodes

    class ComboOut:   # a node whose output is a combo value (as selector nodes of other packs)
        RETURN_TYPES = ("COMBO",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

    nodes.NODE_CLASS_MAPPINGS["ZeconTestComboOut"] = ComboOut
    inputs = _defaults(pack_nodes["ZeconGuider"])
    extra = {"2": {"class_type": "ZeconTestComboOut", "inputs": {}},
             "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}}
    problems = _problems("ZeconGuider", {**inputs, "model": ["3", 0]}, extra)
    assert any(p.startswith("model:") for p in problems), problems
    problems = _problems("ZeconGuider", {**inputs, "mode": ["2", 0]}, extra)
    assert not any("null" in p for p in problems), problems
