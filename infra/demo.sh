#!/usr/bin/env bash
# Starts the platform (web, a cpu worker, a gpu worker, the generation server, beat), runs the demo scenario through the
# public API, prints the dashboard URL and keeps serving until Ctrl-C.
# LODE_DEMO_EXIT=1 stops everything once the scenario has run (used to check the demo itself).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LODE_ROOT"
logs="$LODE_STATE/logs"
mkdir -p "$logs"
pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "Stopping the platform..."
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

start() {
  local name=$1; shift
  setsid "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}
start web bash infra/web.sh
start worker-cpu bash infra/worker.sh cpu
start worker-gpu bash infra/worker.sh gpu
start generation bash infra/worker.sh generation
start beat bash infra/worker.sh beat
echo "Platform starting (logs in $logs)"

"$PY" infra/demo.py --base-url "http://127.0.0.1:$LODE_WEB_PORT"

if [ "${LODE_DEMO_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo
echo "Serving until Ctrl-C."
wait
