#!/usr/bin/env bash
# Two gateway binaries side by side on the HLS scenario (and nginx's proxy_cache beside them):
# one `streamgate origin`, ffmpeg looping a 2 Mbit/s source into a live HLS playlist (2 s
# segments), a gateway of each binary with a `cache = "hls"` route, and nginx with
# `proxy_cache` + `proxy_cache_lock` as in bench/nginx.conf.in; then ROUNDS rounds of N
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
ffmpeg -nostdin -loglevel error -f lavfi -i "testsrc2=size=1280x720:rate=25" \
    -f lavfi -i "sine=frequency=440:sample_rate=44100" -t 24 -c:v libx264 -preset veryfast \
    -pix_fmt yuv420p -b:v 2M -maxrate 2M -bufsize 1M -g 50 -keyint_min 50 -sc_threshold 0 \
    -c:a aac -b:a 128k -f flv "$D/media/src.flv"
mkdir -p "$D/media/hls"
ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i "$D/media/src.flv" -c copy -f hls \
    -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
    "$D/media/hls/index.m3u8" 2> "$D/ffmpeg.log" &
pids+=($!)
RUST_LOG=warn "$OLD" serve --config "$D/gw.toml" > "$D/old.out" 2>/dev/null & pids+=($!)
OLD_PID=$!
RUST_LOG=warn "$NEW" serve --config "$D/gw.toml" > "$D/new.out" 2>/dev/null & pids+=($!)
NEW_PID=$!
OLD_URL=$(wait_url "$D/old.out") NEW_URL=$(wait_url "$D/new.out")
NP=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$D/nginx"
cat > "$D/nginx/nginx.conf" <<NG
worker_processes 2;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000;
    client_body_temp_path $D/nginx/b; proxy_temp_path $D/nginx/p; fastcgi_temp_path $D/nginx/f;
    uwsgi_temp_path $D/nginx/u; scgi_temp_path $D/nginx/s;
    proxy_cache_path $D/nginx/cache keys_zone=hls:16m max_size=256m inactive=60s;
    upstream origin { server ${ORIGIN#http://}; keepalive 128; }
    server {
        listen 127.0.0.1:$NP;
        location ~ ^/hls/(.*\.m3u8)\$ {
            rewrite ^/hls/(.*)\$ /files/hls/\$1 break;
            proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_cache hls; proxy_cache_lock on; proxy_cache_valid 200 1s;
        }
        location /hls/ {
            rewrite ^/hls/(.*)\$ /files/hls/\$1 break;
            proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_cache hls; proxy_cache_lock on; proxy_cache_valid 200 60s;
        }
    }
}
NG
"$NGINX" -c "$D/nginx/nginx.conf" -p "$D/nginx" -g 'daemon off;' 2> "$D/nginx.err" & pids+=($!)
NGINX_PID=$!
for _ in $(seq 300); do
    n=$(grep -c '\.ts' "$D/media/hls/index.m3u8" 2>/dev/null || true)
    [ "${n:-0}" -ge 3 ] && break
    sleep 0.1
done
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$NP/hls/index.m3u8" && break; sleep 0.1; done
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
