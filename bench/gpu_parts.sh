# Shared by bench/gpu_check*.sh (sourced): a time budget for the whole script and timed parts.
# Needs LOG (the log file), BUDGET (seconds) and PY (the python) set by the caller.
T0=$(date +%s)
SUMMARY=()

elapsed() { echo $(( $(date +%s) - T0 )); }

part() {  # part NAME LIMIT_S CMD...  (skipped past the budget; the status lands in SUMMARY and the log)
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - $(elapsed) ))
  if (( left < 20 )); then SUMMARY+=("$name: SKIPPED (budget)"); echo "=== $name skipped (budget)" | tee -a "$LOG"; return; fi
  (( limit > left )) && limit=$left
  echo "=== $name (limit ${limit}s, at $(elapsed)s)" | tee -a "$LOG"
  local s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  local status=ok; (( rc == 124 || rc == 137 )) && status=TIMEOUT; (( rc != 0 && rc != 124 && rc != 137 )) && status="FAILED rc=$rc"
  SUMMARY+=("$name: $status in $(( $(date +%s) - s ))s")
  echo "--- $name: $status" | tee -a "$LOG"
}

log_environment() {  # date, GPU, Python and torch into the log
  {
    echo "date: $(date -u)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    $PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  } >> "$LOG" 2>&1
}
