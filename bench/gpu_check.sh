#!/usr/bin/env bash
# GPU check for ZeCon: the CUDA tests and the `full` benchmark in fp32 / bf16 / fp16 at 256 and 512 px.
#
# Run from the repo root on a GPU machine (no internet needed):
#   bash bench/gpu_check.sh
# Needs: python3 with torch (CUDA), torchvision, numpy, safetensors, pytest, regex, tqdm, huggingface_hub
# (the device image has them) plus the wheels in .whl/ (open_clip_torch, ftfy, wcwidth) -- bench/prepare_gpu.sh
# fills it; carry it: carry=[".whl"]. The CUDA parity tests read the golden set in tests/golden (part of
# the working tree), or .golden/ when prepare_gpu.sh copied another set there (ZECON_GOLDEN_SRC; carry it too).
# Every part has its own timeout and the script goes on after a failure. Budget: under 8 minutes.
# Writes into $OUT (default bench/results/gpu): gpu_results.json (every benchmark JSON + test outcome),
# gpu_check.log (everything printed), summary.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
PY=${PY:-python3}
BUDGET=${BUDGET:-450}          # seconds for the whole script; optional parts are skipped past it
mkdir -p "$OUT"
WORK=$(mktemp -d)
LOG="$OUT/gpu_check.log"
: > "$LOG"
source bench/gpu_parts.sh   # (the working directory is the repository root here)

# ---- environment
log_environment
if ! $PY -c "import open_clip, ftfy" >/dev/null 2>&1; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install --quiet --no-index --no-deps --target "$WORK/site" .whl/*.whl >> "$LOG" 2>&1
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "open_clip is missing and .whl/ is empty: run bench/prepare_gpu.sh first" | tee -a "$LOG"
  fi
fi
[ -d .golden ] && export ZECON_GOLDEN_DIR="$PWD/.golden"

# ---- tests
part cuda_tests 170 $PY -m pytest tests/test_cuda.py -q -rs --junitxml="$WORK/cuda_tests.xml"

# ---- benchmarks (ImageNet-256 architecture unless named; README weights, n_patch 32)
bench() {  # bench NAME LIMIT ARGS...  (each result is appended to $OUT/bench.jsonl at once)
  local name=$1 limit=$2; shift 2
  part "$name" "$limit" $PY -m zecon_core.apps.bench --config full --device cuda --steps 3 --json "$WORK/$name.json" "$@"
  [ -f "$WORK/$name.json" ] && $PY -c "import json,sys; print(json.dumps({'name': sys.argv[1], **json.load(open(sys.argv[2]))}))" \
    "$name" "$WORK/$name.json" >> "$OUT/bench.jsonl"
}
bench imagenet256_fp16 50 --dtype fp16
bench imagenet256_fp32 60 --dtype fp32
bench imagenet256_bf16 50 --dtype bf16
bench imagenet256_bf16_fast 50 --dtype bf16 --fast-cuda
bench imagenet512_bf16_ckpt 70 --dtype bf16 --size 512 --checkpointing
bench ffhq256_bf16 40 --dtype bf16 --model ffhq
bench imagenet256_bf16_shared 50 --dtype bf16 --shared-views
bench imagenet512_fp32_ckpt 90 --dtype fp32 --size 512 --checkpointing
bench imagenet256_bf16_compile 120 --dtype bf16 --compile --fast-cuda

# ---- collect
$PY - "$WORK" "$OUT" <<'EOF' >> "$LOG" 2>&1
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
res = {}
for path in sorted(glob.glob(os.path.join(work, "*.json"))):
    with open(path) as f:
        res[os.path.basename(path)[:-5]] = json.load(f)
xml = os.path.join(work, "cuda_tests.xml")
if os.path.exists(xml):
    res["cuda_tests_junit"] = open(xml).read()
with open(os.path.join(out, "gpu_results.json"), "w") as f:
    json.dump(res, f, indent=2)
rows = ["name                          step_s   inv_s   fwd+bwd_s  x_fwdbwd  peak_GB  per_image_s"]
for name, r in res.items():
    if not isinstance(r, dict):
        continue
    f = lambda k, d=3: "-" if r.get(k) is None else f"{r[k]:.{d}f}"
    rows.append(f"{name:28s} {f('guided_step_s'):>7s} {f('inversion_step_s'):>7s} {f('unet_fwd_bwd_s'):>9s} "
                f"{f('guided_step_x_unet_fwd_bwd', 2):>8s} {f('peak_cuda_gb', 2):>8s} {f('per_image_estimate_s', 1):>10s}")
print("\n".join(rows))
with open(os.path.join(out, "summary.txt"), "a") as f:
    f.write("\n".join(rows) + "\n")
EOF

{
  echo "=== summary (total $(elapsed)s)"
  printf '%s\n' "${SUMMARY[@]}"
} | tee -a "$OUT/summary.txt" | tee -a "$LOG"
tail -n 20 "$LOG" | grep -E "^(name|imagenet|ffhq)" || true
rm -rf "$WORK"
