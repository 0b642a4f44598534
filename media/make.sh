#!/usr/bin/env bash
# Regenerates the sample media served by `streamgate origin` in demos, tests and benchmarks.
#
# Everything comes from ffmpeg's built-in test sources (lavfi), so no third-party footage is
# committed. Outputs are small (320x180, low bitrate; about 1.5 MB in all) and as reproducible
# as ffmpeg allows: bitexact flags, no metadata, single-threaded x264.
#
# Why these settings:
# - keyframe every 25 frames at 25 fps (1 s GOP, no scene-cut keyframes) so a live viewer
#   starts within a second and HLS segments cut cleanly at 2 s;
# - no B-frames (-tune zerolatency) so FLV timestamps (DTS) equal presentation times, as most
#   live encoders send them;
# - AAC mono 44.1 kHz, different tones per camera so two streams are audibly different.
#
# Usage: media/make.sh            (from anywhere; writes next to this script)
set -euo pipefail

cd "$(dirname "$0")"
FF=(ffmpeg -hide_banner -loglevel error -y)
BITEXACT=(-fflags +bitexact -flags:v +bitexact -flags:a +bitexact -map_metadata -1)
X264=(-c:v libx264 -preset veryfast -tune zerolatency -profile:v main -pix_fmt yuv420p
      -threads 1 -b:v 150k -maxrate 200k -bufsize 200k
      -g 25 -keyint_min 25 -sc_threshold 0)
AAC=(-c:a aac -ar 44100 -ac 1 -b:a 48k)

# cam1: the classic testsrc pattern (with its frame counter) and a 440 Hz tone.
"${FF[@]}" -f lavfi -i "testsrc=size=320x180:rate=25:duration=10" \
  -f lavfi -i "sine=frequency=440:sample_rate=44100:duration=10" \
  "${X264[@]}" "${AAC[@]}" "${BITEXACT[@]}" -shortest -f flv cam1.flv

# cam2: testsrc2 (moving colour pattern) and an 880 Hz tone.
"${FF[@]}" -f lavfi -i "testsrc2=size=320x180:rate=25:duration=10" \
  -f lavfi -i "sine=frequency=880:sample_rate=44100:duration=10" \
  "${X264[@]}" "${AAC[@]}" "${BITEXACT[@]}" -shortest -f flv cam2.flv

# movie.mp4: 4 s of SMPTE bars, moov atom first so players can start before the end arrives.
"${FF[@]}" -f lavfi -i "smptebars=size=320x180:rate=25:duration=4" \
  -f lavfi -i "sine=frequency=660:sample_rate=44100:duration=4" \
  "${X264[@]}" "${AAC[@]}" "${BITEXACT[@]}" -shortest -movflags +faststart movie.mp4

# snapshot.jpg: one frame of testsrc.
"${FF[@]}" -f lavfi -i "testsrc=size=320x180:rate=1:duration=1" \
  -frames:v 1 -q:v 5 "${BITEXACT[@]}" snapshot.jpg

# hls/cam1: a VOD rendition of cam1 (stream copy, 2 s segments at the 1 s keyframes).
rm -rf hls/cam1
mkdir -p hls/cam1
"${FF[@]}" -i cam1.flv -c copy "${BITEXACT[@]}" \
  -f hls -hls_time 2 -hls_playlist_type vod \
  -hls_segment_filename hls/cam1/seg%03d.ts hls/cam1/index.m3u8

du -ch cam1.flv cam2.flv movie.mp4 snapshot.jpg hls | tail -n 1
