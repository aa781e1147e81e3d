#!/usr/bin/env bash
# Run HERE (the dev machine, which reaches PyPI) before bench/gpu_check.sh goes to a GPU machine.
# It fills two git-ignored folders that the device call must carry:
#   .whl/     open_clip_torch, ftfy, wcwidth wheels (pure Python, ~2 MB; torch comes with the GPU image)
#   .golden/  only when ZECON_GOLDEN_SRC names another golden set: the subset of it the CUDA parity
#             tests read. By default they read the set in the repository (tests/golden), which
#             travels with the working tree; the full ../shared/golden subset (~50 MB) does not fit
#             beside it in the 64 MiB a device call carries.
# Then: device run  command="bash bench/gpu_check.sh"  carry=[".whl"] (+ ".golden")  timeout_s=540
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EXCLUDE=$(git rev-parse --git-path info/exclude)   # also in a worktree, where .git is a file
mkdir -p "$(dirname "$EXCLUDE")"
for d in .whl .golden; do
  grep -qxF "/$d/" "$EXCLUDE" 2>/dev/null || echo "/$d/" >> "$EXCLUDE"
done
mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth
if [ -n "${ZECON_GOLDEN_SRC:-}" ]; then
  mkdir -p .golden
  for f in manifest.json unet.safetensors unet_forward.safetensors cond_fn.safetensors clip.safetensors vgg.safetensors; do
    cp "$ZECON_GOLDEN_SRC/$f" .golden/
  done
  du -sh .whl .golden
else
  rm -rf .golden   # the CUDA tests read tests/golden
  du -sh .whl tests/golden
fi
