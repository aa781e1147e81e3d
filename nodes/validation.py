"""Checks shared by ``validate_inputs`` of several nodes.

ComfyUI 0.3.75 does not check V3 combo values, and an input named in
``validate_inputs`` loses the built-in min/max check, so the nodes only name
the inputs they must check together here. Each helper returns ``None`` or an
error text that starts with the input's name. Linked inputs arrive as ``None``
during validation and are skipped.

Every node of the pack takes ``validate_inputs(cls, input_types=None, **values)`` and starts with
``schema_errors``: ComfyUI skips its own min/max check for every input of such a function, its
check never caught NaN anyway (``NaN < min`` is false), and a JSON ``null`` for a combo reached
``execute``; ``schema_errors`` checks every literal input against the node's schema instead, and
(because ``input_types`` turns ComfyUI's own check off) the types of the linked ones.

How ComfyUI 0.3.75 reports a ``validate_inputs`` result (``execution.validate_inputs``):
a returned string becomes one ``custom_validation_failed`` error *for every input the
function names*, each with the same text, so one bad respacing was listed three times
(as errors of respacing, skip and size_policy). An exception raised by ``validate_inputs``
is reported once, on the node (``exception_during_inner_validation``, its ``details`` the
message). ``result`` therefore raises ``InvalidInputs`` with every problem listed once,
each starting with the name of the input it is about.
"""

from __future__ import annotations

import math

from ..zecon_core.pixel.schedule import Schedule


def schema_errors(node, values: dict, input_types: dict | None) -> list[str | None]:
    """Every input of ``node`` (a V3 node class) that ``values`` holds, checked against its schema.

    Literal numbers: finite, within the schema's min/max, whole for INT inputs (a value ComfyUI could
    not convert to a number it reports itself). Literal ``null`` (JSON ``null``; a linked input also
    arrives as None, but ``input_types`` lists those) for a combo or another required input: refused.
    Linked inputs: the output's type must fit the input's (ComfyUI's ``validate_node_input``, which
    ComfyUI skips for a node whose ``validate_inputs`` takes ``input_types``).
    """
    from comfy_execution.validation import validate_node_input

    linked = input_types or {}
    spec = node.INPUT_TYPES()
    errors = []
    for group in ("required", "optional"):
        for name, (kind, *extra) in spec.get(group, {}).items():
            info = extra[0] if extra else {}
            if name in linked:
                if not validate_node_input(linked[name], kind):
                    errors.append(f"{name}: a {linked[name]} output cannot feed this {kind} input")
                continue
            if name not in values:
                continue
            value = values[name]
            if kind in ("INT", "FLOAT") and not isinstance(value, (int, float)):
                continue   # ComfyUI could not convert it and reports that itself (invalid_input_type)
            if value is None:
                if group == "required" or kind == "COMBO":
                    shown = ""
                    if kind == "COMBO":
                        shown = " (choose one of " + ", ".join(repr(o) for o in list(info.get("options", []))[:20]) + ")"
                    errors.append(f"{name}: null is not a value (neither a widget value nor a link){shown}")
                continue
            if kind in ("INT", "FLOAT"):
                errors.append(number(name, value, info.get("min"), info.get("max"), integer=kind == "INT"))
    return errors


def combo(name: str, value, options) -> str | None:
    if value is None or value in options:
        return None
    shown = ", ".join(repr(o) for o in list(options)[:20])
    return f"{name}: {value!r} is not one of {shown}"


def number(name: str, value, lo=None, hi=None, integer: bool = False) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name}: expected a number, got {value!r}"
    if not math.isfinite(value):
        return f"{name}: must be a finite number, got {value!r}"
    if integer and int(value) != value:
        return f"{name}: must be an integer, got {value!r}"
    if lo is not None and value < lo:
        return f"{name}: must be >= {lo}, got {value!r}"
    if hi is not None and value > hi:
        return f"{name}: must be <= {hi}, got {value!r}"
    return None


class InvalidInputs(ValueError):
    """Raised by a node's ``validate_inputs``: one node-level error listing each problem once."""


def schedule(respacing) -> tuple[Schedule | None, str | None]:
    if respacing is None:
        return None, None
    if not str(respacing).strip():
        return None, ("respacing: is empty; give a step count like '50', sections like '10,20' or 'ddim25' "
                      "(an empty respacing would silently mean all 1000 steps)")
    try:
        return Schedule.create(str(respacing)), None
    except ValueError as e:
        return None, f"respacing: {e}"


def skip(respacing, value) -> str | None:
    """``skip`` must be 0 .. steps-1 for the respacing (the reverse process needs one step at least)."""
    err = number("skip", value, lo=0, integer=True)
    if err or value is None:
        return err
    s, bad = schedule(respacing)
    if bad or s is None:
        return bad
    if value >= s.num_steps:
        return (f"skip: must be below the number of steps ({s.num_steps} for respacing {respacing!r}), "
                f"got {value}")
    return None


def parse_layers(text: str) -> tuple[int, ...]:
    """``"0,2,5,8,11"`` -> (0, 2, 5, 8, 11); raises ``ValueError`` naming the bad part."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError("zecon_layers: give UNet input block indices like '0,2,5,8,11'")
    layers = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise ValueError(f"zecon_layers: {p!r} is not a block index (use integers like '0,2,5,8,11')") from None
        if v < 0:
            raise ValueError(f"zecon_layers: block indices must be >= 0, got {v}")
        layers.append(v)
    return tuple(layers)


def layers(text) -> str | None:
    if text is None:
        return None
    try:
        parse_layers(text)
    except ValueError as e:
        return str(e)
    return None


def result(*errors: str | None) -> bool:
    """``True`` for ``validate_inputs``, or ``InvalidInputs`` with each problem once (see the module doc)."""
    bad = list(dict.fromkeys(e for e in errors if e))
    if bad:
        raise InvalidInputs("; ".join(bad))
    return True


def head_channels(value) -> str | None:
    """``num_head_channels``: -1 or a positive width (whether it divides the model's attention
    channels is checked against the weights when the model loads)."""
    err = number("num_head_channels", value, lo=-1, hi=1024, integer=True)
    if err or value is None:
        return err
    if value == 0:
        return ("num_head_channels: 0 is not a head width; use -1 (4 heads per attention layer) or a positive "
                "divisor of the attention channels (64 for the ImageNet and FFHQ models)")
    return None


def check_layers_fit(model, layer_indices) -> None:
    """Raise ``ValueError`` when a ZeCon layer is not an input block of this UNet."""
    n = len(model.unet.input_blocks)
    bad = [i for i in layer_indices if i >= n]
    if bad:
        raise ValueError(f"zecon_layers: block {bad[0]} does not exist; {model.name} has {n} input blocks "
                         f"(0..{n - 1})")
