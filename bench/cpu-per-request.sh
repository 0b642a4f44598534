#!/usr/bin/env bash
# CPU per request, streamgate beside nginx: both in front of one `streamgate origin`, loaded
# alternately with wrk (a proxied 32 KB object, then a redirect), ROUNDS rounds each. CPU is
# read from /proc (utime + stime of the gateway, of nginx's workers) around each wrk run, so the
# figure is the proxy's own cost per request, whatever the load generator and origin took; it is
# split into user and kernel time (the kernel's share is the same syscalls for both proxies).
#
#   bash bench/cpu-per-request.sh [BIN]       # default: target/release/streamgate
# Environment: AB_DUR=5 (seconds), ROUNDS=3, C=64 (connections), LOGS=1 (access logs on at both
# sides: streamgate's `[log] access` file, nginx's `combined` log), PATHS="/files/small.jpg /r/small.jpg".
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "needs nginx" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
BIN=${1:-target/release/streamgate}
DUR=${AB_DUR:-5} ROUNDS=${ROUNDS:-3} C=${C:-64}
# shellcheck source=bench/pair-setup.sh
. bench/pair-setup.sh "$BIN"
filter=warn
if [ -n "${LOGS:-}" ]; then
  printf '\n[log]\naccess = "%s"\n' "$D/sg-access.log" >> "$D/gw.toml"
  filter=warn,access=info
fi
RUST_LOG=$filter "$BIN" serve --config "$D/gw.toml" > "$D/gw.out" 2>/dev/null & pids+=($!)
SG_PID=$!
SG=$(wait_url "$D/gw.out")
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NP=$(port) NLP=$(port)
mkdir -p "$D/nginx"
nginx_conf "$D/nginx/nginx.conf" "$D/nginx" "$NP" "$NLP" "${ORIGIN#http://}"
"$NGINX" -c "$D/nginx/nginx.conf" -p "$D/nginx" 2> "$D/nginx.log" & pids+=($!)
NGINX_PID=$!
NG=http://127.0.0.1:$([ -n "${LOGS:-}" ] && echo "$NLP" || echo "$NP")
for _ in $(seq 100); do curl -fsS -o /dev/null "$NG/files/small.jpg" 2>/dev/null && break; sleep 0.05; done
curl -fsS -o /dev/null "$SG/files/small.jpg"
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
# ticks PID...: the processes' user and system clock ticks, summed ("USER SYSTEM").
ticks() {
  local u=0 s=0 a b p
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}
HZ=$(getconf CLK_TCK)
for path in ${PATHS:-/files/small.jpg /r/small.jpg}; do
  for round in $(seq "$ROUNDS"); do
    for side in streamgate nginx; do
      if [ $side = streamgate ]; then url=$SG; procs=$SG_PID; else url=$NG; procs=$NGINX_WORKERS; fi
      # shellcheck disable=SC2086
      read -r u0 s0 <<< "$(ticks $procs)"
      out=$(wrk -t2 -c"$C" -d"${DUR}s" --latency "$url$path")
      # shellcheck disable=SC2086
      read -r u1 s1 <<< "$(ticks $procs)"
      echo "$out" | awk -v p="$path" -v r="$round" -v s=$side -v tu=$((u1 - u0)) -v ts=$((s1 - s0)) \
          -v hz="$HZ" -v d="$DUR" '
        /Requests\/sec/ {rps = $2} / 99%/ {p99 = $2}
        END {n = rps * d; t = tu + ts
             printf "%s round %s %-10s %9.0f req/s  p99 %-8s  CPU %5.1f us/request (user %.1f, kernel %.1f; %.0f %% of a core)\n",
             p, r, s, rps, p99, t / hz * 1e6 / n, tu / hz * 1e6 / n, ts / hz * 1e6 / n, t / hz / d * 100}'
    done
  done
done
