#!/usr/bin/env bash
# Two gateway binaries side by side on the HLS scenario (and nginx's proxy_cache beside them):
# one `streamgate origin`, ffmpeg looping a 2 Mbit/s source into a live HLS playlist (2 s
# segments), a gateway of each binary with a `cache = "hls"` route, and nginx from
# bench/nginx.conf.in (`proxy_cache` + `proxy_cache_lock`); then ROUNDS rounds of N
# hls.js-like viewers for WINDOW against each in turn (`streamgate-bench hls`: segment first
# byte p99, CPU per viewer-second of the process under test, node requests per segment).
#
#   bash bench/hls-ab.sh OLD_BIN NEW_BIN
# Environment: N=500, WINDOW=15s, ROUNDS=3. Needs ffmpeg and nginx; build streamgate-bench first
# (cargo build --release --bin streamgate-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2
N=${N:-500} WINDOW=${WINDOW:-15s} ROUNDS=${ROUNDS:-3}
BENCH=target/release/streamgate-bench
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# shellcheck source=bench/pair-setup.sh
. bench/pair-setup.sh "$NEW"
chmod 711 "$D"
flv_source "$D/media/src.flv" 1280x720 24 2000
hls_start "$D/media/src.flv" "$D/media/hls" "$D/ffmpeg.log"
pids+=($!)
HLS_PID=$!
RUST_LOG=warn "$OLD" serve --config "$D/gw.toml" > "$D/old.out" 2>/dev/null & pids+=($!)
OLD_PID=$!
RUST_LOG=warn "$NEW" serve --config "$D/gw.toml" > "$D/new.out" 2>/dev/null & pids+=($!)
NEW_PID=$!
OLD_URL=$(wait_url "$D/old.out") NEW_URL=$(wait_url "$D/new.out")
# nginx as in bench/run.sh (its /hls/ locations: proxy_cache + proxy_cache_lock).
NP=$("$BENCH" free-port) NLP=$("$BENCH" free-port)
mkdir -p "$D/nginx"
nginx_conf "$D/nginx/nginx.conf" "$D/nginx" "$NP" "$NLP" "${ORIGIN#http://}"
"$NGINX" -c "$D/nginx/nginx.conf" -p "$D/nginx" 2> "$D/nginx.err" & pids+=($!)
NGINX_PID=$!
hls_wait "$D/media/hls" "$HLS_PID" "$D/ffmpeg.log"
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NP/hls/index.m3u8" 2>/dev/null && break; sleep 0.1; done
for r in $(seq "$ROUNDS"); do
    for side in old new nginx; do
        case $side in
            old) url=$OLD_URL pid=$OLD_PID ;;
            new) url=$NEW_URL pid=$NEW_PID ;;
            nginx) url=http://127.0.0.1:$NP pid=$NGINX_PID ;;
        esac
        line=$("$BENCH" hls --url "$url/hls/index.m3u8" -n "$N" --window "$WINDOW" --pid "$pid" \
            --origin-stats "$ORIGIN/stats" 2>&1 >/dev/null | grep 'hls ' || true)
        echo "round $r $side: ${line#*: }"
    done
done
