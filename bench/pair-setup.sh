# Sourced by bench/ab.sh, cpu-per-request.sh, instructions.sh and hls-ab.sh: a temp dir, a
# 32 KB object, one `streamgate origin` (binary $1) serving it, and a gateway config with a
# proxy route (/files/…), a redirect route (/r/…) and a cached HLS route (/hls/… from the
# media's hls/) in front of it ("$D/gw.toml"); and bench/fixtures.sh's helpers. Everything
# started is stopped, by PID, on exit.
# shellcheck source=bench/fixtures.sh
. bench/fixtures.sh
D=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
# wait_url FILE: the first http:// address a process printed to FILE once it listens.
wait_url() { for _ in $(seq 300); do grep -q listening "$1" && break; sleep 0.1; done; grep -o 'http://[0-9.:]*' "$1" | head -1; }
mkdir -p "$D/media"; head -c 32229 /dev/urandom > "$D/media/small.jpg"
RUST_LOG=warn "$1" origin --media "$D/media" --listen 127.0.0.1:0 --name pair > "$D/origin.out" 2>/dev/null &
pids+=($!)
ORIGIN=$(wait_url "$D/origin.out")
cat > "$D/gw.toml" <<T
[server]
listen = "127.0.0.1:0"
[[nodes]]
id = "origin"
url = "$ORIGIN"
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
[[routes]]
path = "/hls/{*rest}"
action = "proxy"
to = "origin"
upstream = "/files/hls/{*rest}"
cache = "hls"
T
