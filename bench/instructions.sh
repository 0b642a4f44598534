#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable whatever else the machine is doing,
# unlike req/s. For each gateway binary given (default: target/release/streamgate), runs it under
# valgrind twice, fronting one `streamgate origin`, with N1 and N2 keep-alive requests on one
# connection, and prints (Ir(N2) - Ir(N1)) / (N2 - N1) for a proxied 32 KB object, a redirect
# and a hit of the HLS cache (a 32 KB segment on a `cache = "hls"` route; the one miss that
# fills it is in both runs, so it cancels out with start-up and shutdown).
#
#   bash bench/instructions.sh                                  # this tree's release build
#   bash bench/instructions.sh OLD_BIN target/release/streamgate # two builds side by side
#   ACCESS_LOG=1 bash bench/instructions.sh ...                 # with the access log on (a file)
#   PATHS=/r/small.jpg bash bench/instructions.sh ...            # only these cases
#   KEEP=/tmp/cg bash bench/instructions.sh ...                 # keep the callgrind files there
#   OWN_HTTP1=0 bash bench/instructions.sh ...                  # hyper serves every request
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ $# -gt 0 ] || { cargo build --release --bin streamgate >&2; set -- target/release/streamgate; }
N1=${N1:-200}; N2=${N2:-1200}
# shellcheck source=bench/pair-setup.sh
. bench/pair-setup.sh "$1"
# A segment for the cached HLS route.
mkdir -p "$D/media/hls"
cp "$D/media/small.jpg" "$D/media/hls/seg1.ts"
if [ "${OWN_HTTP1:-1}" = 0 ]; then
  sed -i 's/^listen = "127.0.0.1:0"$/&\nown_http1 = false/' "$D/gw.toml"
fi
LOG_FILTER=warn
if [ "${ACCESS_LOG:-0}" = 1 ]; then
  printf '[log]\naccess = "%s"\n' "$D/access.log" >> "$D/gw.toml"
  LOG_FILTER=warn,access=info
fi
total() { # BIN N PATH -> instructions of the whole run
  rm -f "$D"/cg.*
  RUST_LOG=$LOG_FILTER valgrind --tool=callgrind --callgrind-out-file="$D/cg.%p" "$1" serve --config "$D/gw.toml" > "$D/gw.out" 2>/dev/null &
  local vp=$!
  local url; url=$(wait_url "$D/gw.out")
  local args=(); for _ in $(seq "$2"); do args+=("$url$3"); done
  curl -fs "${args[@]}" > /dev/null
  kill -INT "$vp"; wait "$vp" 2>/dev/null || true
  callgrind_annotate "$D"/cg.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"; local f; for f in "$D"/cg.*; do cp "$f" "$KEEP/$(basename "$1").${3//\//_}.$2.${f##*.}"; done
  fi
}
for bin in "$@"; do
  for path in ${PATHS:-/files/small.jpg /r/small.jpg /hls/seg1.ts}; do
    a=$(total "$bin" "$N1" "$path"); b=$(total "$bin" "$N2" "$path")
    echo "$bin $path: $(( (b - a) / (N2 - N1) )) instructions per request"
  done
done
