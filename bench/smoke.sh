#!/usr/bin/env bash
# CI smoke of the benchmark harness: runs every scenario of bench/run.sh at tiny sizes (seconds)
# and checks that each measurement ran and its JSON parsed. Never asserts on speed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null 2>&1 || {
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq jq >/dev/null
}
BENCH_LIVE_COUNTS=5 BENCH_LIVE1M_COUNTS=5 BENCH_CURVE_CONNS="1 4" bash bench/run.sh --smoke
DIR=bench/results/latest-smoke
fail=0
check() { # FILE JQ-EXPR
    if ! jq -e "$2" "$DIR/$1" >/dev/null 2>&1; then
        echo "bench smoke: $1 fails $2" >&2
        fail=1
    fi
}
for t in direct streamgate nginx; do
    check "download_$t.json" '.bytes > 0 and (.runs_gbps | length) >= 1'
    check "small_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    check "live_5_$t.json" '.connected == 5 and .failed == 0 and .ttfk_viewers >= 1 and .parse_errors == 0'
    check "live1m_5_$t.json" '.connected == 5 and .failed == 0 and .ttfk_viewers >= 1 and .parse_errors == 0'
    for c in 1 4; do
        check "curve-small-c${c}_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    done
done
for t in streamgate nginx; do
    check "redirect_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    check "group_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    check "small-log_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    check "redirect-log_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    for c in 1 4; do
        check "curve-redirect-c${c}_$t.json" '.requests > 0 and .errors == 0 and .status_other == 0'
    done
done
for t in direct streamgate nginx; do
    check "hls_$t.json" '.segments > 0 and .playlists > 0 and .node_requests_per_segment != null'
done
check hls_streamgate.json '.node_requests_per_segment == 1'
check live_5_streamgate.json '.origin_live_clients_max == 1 and .gateway_live.pulls >= 1'
check live1m_5_streamgate.json '.origin_live_clients_max == 1'
check summary.json '(.rows | length) > 10 and (.targets.met + (.targets.missed | length)) > 10'
check summary.json '[.rows[] | select(.metric | test("access log on|curve:|1 Mbit/s"))] | length >= 12'
[ "$fail" = 0 ] && echo "bench smoke: ok ($DIR)"
exit "$fail"
