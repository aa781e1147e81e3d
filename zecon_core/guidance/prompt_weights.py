"""Weighted target prompts: ``(a watercolor painting:1.2) (a pencil sketch:0.8)``.

The convention: a target prompt is either plain text (one style, weight 1) or made
only of ``(text:weight)`` groups, separated by spaces or commas. Each group is
encoded on its own and the styles are blended with their weights (normalised to
sum 1, see ``style.blend_styles``). Weights are numbers >= 0, not all 0. A group
whose part after the colon does not start like a number, e.g. ``(style: impressionism)``,
is plain text; text beside weighted groups is refused, because it has no weight.
"""

from __future__ import annotations

import math
import re

_GROUP = r"\(([^()]*):\s*([^():\s]*)\s*\)"     # (text:weight)
_NUMBER_LIKE = r"[-+.\d]"


def parse_weighted(prompt: str) -> list[tuple[str, float]] | None:
    """The ``(text, weight)`` groups of a weighted prompt, or None for a plain prompt.

    Raises ``ValueError`` for a malformed weight, a negative or non-finite one, all weights 0,
    an empty group text, or text outside the groups.
    """
    groups = [m for m in re.finditer(_GROUP, prompt) if re.match(_NUMBER_LIKE, m.group(2))]
    if not groups:
        return None
    parts, rest, pos = [], [], 0
    for m in groups:
        rest.append(prompt[pos:m.start()])
        pos = m.end()
        text, token = m.group(1).strip(), m.group(2)
        try:
            weight = float(token)
        except ValueError:
            raise ValueError(f"the weight {token!r} in {m.group(0)!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"prompt weights must be finite numbers >= 0, got {token} in {m.group(0)!r}")
        if not text:
            raise ValueError(f"the weighted group {m.group(0)!r} has no text")
        parts.append((text, weight))
    rest.append(prompt[pos:])
    outside = "".join(rest).replace(",", " ").strip()
    if outside:
        raise ValueError(f"text outside the (prompt:weight) groups: {outside!r}. Write a plain prompt, or only "
                         "weighted groups, e.g. (a watercolor painting:1.2) (a pencil sketch:0.8)")
    if sum(w for _, w in parts) <= 0:
        raise ValueError(f"all prompt weights are 0 in {prompt!r}")
    return parts
