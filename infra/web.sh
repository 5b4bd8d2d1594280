#!/usr/bin/env bash
# Serves the platform with gunicorn on loopback (production runs the same behind a load balancer).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LODE_ROOT"
# One folder per server: gunicorn's processes share it, and it is emptied at start.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$LODE_STATE/prometheus-$LODE_WEB_PORT}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
"$PY" manage.py collectstatic --noinput -v 0
exec "$LODE_VENV/bin/gunicorn" lode.wsgi:application --bind "127.0.0.1:$LODE_WEB_PORT" \
  --workers "${LODE_WEB_WORKERS:-2}" --threads 4 --timeout 120 --access-logfile - "$@"
