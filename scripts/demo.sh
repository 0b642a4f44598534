#!/usr/bin/env bash
# The README's run command: `streamgate demo` with everything the dashboard's player needs.
# On a fresh Debian machine it installs Node/npm from Debian when they are missing, then the
# player libraries exactly as web/package-lock.json pins them (`npm ci`), then builds and runs
# the demo. If they cannot be installed the demo still runs; the dashboard's player then says
# how to install them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f web/node_modules/hls.js/dist/hls.min.js ] || [ ! -f web/node_modules/mpegts.js/dist/mpegts.js ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing: nodejs npm (for the dashboard's player libraries)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm; } ||
      echo "warning: could not install Node/npm; the dashboard will play nothing until \`npm ci --prefix web\` runs" >&2
  fi
  if command -v npm >/dev/null 2>&1; then
    # Only the player libraries: the browser-test driver (a dev dependency) is the test command's.
    npm ci --prefix web --omit=dev --no-audit --no-fund ||
      echo "warning: \`npm ci --prefix web\` failed; the dashboard will play nothing until it succeeds" >&2
  fi
fi

exec cargo run --release -- demo "$@"
