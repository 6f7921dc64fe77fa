#!/usr/bin/env bash
# Times every built-in processor on 640x360 frames of vtest.avi (the size a
# live camera is sampled at for detection) and prints a table of mean, median
# (p50) and 99th-percentile time per frame, frames/s and allocations.
# Usage: scripts/bench/processors.sh [benchtime]   (default 50x; e.g. 3s)
# Detect256 compares BlazeFace, Haar and HOG on one 256x256 picture instead
# (messi5.jpg, BlazeFace's input size).
# Needs opencv-doc (vtest.avi, messi5.jpg), opencv-data (Haar cascades) and
# the BlazeFace model (scripts/setup-product.sh installs all three).
set -euo pipefail
cd "$(dirname "$0")/../.."

benchtime="${1:-50x}"
out="$(go test ./processors/builtin/ -run '^$' -bench . -benchtime "$benchtime" -benchmem)"

echo "$out" | awk -v bt="$benchtime" '
/^cpu:/ { sub(/^cpu: /, ""); cpu = $0 }
/^Benchmark/ {
	name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
	ns = p50 = p99 = allocs = bytes = ""
	for (i = 2; i <= NF; i++) {
		if ($(i+1) == "ns/op") ns = $i
		if ($(i+1) == "p50-µs") p50 = $i
		if ($(i+1) == "p99-µs") p99 = $i
		if ($(i+1) == "allocs/op") allocs = $i
		if ($(i+1) == "B/op") bytes = $i
	}
	rows[++n] = sprintf("%-22s %10.2f %10.2f %10.2f %9.1f %9s %9s", name, ns / 1e6, p50 / 1e3, p99 / 1e3, 1e9 / ns, allocs, bytes)
}
END {
	printf "built-in processors on 640x360 BGR frames (vtest.avi), benchtime %s, cpu %s\n", bt, cpu
	printf "%-22s %10s %10s %10s %9s %9s %9s\n", "processor", "mean ms", "p50 ms", "p99 ms", "frames/s", "allocs", "bytes"
	for (i = 1; i <= n; i++) print rows[i]
}'
