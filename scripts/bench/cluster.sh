#!/usr/bin/env bash
# Cluster benchmark on loopback: three `imageflow serve` nodes joined by
# routes (replicas 3). (1) RTSP relay CPU of every node for 5 cameras
# 1080p30 4 Mbit/s pushed by ffmpeg into node 1 (pinned there), with no
# reader, with one ffmpeg reader per camera on node 1, then on node 2 (each
# stream crosses one route): the cost of a route hop per stream. (2) Batch
# throughput of 200 copies of messi5.jpg through resize+blur with 3 nodes
# (replicas 3, then replicas 1), 2 nodes (replicas 1) and 1 node (a plain
# server) taking items from the JOBS work queue: items/s, items done per
# node, CPU per item and the cluster's overhead per item. Figures only:
# nothing fails on them. About 2-4 minutes.
#
# Usage: scripts/bench/cluster.sh [-cameras 5] [-readers 1] [-duration 15s]
#        [-items 200] [-nodes 3:3,3:1,2:1,1:1] [-skip-relay] [-skip-batch]
#        [-clip f.mp4]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o bin/imageflow ./cmd/imageflow
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/clusterbench" ./scripts/bench/clusterbench
"$tmp/clusterbench" -bin bin/imageflow "$@"
