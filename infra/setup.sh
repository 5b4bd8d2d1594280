#!/usr/bin/env bash
# One-time (idempotent) set-up of a machine for Lode: Debian packages, the virtual environment
# and the Python dependencies. Re-runs are cheap: pip only runs when pyproject.toml changed.
# Usage: infra/setup.sh [--browser]
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash "$LODE_ROOT/infra/system-packages.sh" "$@"

# Node tools of the local stack (the S3 endpoint), pinned by package-lock.json.
node_stamp="$LODE_ROOT/node_modules/.lode-installed"
node_want="$(cat "$LODE_ROOT/package.json" "$LODE_ROOT/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "$node_want" ]; then
  (cd "$LODE_ROOT" && npm ci --silent --no-audit --no-fund >/dev/null)
  echo "$node_want" > "$node_stamp"
fi

stamp="$LODE_VENV/.lode-installed"
want="$(sha256sum "$LODE_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$PY" ] || python3.11 -m venv "$LODE_VENV" 2>/dev/null || python3 -m venv "$LODE_VENV"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned: on these machines torch==2.13.0 is a CPU wheel on local disk; an unpinned
# torch would pull a multi-GB CUDA build. GPU hosts: see README, "GPU hosts".
echo "Installing Python dependencies into $LODE_VENV (about two minutes the first time)"
"$PY" -m pip install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
"$PY" -m pip install -q -e "$LODE_ROOT[test]" 2>&1 | grep -v '^WARNING: Location' || true
"$PY" -c "import django, celery, torch, transformers, diffusers, peft, boto3, psycopg2, playwright" \
  || { echo "Python dependencies failed to install" >&2; exit 1; }
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n%s\n' "$LODE_ROOT" "$LODE_ROOT/platform" > "$site/lode_source_roots.pth"
echo "$want" > "$stamp"
