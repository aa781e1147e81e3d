#!/usr/bin/env bash
# Run HERE (the dev machine, which reaches PyPI) before bench/gpu_check_latent.sh goes to a GPU machine.
# Fills two git-ignored folders that the device call must carry (together well under the 64 MiB limit):
#   .comfyui/  ComfyUI 0.3.75's Python sources (comfy/, comfy_api/, comfy_extras/, *.py; ~25 MB, no tests, no models)
#   .whl/      open_clip_torch, ftfy, wcwidth (as bench/prepare_gpu.sh) + what ComfyUI imports that the GPU image
#              lacks: einops, torchsde, trampoline (pure Python) and, for the GPU's Python (GPU_PYTHON, default 3.12),
#              psutil / scipy / pyyaml binary wheels (scipy is ~37 MB; set NO_SCIPY=1 if the image has it).
# Then: device run  command="bash bench/gpu_check_latent.sh"  carry=[".whl", ".comfyui"]  timeout_s=540
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${ZECON_VENV:+$ZECON_VENV/bin/python}}
PY=${PY:-.venv/bin/python}
SRC=${ZECON_COMFYUI_DIR:-$HOME/.cache/zecon/comfyui-0.3.75}
GPU_PYTHON=${GPU_PYTHON:-3.12}
EXCLUDE=$(git rev-parse --git-path info/exclude)   # also in a worktree, where .git is a file
mkdir -p "$(dirname "$EXCLUDE")"
for d in .whl .comfyui; do
  grep -qxF "/$d/" "$EXCLUDE" 2>/dev/null || echo "/$d/" >> "$EXCLUDE"
done
rm -rf .comfyui
mkdir -p .whl .comfyui
tar -C "$SRC" --exclude='./.git' --exclude='./tests' --exclude='./tests-unit' --exclude='./models' \
  --exclude='./output' --exclude='./input' --exclude='__pycache__' --exclude='./custom_nodes' \
  --exclude='./comfy_api_nodes' -cf - . | tar -C .comfyui -xf -
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth \
  einops torchsde trampoline
BIN="psutil pyyaml"
[ -n "${NO_SCIPY:-}" ] || BIN="$BIN scipy"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl $BIN
du -sh .whl .comfyui
