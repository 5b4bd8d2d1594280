#!/usr/bin/env bash
# Runs a Celery worker for one queue, or the beat scheduler.
# Usage: infra/worker.sh cpu|gpu|beat|generation [extra celery args]
# GPU hosts run `infra/worker.sh gpu` once per GPU (CUDA_VISIBLE_DEVICES picks the device).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LODE_ROOT"
role="${1:?usage: worker.sh cpu|gpu|beat|generation}"
shift
case "$role" in
  cpu)
    exec "$LODE_VENV/bin/celery" -A lode worker -Q cpu -n "cpu@%h" \
      --concurrency "${LODE_CPU_CONCURRENCY:-2}" --prefetch-multiplier 1 -O fair --without-gossip --without-mingle "$@" ;;
  gpu)
    # One process per device: a GPU worker keeps models loaded between jobs.
    exec "$LODE_VENV/bin/celery" -A lode worker -Q gpu -n "gpu@%h" \
      --concurrency "${LODE_GPU_CONCURRENCY:-1}" --prefetch-multiplier 1 -O fair --without-gossip --without-mingle "$@" ;;
  generation)
    # The long-lived generation server: models stay loaded, requests are batched on the device.
    exec "$LODE_VENV/bin/python" -m workers.generation.server "$@" ;;
  beat)
    mkdir -p "$LODE_STATE/celery"
    exec "$LODE_VENV/bin/celery" -A lode beat -s "$LODE_STATE/celery/beat-schedule" \
      --pidfile "$LODE_STATE/celery/beat.pid" "$@" ;;
  *) echo "usage: worker.sh cpu|gpu|beat|generation" >&2; exit 2 ;;
esac
