#!/usr/bin/env bash
# Run HERE (the dev machine, which reaches PyPI) before bench/gpu_check.sh goes to a GPU machine.
# It fills two git-ignored folders that the device call must carry:
#   .whl/     open_clip_torch, ftfy, wcwidth wheels (pure Python, ~2 MB; torch comes with the GPU image)
#   .golden/  the golden-vector subset the CUDA parity tests read (~50 MB of ../shared/golden)
# Then: device run  command="bash bench/gpu_check.sh"  carry=[".whl", ".golden"]  timeout_s=540
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for d in .whl .golden; do
  grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
mkdir -p .whl .golden
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth
SRC=${ZECON_GOLDEN_SRC:-../shared/golden}
for f in manifest.json unet.safetensors unet_forward.safetensors cond_fn.safetensors clip.safetensors vgg.safetensors; do
  cp "$SRC/$f" .golden/
done
du -sh .whl .golden
