#!/usr/bin/env bash
# Recording benchmark (package record), figures only:
#  1. CPU and write rate of `imageflow serve` relaying 10 cameras 1080p30
#     4 Mbit/s pushed by ffmpeg, without and then with recording
#     (rtsp-relay.sh serve -readers 0 [-record]); the difference divided by 10
#     is what recording costs per camera.
#  2. Export speed: one camera's 5 minutes of 1080p30 4 Mbit/s (pushed at 10x
#     real time with ffmpeg -readrate 10), exported as one MP4 through
#     GET /api/v1/cameras/{id}/recordings/export; prints size, time and the
#     duration ffprobe reads.
#
#   scripts/bench/record.sh [-cameras 10] [-duration 20s]   (flags go to part 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"
pid=""
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
imageflow=bin/imageflow
go build -o "$imageflow" ./cmd/imageflow
go build -o "$tmp/rtsprelay" ./scripts/bench/rtsprelay

echo "== 1. relay without recording"
"$tmp/rtsprelay" -bin bin/imageflow -readers 0 "$@"
echo "== 1. relay with recording"
"$tmp/rtsprelay" -bin bin/imageflow -readers 0 -record "$@"

echo "== 2. export of a 5-minute range"
clip="$tmp/clip.mp4"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 10 \
	-c:v libx264 -preset ultrafast -g 30 -bf 0 -b:v 4M -maxrate 4M -bufsize 4M -pix_fmt yuv420p "$clip"
data="$tmp/data"
mkdir -p "$data"
"$imageflow" serve --data "$data" --http 127.0.0.1:0 --rtsp 127.0.0.1:0 --rtsp-udp "" --grpc "" \
	--webrtc-udp "" --demo=false --log-level warn >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -s "$data/listen.json" ] && break; sleep 0.1; done
read -r http rtsp < <(/usr/bin/python3 -c 'import json,sys; l=json.load(open(sys.argv[1])); print(l["http"], l["rtsp"])' "$data/listen.json")
curl -sf -X POST "http://$http/api/v1/cameras" -d '{"id":"exp","source":"publish","record":true}' >/dev/null
ffmpeg -hide_banner -loglevel error -readrate 10 -stream_loop 30 -i "$clip" -c copy -f rtsp -rtsp_transport tcp "rtsp://$rtsp/exp"
# The recording's clock is the stream's: 5 minutes pushed in about 30 s end
# about 4.5 minutes in the future.
range_json() {
	curl -sf "http://$http/api/v1/cameras/exp/recordings?since=$(date -u -d '-1 hour' +%FT%TZ)&until=$(date -u -d '+1 hour' +%FT%TZ)"
}
for _ in $(seq 100); do
	read -r first last < <(range_json | /usr/bin/python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["segments"] if x["complete"]]; print(s[0]["start"] if s else "-", s[-1]["end"] if s else "-")')
	[ "$first" != - ] && break
	sleep 0.2
done
since="$first"
until="$(/usr/bin/python3 -c 'import sys,datetime as d; t=d.datetime.fromisoformat(sys.argv[1].replace("Z","+00:00")); print((t+d.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))' "$since")"
echo "recorded $since .. $last"
start=$(date +%s.%N)
curl -sf -o "$tmp/export.mp4" "http://$http/api/v1/cameras/exp/recordings/export?since=$since&until=$until"
end=$(date +%s.%N)
size=$(stat -c %s "$tmp/export.mp4")
dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$tmp/export.mp4")
/usr/bin/python3 -c 'import sys; s,e,b,d=map(float,sys.argv[1:]); print(f"export: {b/1e6:.1f} MB, {d:.1f} s of video in {e-s:.2f} s ({b/1e6/(e-s):.0f} MB/s, {d/(e-s):.0f}x real time)")' "$start" "$end" "$size" "$dur"
