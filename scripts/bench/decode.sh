#!/usr/bin/env bash
# Compares the media package's single-thread H264 decode rate with ffmpeg's on
# the same 1080p clip (goal: media >= 90% of ffmpeg). Both decode the clip
# three times over; runs alternate and the best of three is kept. Printed per
# CPU second (user+system, robust on a shared machine) and per wall second.
# Usage: scripts/bench/decode.sh [clip.mp4]   (default: a generated 1080p clip)
set -euo pipefail
cd "$(dirname "$0")/../.."

clip="${1:-}"
if [[ -z "$clip" ]]; then
	mkdir -p data/bench
	clip=data/bench/h264-1080p.mp4
	if [[ ! -s "$clip" ]]; then
		ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 \
			-frames:v 300 -c:v libx264 -preset veryfast -bf 2 -g 60 -b:v 6M -pix_fmt yuv420p "$clip"
	fi
fi
clip="$(realpath "$clip")"
frames="$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$clip")"
total=$((frames * 3))

max() { awk -v a="$1" -v b="$2" 'BEGIN{print (b+0>a+0)?b:a}'; }

go test -c -o /tmp/media-bench.test ./media/ >/dev/null
ff_cpu=0 ff_wall=0 go_cpu=0 go_wall=0
for _ in 1 2 3; do
	# ffmpeg: one decoding thread, pictures thrown away.
	line="$(ffmpeg -hide_banner -nostats -benchmark -threads 1 -stream_loop 2 -i "$clip" -f null - 2>&1 | grep 'bench: utime')"
	read -r ut st rt < <(echo "$line" | sed -E 's/.*utime=([0-9.]+)s stime=([0-9.]+)s rtime=([0-9.]+)s.*/\1 \2 \3/')
	ff_cpu="$(max "$ff_cpu" "$(awk -v f="$total" -v u="$ut" -v s="$st" 'BEGIN{printf "%.1f", f/(u+s)}')")"
	ff_wall="$(max "$ff_wall" "$(awk -v f="$total" -v r="$rt" 'BEGIN{printf "%.1f", f/r}')")"

	out="$(IFC_BENCH_CLIP="$clip" /tmp/media-bench.test -test.run '^$' -test.bench '^BenchmarkDecode1080p$' -test.benchtime "${total}x" -test.benchmem)"
	bl="$(echo "$out" | grep '^BenchmarkDecode1080p')"
	metric() { echo "$bl" | awk -v m="$1" '{for(i=1;i<=NF;i++) if($(i+1)==m) print $i}'; }
	go_cpu="$(max "$go_cpu" "$(metric frames/cpu-s)")"
	go_wall="$(max "$go_wall" "$(metric frames/s)")"
	allocs="$(metric allocs/op)"
done
rm -f /tmp/media-bench.test

echo "clip:       $clip ($frames frames, decoded 3 times per run)"
echo "ffmpeg:     $ff_cpu frames/cpu-s, $ff_wall frames/s  (ffmpeg -threads 1 -stream_loop 2 -i clip -f null -)"
echo "media (Go): $go_cpu frames/cpu-s, $go_wall frames/s  (BenchmarkDecode1080p, 1 thread, $allocs allocs/op)"
awk -v g="$go_cpu" -v f="$ff_cpu" -v gw="$go_wall" -v fw="$ff_wall" \
	'BEGIN{printf "ratio:      %.2f per CPU second, %.2f per wall second (goal >= 0.90)\n", g/f, gw/fw}'
