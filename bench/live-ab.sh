#!/usr/bin/env bash
# Two gateway builds side by side on live HTTP-FLV: both in front of one `streamgate origin`
# playing bench/run.sh's 1 Mbit/s source, N viewers through each in turn, ROUNDS rounds. Prints
# each window's joiners' first-keyframe p99, first-byte p99, stalls and the gateway's CPU per
# viewer-second. Alternating windows in one run is what separates two builds on a noisy machine.
#
#   bash bench/live-ab.sh OLD_BIN NEW_BIN     # e.g. a build of an older commit vs target/release
# Environment: N=5000, WINDOW=15s, ROUNDS=3, BENCH=target/release/streamgate-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/live-ab.sh OLD_BIN NEW_BIN" >&2; exit 2; }
OLD=$1 NEW=$2 N=${N:-5000} WINDOW=${WINDOW:-15s} ROUNDS=${ROUNDS:-3}
BENCH=${BENCH:-target/release/streamgate-bench}
# N viewers hold N descriptors here (each gateway raises its own limit at start).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=bench/pair-setup.sh
. bench/pair-setup.sh "$NEW"
flv_source "$D/media/src1m.flv" 1280x720 24 870
cat > "$D/live.toml" <<T
[server]
listen = "127.0.0.1:0"
[live]
linger = "1s"
[[nodes]]
id = "origin"
url = "$ORIGIN"
streams = ["src1m"]
[[routes]]
path = "/live/{stream}.flv"
action = "live"
upstream = "/live/{stream}.flv"
T
RUST_LOG=warn "$OLD" serve --config "$D/live.toml" > "$D/old.out" 2>/dev/null & OLD_PID=$!; pids+=($!)
RUST_LOG=warn "$NEW" serve --config "$D/live.toml" > "$D/new.out" 2>/dev/null & NEW_PID=$!; pids+=($!)
OLDURL=$(wait_url "$D/old.out"); NEWURL=$(wait_url "$D/new.out")
echo "N=$N WINDOW=$WINDOW: round build ttfk_p99_ms ttfb_p99_ms stalls connected cpu_ms_per_viewer_s"
for round in $(seq "$ROUNDS"); do
  for v in old new; do
    url=$([ $v = old ] && echo "$OLDURL" || echo "$NEWURL")
    pid=$([ $v = old ] && echo "$OLD_PID" || echo "$NEW_PID")
    "$BENCH" live --url "$url/live/src1m.flv" -n "$N" --window "$WINDOW" --pid "$pid" \
      > "$D/$v-$round.json" 2>/dev/null
    python3 - "$D/$v-$round.json" "$round" "$v" <<'P'
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], r["ttfk_p99_ms"], r["ttfb_p99_ms"], r["stalls"], r["connected"],
      round(r["proc_cpu_ms_per_viewer_s"], 4))
P
    # The hub lingers 1 s, and the origin's stream stops, before the next window.
    sleep 2
  done
done
