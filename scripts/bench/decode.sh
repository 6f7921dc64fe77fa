#!/usr/bin/env bash
# Compares the media package's single-thread H264 decode rate with ffmpeg's on
# the same 1080p clip: prints both frames/s and the ratio (goal >= 0.90).
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

# ffmpeg: one decoding thread, frames thrown away. rtime is wall time of the
# whole run (open, decode, null output), the same work the Go loop does.
best_ff=0
for _ in 1 2 3; do
	rt="$(ffmpeg -hide_banner -nostats -benchmark -threads 1 -i "$clip" -f null - 2>&1 | sed -n 's/.*rtime=\([0-9.]*\)s.*/\1/p')"
	fps="$(awk -v f="$frames" -v t="$rt" 'BEGIN{printf "%.1f", f/t}')"
	best_ff="$(awk -v a="$best_ff" -v b="$fps" 'BEGIN{print (b>a)?b:a}')"
done

# Go: BenchmarkDecode1080p reports frames/s; best of three runs, each three
# passes over the clip.
best_go=0
for _ in 1 2 3; do
	fps="$(IFC_BENCH_CLIP="$clip" go test ./media/ -run '^$' -bench '^BenchmarkDecode1080p$' -benchtime "$((frames * 3))x" -benchmem \
		| awk '/BenchmarkDecode1080p/{for(i=1;i<=NF;i++) if($(i+1)=="frames/s") print $i}')"
	best_go="$(awk -v a="$best_go" -v b="$fps" 'BEGIN{print (b>a)?b:a}')"
done

echo "clip:        $clip ($frames frames)"
echo "ffmpeg:      $best_ff frames/s  (ffmpeg -threads 1 -i clip -f null -)"
echo "media (Go):  $best_go frames/s  (go test ./media -bench BenchmarkDecode1080p, 1 thread)"
awk -v g="$best_go" -v f="$best_ff" 'BEGIN{printf "ratio:       %.2f (goal >= 0.90)\n", g/f}'
