"""The README's Python API example runs as written, with the tiny models in place of the downloads.

The model lines are swapped for the tiny model files and the settings for tiny ones; every swapped
phrase must still be in the README, so a README edit that breaks the example fails here.
"""

import re
import runpy
from pathlib import Path

from PIL import Image

from zecon_core.apps.tiny import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    paths = write_tiny_models(tmp_path / "tiny")
    out = tmp_path / "out.png"
    swaps = {
        'ensure_known_model("imagenet", folder)': repr(str(paths["unet"])),
        "zc.load_clip()": f"zc.load_clip(path={str(paths['clip'])!r})",
        "ensure_vgg(folder)": f"zc.load_vgg({str(paths['vgg'])!r})",
        '"photo.png"': repr(str(ROOT / "assets" / "sample.png")),
        '"resize", 256)': '"resize", 64)',
        "seed=0,": 'seed=0, respacing="6", skip=3, n_patch=2,',
        '"out.png"': repr(str(out)),
    }
    code = readme_python_example()
    for phrase, replacement in swaps.items():
        assert phrase in code, f"the README example no longer contains {phrase!r}"
        code = code.replace(phrase, replacement)
    monkeypatch.setenv("ZECON_MODELS_DIR", str(tmp_path / "models"))
    script = tmp_path / "example.py"
    script.write_text(code)
    runpy.run_path(str(script), run_name="__main__")
    with Image.open(out) as im:
        assert im.size == (64, 64)
