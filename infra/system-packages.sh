#!/usr/bin/env bash
# Installs the Debian packages Lode's local stack and tests need, only those that are missing.
# Usage: infra/system-packages.sh [--browser]   (--browser adds Chromium for the dashboard tests)
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v runuser >/dev/null || need+=(util-linux)
command -v npm >/dev/null || need+=(nodejs npm)
command -v openssl >/dev/null || need+=(openssl)  # the webhook tests make a TLS certificate
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null || need+=(chromium)
  # Fonts so pages render text in headless Chromium.
  [ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Missing Debian packages: ${need[*]} (run this script as root, or install them)" >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
