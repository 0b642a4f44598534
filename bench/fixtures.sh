# Sourced by the benchmark scripts (run.sh, and the small tools through pair-setup.sh): the
# media and the nginx config they share, one copy of each. Paths are relative to the repo root.

# flv_source OUT SIZE SECONDS VIDEO_KBPS: a test picture with a tone, H.264 (a keyframe every
# 2 s, constant rate) and 128 kbit/s AAC in FLV: the live and HLS sources.
flv_source() {
    ffmpeg -nostdin -loglevel error \
        -f lavfi -i "testsrc2=size=$2:rate=25" \
        -f lavfi -i "sine=frequency=440:sample_rate=44100" \
        -t "$3" -c:v libx264 -preset veryfast -pix_fmt yuv420p \
        -b:v "${4}k" -maxrate "${4}k" -bufsize "$(($4 / 2))k" -g 50 -keyint_min 50 -sc_threshold 0 \
        -c:a aac -b:a 128k -f flv "$1"
}

# hls_start SRC DIR LOG: ffmpeg loops SRC into a live HLS playlist DIR/index.m3u8 (2 s
# segments, a window of 6), in the background: the caller records `$!` to stop it.
hls_start() {
    mkdir -p "$2"
    ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i "$1" -c copy \
        -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
        "$2/index.m3u8" 2> "$3" &
}

# hls_wait DIR PID LOG: waits (at most 30 s) until the playlist lists 3 segments; fails, with
# ffmpeg's log, if ffmpeg (PID) exits first or time runs out.
hls_wait() {
    local n
    for _ in $(seq 300); do
        n=$(grep -c '\.ts' "$1/index.m3u8" 2>/dev/null || true)
        [ "${n:-0}" -ge 3 ] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "no live HLS playlist in $1; ffmpeg said:" >&2
    cat "$3" >&2
    return 1
}

# nginx_conf OUT DIR PORT LOG_PORT ORIGIN [ORIGIN2 ORIGIN3]: bench/nginx.conf.in filled in, its
# temp and cache paths under DIR (the group's other members default to ORIGIN).
nginx_conf() {
    sed -e "s#@PORT@#$3#g" -e "s#@LOG_PORT@#$4#g" -e "s#@ORIGIN@#$5#g" \
        -e "s#@ORIGIN2@#${6:-$5}#g" -e "s#@ORIGIN3@#${7:-$5}#g" -e "s#@TMP@#$2#g" \
        bench/nginx.conf.in > "$1"
}
