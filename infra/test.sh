#!/usr/bin/env bash
# The whole suite: architecture contracts, then pytest against the running local stack.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LODE_ROOT"
echo "== import contracts"
"$LODE_VENV/bin/lint-imports" --config .importlinter
echo "== pytest"
export DJANGO_SETTINGS_MODULE=lode.settings.test
exec "$PY" -m pytest "$@"
