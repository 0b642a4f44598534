#!/usr/bin/env bash
# Side-by-side benchmark: the origin served directly, through streamgate and through nginx,
# on loopback, in one run. Prints one table (absolute figures and ratios) and writes JSON under
# bench/results/<timestamp>/ (git-ignored).
#
#   bash bench/run.sh            # full run (~16 minutes on 2 cores)
#   bash bench/run.sh --smoke    # seconds: every scenario, tiny sizes; checks it ran and parsed
#
# Environment: BENCH_LIVE_COUNTS="50 200 1000" (2.1 Mbit/s source), BENCH_LIVE1M_COUNTS="50 200
# 1000 5000" (1 Mbit/s source: the scaling curve), BENCH_LIVE_WINDOW=15s, BENCH_HTTP_DURATION=10s,
# BENCH_CURVE_CONNS="1 16 64 256", BENCH_CURVE_DURATION=5s, BENCH_DOWNLOAD_MB=1024,
# BENCH_HLS_VIEWERS=500, BENCH_HLS_WINDOW=20s, BENCH_KEEP_TMP=1 (keep the temp dir with logs
# and media). The three lists may be set empty to skip their rows (BENCH_LIVE_COUNTS= ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
for arg in "$@"; do
    case "$arg" in
        --smoke) MODE=smoke ;;
        *) echo "usage: bench/run.sh [--smoke]" >&2; exit 2 ;;
    esac
done

if [ "$MODE" = smoke ]; then
    DOWNLOAD_MB=${BENCH_DOWNLOAD_MB:-16}; DOWNLOAD_RUNS=1
    HTTP_DURATION=${BENCH_HTTP_DURATION:-1s}; HTTP_CONC=8
    LIVE_COUNTS=${BENCH_LIVE_COUNTS-5}; LIVE_WINDOW=${BENCH_LIVE_WINDOW:-2s}; LIVE_SETTLE=5s
    LIVE1M_COUNTS=${BENCH_LIVE1M_COUNTS-5}
    CURVE_CONNS=${BENCH_CURVE_CONNS-1 4}; CURVE_DURATION=${BENCH_CURVE_DURATION:-1s}
    SOURCE_SECONDS=4; SOURCE_SIZE=320x180
    HLS_VIEWERS=${BENCH_HLS_VIEWERS:-5}; HLS_WINDOW=${BENCH_HLS_WINDOW:-4s}
else
    DOWNLOAD_MB=${BENCH_DOWNLOAD_MB:-1024}; DOWNLOAD_RUNS=3
    HTTP_DURATION=${BENCH_HTTP_DURATION:-10s}; HTTP_CONC=64
    LIVE_COUNTS=${BENCH_LIVE_COUNTS-50 200 1000}; LIVE_WINDOW=${BENCH_LIVE_WINDOW:-15s}; LIVE_SETTLE=5s
    LIVE1M_COUNTS=${BENCH_LIVE1M_COUNTS-50 200 1000 5000}
    CURVE_CONNS=${BENCH_CURVE_CONNS-1 16 64 256}; CURVE_DURATION=${BENCH_CURVE_DURATION:-5s}
    SOURCE_SECONDS=24; SOURCE_SIZE=1280x720
    HLS_VIEWERS=${BENCH_HLS_VIEWERS:-500}; HLS_WINDOW=${BENCH_HLS_WINDOW:-20s}
fi

log() { printf '== %s\n' "$*" >&2; }
# shellcheck source=bench/fixtures.sh
. bench/fixtures.sh

# --- tools ------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# N live viewers need N descriptors in the load generator and N (gateway, origin) to 2N (nginx:
# one client and one upstream socket per viewer) in the process under test; every process here
# inherits this limit. Raise the soft limit to the hard one, and past it if we may.
MAX_VIEWERS=$(printf '%s\n' $LIVE_COUNTS $LIVE1M_COUNTS 1 | sort -n | tail -1)
WANT_FDS=$((2 * MAX_VIEWERS + 4096))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$WANT_FDS" ]; then
    ulimit -Hn "$WANT_FDS" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$WANT_FDS" ]; then
    log "warning: ulimit -n is $(ulimit -n); $MAX_VIEWERS viewers need about $WANT_FDS"
fi

# Measurements need the release build. The smoke only checks that every scenario runs and
# parses, so it takes the debug build the test suite builds anyway (one build less in CI).
if [ "$MODE" = smoke ]; then
    log "building (debug: smoke only)"
    cargo build --quiet --bin streamgate --bin streamgate-bench
    SG=$ROOT/target/debug/streamgate
    BENCH=$ROOT/target/debug/streamgate-bench
else
    log "building (release)"
    cargo build --release --quiet --bin streamgate --bin streamgate-bench
    SG=$ROOT/target/release/streamgate
    BENCH=$ROOT/target/release/streamgate-bench
fi

# --- temp dir, processes, cleanup -------------------------------------------------------------
TMP=$(mktemp -d /tmp/streamgate-bench.XXXXXX)
STAMP=$(date +%Y%m%dT%H%M%S)
RESULTS=$ROOT/bench/results/$STAMP$([ "$MODE" = smoke ] && echo -smoke || true)
mkdir -p "$RESULTS" "$TMP/media" "$TMP/nginx"
# nginx's workers may run as another user (nobody, when started as root): they must be able
# to reach their temp and cache directories (proxy_cache writes through them).
chmod 711 "$TMP" "$TMP/nginx"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait: 50 x 0.1 s, then SIGKILL that PID only.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    cp "$TMP"/*.log "$RESULTS"/ 2>/dev/null || true
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# Waits (bounded) for "listening on http://ADDR" in $1 and prints ADDR.
wait_listening() {
    local out=$1 pid=$2 addr=
    for _ in $(seq 200); do
        addr=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$out" | head -1)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "process $pid did not start; see $out" >&2
    return 1
}

# --- media (generated now, never committed) ---------------------------------------------------
log "generating media in $TMP/media"
head -c "$((DOWNLOAD_MB * 1024 * 1024))" /dev/urandom > "$TMP/media/big.bin"
ffmpeg -nostdin -loglevel error -f lavfi -i "testsrc2=size=1280x720:rate=1" -frames:v 1 -q:v 9 \
    "$TMP/media/small.jpg"
flv_source "$TMP/media/src.flv" "$SOURCE_SIZE" "$SOURCE_SECONDS" 2000
# The scaling curve's source: the same picture at 1 Mbit/s (video 870k + AAC 128k).
flv_source "$TMP/media/src1m.flv" "$SOURCE_SIZE" "$SOURCE_SECONDS" 870
# Node group scenario: GROUP_KEYS small objects (copies of small.jpg), spread over 3 origins.
GROUP_KEYS=100
mkdir -p "$TMP/media/g"
for i in $(seq 0 $((GROUP_KEYS - 1))); do cp "$TMP/media/small.jpg" "$TMP/media/g/k$i.jpg"; done
SMALL_BYTES=$(stat -c %s "$TMP/media/small.jpg")
SRC_BYTES=$(stat -c %s "$TMP/media/src.flv")
SRC_DURATION=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$TMP/media/src.flv")
SOURCE_KBPS=$(awk -v b="$SRC_BYTES" -v d="$SRC_DURATION" 'BEGIN { printf "%.1f", b * 8 / d / 1000 }')
SRC1M_BYTES=$(stat -c %s "$TMP/media/src1m.flv")
SRC1M_DURATION=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$TMP/media/src1m.flv")
SOURCE1M_KBPS=$(awk -v b="$SRC1M_BYTES" -v d="$SRC1M_DURATION" 'BEGIN { printf "%.1f", b * 8 / d / 1000 }')
log "small object ${SMALL_BYTES} B; live sources ${SOURCE_KBPS} and ${SOURCE1M_KBPS} kbit/s over ${SRC_DURATION} s"

# --- origin, gateway, nginx -------------------------------------------------------------------
RUST_LOG=warn "$SG" origin --media "$TMP/media" --listen 127.0.0.1:0 --name bench \
    > "$TMP/origin.out" 2> "$TMP/origin.log" &
ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
ORIGIN=$(wait_listening "$TMP/origin.out" "$ORIGIN_PID")
# Two more origins on the same media: the node group's other members.
RUST_LOG=warn "$SG" origin --media "$TMP/media" --listen 127.0.0.1:0 --name bench2 \
    > "$TMP/origin2.out" 2> "$TMP/origin2.log" &
ORIGIN2_PID=$!; PIDS+=("$ORIGIN2_PID")
ORIGIN2=$(wait_listening "$TMP/origin2.out" "$ORIGIN2_PID")
RUST_LOG=warn "$SG" origin --media "$TMP/media" --listen 127.0.0.1:0 --name bench3 \
    > "$TMP/origin3.out" 2> "$TMP/origin3.log" &
ORIGIN3_PID=$!; PIDS+=("$ORIGIN3_PID")
ORIGIN3=$(wait_listening "$TMP/origin3.out" "$ORIGIN3_PID")

ADMIN_TOKEN=bench-admin
cat > "$TMP/gateway.toml" <<TOML
# Generated by bench/run.sh.
[server]
listen = "127.0.0.1:0"

[admin]
token = "$ADMIN_TOKEN"

[live]
linger = "1s"

[[nodes]]
id = "origin"
url = "http://$ORIGIN"
streams = ["src", "src1m"]

[[nodes]]
id = "origin2"
url = "http://$ORIGIN2"

[[nodes]]
id = "origin3"
url = "http://$ORIGIN3"

# Small objects over three origins by consistent hash (nginx: hash \$uri consistent).
[[groups]]
id = "pool"
policy = "hash"
members = ["origin", "origin2", "origin3"]

[[routes]]
path = "/g/{*rest}"
action = "proxy"
to = "pool"
upstream = "/files/g/{*rest}"

[[routes]]
path = "/files/{*rest}"
action = "proxy"
to = "origin"
upstream = "/files/{*rest}"

[[routes]]
path = "/r/{*rest}"
action = "redirect"
to = "origin"
upstream = "/files/{*rest}"
status = 302

[[routes]]
path = "/live/{stream}.flv"
action = "live"
upstream = "/live/{stream}.flv"

[[routes]]
path = "/hls/{*rest}"
action = "proxy"
to = "origin"
upstream = "/files/hls/{*rest}"
cache = "hls"
TOML
cp "$TMP/gateway.toml" "$RESULTS/gateway.toml"
RUST_LOG=warn "$SG" serve --config "$TMP/gateway.toml" > "$TMP/gateway.out" 2> "$TMP/gateway.log" &
GATEWAY_PID=$!; PIDS+=("$GATEWAY_PID")
GATEWAY=$(wait_listening "$TMP/gateway.out" "$GATEWAY_PID")
# The access-log rows: the same gateway writing one access line per request to a file (the
# default key=value format, `[log] access`, with the `access` target on).
{ cat "$TMP/gateway.toml"; printf '\n[log]\naccess = "%s"\n' "$TMP/sg-access.log"; } > "$TMP/gateway-log.toml"
cp "$TMP/gateway-log.toml" "$RESULTS/gateway-log.toml"
RUST_LOG=warn,access=info "$SG" serve --config "$TMP/gateway-log.toml" > "$TMP/gateway-log.out" 2> "$TMP/gateway-log.log" &
GATEWAY_LOG_PID=$!; PIDS+=("$GATEWAY_LOG_PID")
GATEWAY_LOG=$(wait_listening "$TMP/gateway-log.out" "$GATEWAY_LOG_PID")

NGINX_PORT=$("$BENCH" free-port)
NGINX_LOG_PORT=$("$BENCH" free-port)
nginx_conf "$TMP/nginx/nginx.conf" "$TMP/nginx" "$NGINX_PORT" "$NGINX_LOG_PORT" "$ORIGIN" \
    "$ORIGIN2" "$ORIGIN3"
cp "$TMP/nginx/nginx.conf" "$RESULTS/nginx.conf"
"$NGINX" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" 2> "$TMP/nginx.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
NGX=127.0.0.1:$NGINX_PORT
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://$NGX/files/small.jpg" 2>/dev/null && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx.log" >&2; exit 1; }
    sleep 0.05
done
log "origin $ORIGIN (pid $ORIGIN_PID), streamgate $GATEWAY (pid $GATEWAY_PID), nginx $NGX (pid $NGINX_PID)"

declare -A HOST=([direct]=$ORIGIN [streamgate]=$GATEWAY [nginx]=$NGX)
# The access-log rows' hosts (direct: the origin, which writes no access log).
declare -A HOST_LOG=([streamgate]=$GATEWAY_LOG [nginx]=127.0.0.1:$NGINX_LOG_PORT)
declare -A PROC=([direct]=$ORIGIN_PID [streamgate]=$GATEWAY_PID [nginx]=$NGINX_PID)

# Sanity: the same bytes every way.
for t in direct streamgate nginx; do
    curl -fsS -o "$TMP/check.jpg" "http://${HOST[$t]}/files/small.jpg"
    cmp -s "$TMP/check.jpg" "$TMP/media/small.jpg" || { echo "$t: small.jpg differs" >&2; exit 1; }
done
for t in streamgate nginx; do
    curl -fsS -o "$TMP/check.jpg" "http://${HOST[$t]}/g/k7.jpg"
    cmp -s "$TMP/check.jpg" "$TMP/media/small.jpg" || { echo "$t: g/k7.jpg differs" >&2; exit 1; }
    curl -fsS -o "$TMP/check.jpg" "http://${HOST_LOG[$t]}/files/small.jpg"
    cmp -s "$TMP/check.jpg" "$TMP/media/small.jpg" || { echo "$t (logging): small.jpg differs" >&2; exit 1; }
done
# Both logging sides write a line per request to a file.
for f in "$TMP/sg-access.log" "$TMP/nginx/access.log"; do
    for _ in $(seq 50); do [ -s "$f" ] && break; sleep 0.05; done
    [ -s "$f" ] || { echo "no access line in $f" >&2; exit 1; }
done

cat > "$RESULTS/meta.json" <<JSON
{"mode": "$MODE", "date": "$(date -Is)", "git": "$(git rev-parse --short HEAD 2>/dev/null || echo none)",
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')", "cores": $(nproc),
 "mem_mib": $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo), "kernel": "$(uname -r)",
 "nginx": "$("$NGINX" -v 2>&1 | cut -d/ -f2)", "download_bytes": $((DOWNLOAD_MB * 1024 * 1024)),
 "small_bytes": $SMALL_BYTES, "source_kbps": $SOURCE_KBPS, "source1m_kbps": $SOURCE1M_KBPS,
 "http_concurrency": $HTTP_CONC, "curve_conns": "$CURVE_CONNS", "curve_duration": "$CURVE_DURATION",
 "http_duration": "$HTTP_DURATION", "live_window": "$LIVE_WINDOW"}
JSON

# http_bench OUT URL [SCRIPT [CONNS [DURATION]]]: wrk (2 threads, 1 for one connection) when
# present, else the built-in loop (URL only); JSON into OUT. SCRIPT (default
# bench/wrk-json.lua) may vary the requests; CONNS and DURATION default to HTTP_CONC and
# HTTP_DURATION.
http_bench() {
    local out=$1 url=$2 script=${3:-bench/wrk-json.lua} conns=${4:-$HTTP_CONC} dur=${5:-$HTTP_DURATION}
    local threads=2
    [ "$conns" -lt 2 ] && threads=1
    if command -v wrk >/dev/null 2>&1; then
        GROUP_KEYS=$GROUP_KEYS wrk -t"$threads" -c"$conns" -d"$dur" --timeout 5s -s "$script" "$url" \
            > "$TMP/wrk.out" 2>&1 || true
        grep '^{' "$TMP/wrk.out" | tail -1 > "$out"
        [ -s "$out" ] || { cat "$TMP/wrk.out" >&2; return 1; }
        sed -n 's/.*"rps":\([0-9.]*\).*"p99_ms":\([0-9.]*\).*/  \1 req\/s, p99 \2 ms/p' "$out" >&2
    else
        "$BENCH" http --url "$url" -c "$conns" -d "$dur" > "$out"
    fi
}

# --- 1. large download ------------------------------------------------------------------------
for t in direct streamgate nginx; do
    log "download ${DOWNLOAD_MB} MiB: $t"
    "$BENCH" download --url "http://${HOST[$t]}/files/big.bin" --runs "$DOWNLOAD_RUNS" \
        > "$RESULTS/download_$t.json"
done

# --- 2. small objects -------------------------------------------------------------------------
for t in direct streamgate nginx; do
    log "small object (${SMALL_BYTES} B), ${HTTP_CONC} connections: $t"
    http_bench "$RESULTS/small_$t.json" "http://${HOST[$t]}/files/small.jpg"
done

# --- 3. redirects -----------------------------------------------------------------------------
for t in streamgate nginx; do
    log "redirect 302, ${HTTP_CONC} connections: $t"
    http_bench "$RESULTS/redirect_$t.json" "http://${HOST[$t]}/r/small.jpg"
done

# --- 3b. small objects through a 3-member node group ---------------------------------------
# GROUP_KEYS paths (/g/k0.jpg …) hashed over three origins: streamgate's `hash` group (bounded
# loads) against nginx's `hash $uri consistent` upstream over the same origins.
for t in streamgate nginx; do
    log "node group of 3 (hash, ${GROUP_KEYS} keys), ${HTTP_CONC} connections: $t"
    http_bench "$RESULTS/group_$t.json" "http://${HOST[$t]}/g/k0.jpg" bench/wrk-keys.lua
done

# --- 3c. access logs on at both sides --------------------------------------------------------
# The small-object and redirect loads again, against the second gateway and nginx server, which
# write one access line per request to a file.
for t in streamgate nginx; do
    log "small object, access log on, ${HTTP_CONC} connections: $t"
    http_bench "$RESULTS/small-log_$t.json" "http://${HOST_LOG[$t]}/files/small.jpg"
    log "redirect 302, access log on, ${HTTP_CONC} connections: $t"
    http_bench "$RESULTS/redirect-log_$t.json" "http://${HOST_LOG[$t]}/r/small.jpg"
done
for f in "$TMP/sg-access.log" "$TMP/nginx/access.log"; do
    log "access log $(basename "$f"): $(wc -l < "$f") lines"
done
# The access logs are deleted now (millions of lines in a full run).
: > "$TMP/sg-access.log"; : > "$TMP/nginx/access.log"

# --- 3d. scaling curve: small objects and redirects against connections -----------------------
for c in $CURVE_CONNS; do
    for t in direct streamgate nginx; do
        log "curve: small object, $c connections: $t"
        http_bench "$RESULTS/curve-small-c${c}_$t.json" "http://${HOST[$t]}/files/small.jpg" \
            bench/wrk-json.lua "$c" "$CURVE_DURATION"
    done
    for t in streamgate nginx; do
        log "curve: redirect 302, $c connections: $t"
        http_bench "$RESULTS/curve-redirect-c${c}_$t.json" "http://${HOST[$t]}/r/small.jpg" \
            bench/wrk-json.lua "$c" "$CURVE_DURATION"
    done
done

# --- 4. live fan-out --------------------------------------------------------------------------
# live_run PREFIX STREAM KBPS N: N viewers of /live/STREAM.flv on every target, into
# PREFIX_N_TARGET.json.
live_run() {
    local prefix=$1 stream=$2 kbps=$3 n=$4 t extra
    for t in direct streamgate nginx; do
        log "live ($stream): $n viewers, $t"
        extra=()
        [ "$t" = streamgate ] && extra=(--gateway-api "http://$GATEWAY/api/v1/live" --admin-token "$ADMIN_TOKEN")
        "$BENCH" live --url "http://${HOST[$t]}/live/$stream.flv" -n "$n" --window "$LIVE_WINDOW" \
            --settle "$LIVE_SETTLE" --source-kbps "$kbps" --pid "${PROC[$t]}" \
            --origin-pid "$ORIGIN_PID" --origin-stats "http://$ORIGIN/stats" "${extra[@]}" \
            > "$RESULTS/${prefix}_${n}_$t.json"
        # Let the gateway's hub linger out (1 s) and the origin's stream stop before the next run.
        sleep 2
    done
}
for n in $LIVE_COUNTS; do
    live_run live src "$SOURCE_KBPS" "$n"
done
# The scaling curve (and the 5,000-viewer target): the 1 Mbit/s source.
for n in $LIVE1M_COUNTS; do
    live_run live1m src1m "$SOURCE1M_KBPS" "$n"
done

# --- 5. live HLS: many viewers of one stream -------------------------------------------------
# ffmpeg loops the source into a live HLS playlist under the origin's media (2 s segments, a
# window of 6); the origin's /stats counts what reached it per segment.
log "live HLS source"
hls_start "$TMP/media/src.flv" "$TMP/media/hls" "$TMP/ffmpeg-hls.log"
HLS_PID=$!; PIDS+=("$HLS_PID")
hls_wait "$TMP/media/hls" "$HLS_PID" "$TMP/ffmpeg-hls.log"
declare -A HLS_URL=([direct]=/files/hls/index.m3u8 [streamgate]=/hls/index.m3u8 [nginx]=/hls/index.m3u8)
for t in direct streamgate nginx; do
    log "hls: $HLS_VIEWERS viewers, $t"
    "$BENCH" hls --url "http://${HOST[$t]}${HLS_URL[$t]}" -n "$HLS_VIEWERS" --window "$HLS_WINDOW" \
        --pid "${PROC[$t]}" --origin-stats "http://$ORIGIN/stats" > "$RESULTS/hls_$t.json"
done

# --- table ------------------------------------------------------------------------------------
echo
echo "streamgate benchmark ($MODE), $(nproc) cores, $(date -Is); results in ${RESULTS#"$ROOT"/}"
"$BENCH" report "$RESULTS"
ln -sfn "$(basename "$RESULTS")" "$ROOT/bench/results/latest$([ "$MODE" = smoke ] && echo -smoke || true)"
