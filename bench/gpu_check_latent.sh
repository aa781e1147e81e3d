#!/usr/bin/env bash
# GPU check of the latent backbone (ZeCon Guider on SD1.5 / SDXL): bench/latent_bench.py at the REAL sizes,
# random weights, README loss weights (n_patch 32), fp16 UNet weights, CFG 5 (batch 2), TAESD decoder.
#
# Prepare HERE first: bash bench/prepare_gpu_latent.sh   (fills .whl/ and .comfyui/)
# Then on the GPU:    device run command="bash bench/gpu_check_latent.sh" carry=[".whl", ".comfyui"] timeout_s=540
# Needs on the GPU: python3 with torch (CUDA), torchvision, numpy, safetensors, regex, tqdm (the device image) plus
# the wheels in .whl/ (installed into a temp dir with --no-index, as bench/gpu_check.sh does). Installs nothing else.
# Every result is appended to $OUT/latent_gpu.jsonl as soon as it lands; each part has its own timeout and the
# script goes on after a failure; $OUT/latent_gpu.log has everything printed. Budget: under 8 minutes.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/latent_gpu}
PY=${PY:-python3}
BUDGET=${BUDGET:-460}
STEPS=${STEPS:-3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
LOG="$OUT/latent_gpu.log"
J="$OUT/latent_gpu.jsonl"
: > "$LOG"
source bench/gpu_parts.sh   # (the working directory is the repository root here)
log_environment
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install --quiet --no-index --no-deps --target "$WORK/site" .whl/*.whl >> "$LOG" 2>&1
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .comfyui/comfy ]; then export ZECON_COMFYUI_DIR="$PWD/.comfyui"; fi
export PYTHONUNBUFFERED=1
# pre-flight: what the in-process ComfyUI + pack import needs (a missing module shows here, not 8 times below)
part import 60 $PY bench/latent_bench.py --tiny --size 128 --n-patch 2 --zecon-patches 16 --steps 1 --device cuda \
  --no-flops --json "$WORK/tiny.jsonl"

lb() {  # lb NAME LIMIT ARGS...
  local name=$1 limit=$2; shift 2
  part "$name" "$limit" $PY bench/latent_bench.py --device cuda --no-flops --steps "$STEPS" --json "$WORK/$name.jsonl" "$@"
  [ -f "$WORK/$name.jsonl" ] && $PY -c "import json,sys; [print(json.dumps({'name': sys.argv[1], **json.loads(l)})) for l in open(sys.argv[2])]" \
    "$name" "$WORK/$name.jsonl" >> "$J"
}
lb sd15_512_shortcut 60 --arch sd15 --size 512 --mode shortcut
lb sdxl_1024_shortcut 90 --arch sdxl --size 1024 --mode shortcut
lb sdxl_1024_full_ckpt 100 --arch sdxl --size 1024 --mode full --checkpointing
lb sd15_512_full 60 --arch sd15 --size 512 --mode full
lb sdxl_1024_full 90 --arch sdxl --size 1024 --mode full
lb sdxl_1024_shortcut_bf16 60 --arch sdxl --size 1024 --mode shortcut --dtype bf16

$PY - "$J" <<'PYEOF' | tee -a "$OUT/summary.txt" >> "$LOG"
import json, sys
rows = ["name                       step_s  x25_s   first_s  peak_cuda_GB  error"]
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda k, d=3: "-" if r.get(k) is None else f"{r[k]:.{d}f}"
    x25 = "-" if r.get("step_s") is None else f"{25 * r['step_s']:.1f}"
    rows.append(f"{r['name'] + ':' + r['mode']:26s} {f('step_s'):>7s} {x25:>6s} {f('first_step_s'):>8s} "
                f"{f('peak_cuda_gb', 2):>12s}  {r.get('time_error', '')}")
print("\n".join(rows))
PYEOF
{ echo "=== summary (total $(elapsed)s)"; printf '%s\n' "${SUMMARY[@]}"; } | tee -a "$OUT/summary.txt" | tee -a "$LOG"
rm -rf "$WORK"
