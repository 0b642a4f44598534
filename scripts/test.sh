#!/usr/bin/env bash
# Runs every test. Installs what the tests need first (Debian 12: ffmpeg for media and ffprobe
# checks, nginx + libnginx-mod-rtmp, redis-server and redis-sentinel for the registry tests, chromium + Node/npm
# for the browser tests, prometheus for the metrics checks), then runs the whole
# suite: unit tests, integration tests against real processes, doc tests. Nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# TLS tests: curl with HTTP/2 (Debian's is built with nghttp2).
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Registry failover test: a Sentinel watching a master and its replica.
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
# Browser tests: Debian's Chromium, driven by playwright-core from npm (web/package-lock.json).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# Metrics checks: promtool, and a real Prometheus server that scrapes the gateway.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The player libraries and the browser driver, exactly as web/package-lock.json pins them.
npm ci --prefix web --no-audit --no-fund

cargo test --locked --workspace --doc
cargo test --locked --workspace --all-targets
