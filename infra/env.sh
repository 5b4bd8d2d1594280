# Sourced by every infra script and the Makefile's recipes: the local stack's defaults, all
# overridable from the environment. Python reads the same variables in platform/lode/settings/.
LODE_ROOT="${LODE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
LODE_STATE="${LODE_STATE:-$LODE_ROOT/.local}"
LODE_VENV="${LODE_VENV:-$LODE_ROOT/.venv}"
LODE_PG_PORT="${LODE_PG_PORT:-55432}"
LODE_REDIS_PORT="${LODE_REDIS_PORT:-56379}"
LODE_S3_PORT="${LODE_S3_PORT:-59000}"
LODE_WEB_PORT="${LODE_WEB_PORT:-8000}"
export LODE_ROOT LODE_STATE LODE_VENV LODE_PG_PORT LODE_REDIS_PORT LODE_S3_PORT LODE_WEB_PORT
export DATABASE_URL="${DATABASE_URL:-postgres://lode_app:lode_app@127.0.0.1:$LODE_PG_PORT/lode}"
export DATABASE_OWNER_URL="${DATABASE_OWNER_URL:-postgres://lode_owner:lode_owner@127.0.0.1:$LODE_PG_PORT/lode}"
export DATABASE_SYSTEM_URL="${DATABASE_SYSTEM_URL:-postgres://lode_system:lode_system@127.0.0.1:$LODE_PG_PORT/lode}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$LODE_REDIS_PORT/0}"
export S3_ENDPOINT_URL="${S3_ENDPOINT_URL:-http://127.0.0.1:$LODE_S3_PORT}"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-lode.settings.dev}"
export PYTHONPATH="$LODE_ROOT:$LODE_ROOT/platform${PYTHONPATH:+:$PYTHONPATH}"
# Nothing may reach the Hugging Face hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY="$LODE_VENV/bin/python"
