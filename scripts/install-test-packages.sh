#!/usr/bin/env bash
# Install the Debian packages the test suite runs, when they are missing:
# Chromium for the browser tests, Prometheus (promtool) and the node exporter for the
# monitoring tests, docker-compose to check the compose file. Used by `make test` and CI.
set -euo pipefail

# command the tests run -> the Debian package that provides it
needs=(
  "${CHROMIUM_PATH:-chromium}:chromium"
  promtool:prometheus
  prometheus-node-exporter:prometheus-node-exporter
  docker-compose:docker-compose
)
missing=()
for need in "${needs[@]}"; do
  command -v "${need%:*}" >/dev/null || missing+=("${need##*:}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

# No recommends: docker-compose would pull in a Docker engine.
install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -v; then  # may ask for the password on a terminal
  sudo=(sudo)
else
  cat >&2 <<EOF
The tests need Debian packages that are missing: ${missing[*]}
Installing them needs root or sudo. Run this, then 'make test' again:
  sudo apt-get update && sudo ${install[*]}
EOF
  exit 1
fi

echo "installing Debian packages for the tests: ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${install[@]}" -qq >/dev/null  # dpkg lists every file
