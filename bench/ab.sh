#!/usr/bin/env bash
# Two gateway builds side by side: both in front of one `streamgate origin`, loaded alternately
# with wrk (proxied 32 KB object, then a redirect), ROUNDS rounds each. Alternating rounds on one
# machine in one run is what makes a small difference between builds visible; req/s across
# separate runs moves ±15 % here.
#
#   bash bench/ab.sh OLD_BIN NEW_BIN        # e.g. a build of an older commit vs target/release
# Environment: AB_DUR=5s, ROUNDS=3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/ab.sh OLD_BIN NEW_BIN" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
OLD=$1 NEW=$2 DUR=${AB_DUR:-5s} ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/pair-setup.sh
. bench/pair-setup.sh "$NEW"
RUST_LOG=warn "$OLD" serve --config "$D/gw.toml" > "$D/old.out" 2>/dev/null & pids+=($!)
RUST_LOG=warn "$NEW" serve --config "$D/gw.toml" > "$D/new.out" 2>/dev/null & pids+=($!)
OLDURL=$(wait_url "$D/old.out"); NEWURL=$(wait_url "$D/new.out")
curl -fsS -o /dev/null "$OLDURL/files/small.jpg"; curl -fsS -o /dev/null "$NEWURL/files/small.jpg"
for path in /files/small.jpg /r/small.jpg; do
  declare -A sum=([old]=0 [new]=0)
  for round in $(seq "$ROUNDS"); do
    for v in old new; do
      url=$([ $v = old ] && echo "$OLDURL" || echo "$NEWURL")
      r=$(wrk -t2 -c64 -d"$DUR" "$url$path" | awk '/Requests\/sec/ {print $2}')
      echo "$path round $round $v $r req/s"
      sum[$v]=$(awk -v a="${sum[$v]}" -v b="$r" 'BEGIN {print a + b}')
    done
  done
  awk -v o="${sum[old]}" -v n="${sum[new]}" -v p="$path" 'BEGIN {printf "%s: new/old = %.2f\n", p, n / o}'
done
