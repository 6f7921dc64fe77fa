"""Python kit for ImageFlowCanvas processors (proto/processor.proto).

Subclass Processor, describe the parameters, implement process(), and call
main(MyProcessor()). The kit does the contract's chores: it decodes JPEG, PNG
and raw BGR24/RGB24/GRAY8 (with any row stride) into a BGR numpy array,
validates parameters against their description (INVALID_ARGUMENT when they
break it), answers INVALID_ARGUMENT for a bad image, drops calls whose
deadline passed while they waited, encodes the returned image, serves the
gRPC health service and ProcessStream.

Needs Debian's python3-grpcio, python3-protobuf, python3-numpy and (for
image decoding) python3-opencv; run with /usr/bin/python3.
"""

import argparse
import logging
import math
import os
import signal
import sys
import threading
from concurrent import futures

import cv2
import grpc
import numpy as np

# The generated stubs import each other as top-level modules (protoc's
# Python output has no package prefix), so their directory goes on the path.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import bus_pb2  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
import processor_pb2  # noqa: E402
import processor_pb2_grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

__all__ = ["Param", "Result", "Detection", "BadInput", "Processor", "serve", "main",
           "bus_pb2", "processor_pb2", "processor_pb2_grpc", "health_pb2", "health_pb2_grpc"]

log = logging.getLogger("imageflow_processor")

# Largest message either way: a raw 4K BGR frame fits (matches the Go side).
MAX_MESSAGE = 64 << 20

_BYTES_PER_PIXEL = {
    bus_pb2.PIXEL_FORMAT_BGR24: 3,
    bus_pb2.PIXEL_FORMAT_RGB24: 3,
    bus_pb2.PIXEL_FORMAT_GRAY8: 1,
}


class BadInput(Exception):
    """Raised for input the processor cannot use; the caller gets INVALID_ARGUMENT."""


class Param:
    """One parameter of a processor, as shown in the server's step form.

    kind is "int", "float", "string", "bool" or "enum"; lo and hi are
    inclusive bounds of numbers; choices are the values of an enum.
    """

    KINDS = ("int", "float", "string", "bool", "enum")

    def __init__(self, name, kind, default=None, description="", required=False,
                 lo=None, hi=None, choices=()):
        if kind not in self.KINDS:
            raise ValueError("param %s: kind %r is not one of %s" % (name, kind, self.KINDS))
        self.name, self.kind, self.default = name, kind, default
        self.description, self.required = description, required
        self.lo, self.hi, self.choices = lo, hi, tuple(choices)

    def to_proto(self):
        p = processor_pb2.ParamSpec(name=self.name, type=self.kind, description=self.description,
                                    required=self.required, choices=self.choices)
        if self.lo is not None:
            p.min = self.lo
        if self.hi is not None:
            p.max = self.hi
        if isinstance(self.default, bool):
            p.default.bool_value = self.default
        elif isinstance(self.default, (int, float)):
            p.default.number_value = self.default
        elif isinstance(self.default, str):
            p.default.string_value = self.default
        return p

    def resolve(self, value):
        """Checks one value against the description; returns it typed."""
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadInput("%s: %r is not a number" % (self.name, value))
            if self.kind == "int":
                if value != int(value):
                    raise BadInput("%s: %r is not a whole number" % (self.name, value))
                value = int(value)
            else:
                value = float(value)
            if self.lo is not None and value < self.lo:
                raise BadInput("%s: %r below the minimum %r" % (self.name, value, self.lo))
            if self.hi is not None and value > self.hi:
                raise BadInput("%s: %r above the maximum %r" % (self.name, value, self.hi))
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise BadInput("%s: %r is not true or false" % (self.name, value))
            return value
        if not isinstance(value, str):
            raise BadInput("%s: %r is not a string" % (self.name, value))
        if self.kind == "enum" and value not in self.choices:
            raise BadInput("%s: %r is not one of %s" % (self.name, value, ", ".join(self.choices)))
        return value


def Detection(x, y, w, h, label="", score=0.0, class_id=0):
    """A detection in pixels of the output image (or the input when unchanged)."""
    return bus_pb2.Detection(x=float(x), y=float(y), w=float(w), h=float(h), label=label,
                             score=float(score), class_id=int(class_id))


class Result:
    """What process() produced: a new image (BGR or grey uint8 array, or None
    to pass the input on), detections, string values, and whether the
    detections replace the upstream ones."""

    def __init__(self, image=None, detections=(), values=None, replace_detections=False):
        self.image = image
        self.detections = list(detections)
        self.values = dict(values or {})
        self.replace_detections = replace_detections


class Call:
    """One request as process() sees it."""

    def __init__(self, request, context):
        self.request = request
        self._context = context
        # Detections and values from upstream steps.
        self.detections = list(request.detections)
        self.values = dict(request.values)

    def cancelled(self):
        """True when the caller gave up (deadline passed or cancelled): a long
        process() should check it between stages and return early."""
        if self._context is None:
            return False
        if not self._context.is_active():
            return True
        left = self._context.time_remaining()
        return left is not None and left <= 0


class Processor:
    """Base class of a processor. Set name, description, outputs and params;
    implement process(image, params, call) returning a Result.

    image is an HxWx3 BGR uint8 array (OpenCV's layout) whatever the wire
    form was; params is a dict with every declared parameter (defaults
    filled in, values checked). Raise BadInput for input that cannot be
    processed. process() may run on several threads at once: keep state
    read-only after __init__ or lock it.
    """

    name = ""
    description = ""
    outputs = ("image",)
    params = ()

    def process(self, image, params, call):
        raise NotImplementedError

    # --- contract plumbing, not meant to be overridden ---

    def info(self):
        return processor_pb2.InfoResponse(name=self.name, description=self.description,
                                          outputs=list(self.outputs),
                                          params=[p.to_proto() for p in self.params])

    def resolve_params(self, struct):
        given = json_format.MessageToDict(struct) if struct is not None else {}
        known = {p.name: p for p in self.params}
        for k in given:
            if k not in known:
                raise BadInput("unknown parameter %r" % k)
        out = {}
        for p in self.params:
            if given.get(p.name) is None:
                if p.required:
                    raise BadInput("%s is required" % p.name)
                out[p.name] = p.default
            else:
                out[p.name] = p.resolve(given[p.name])
        return out

    def handle(self, request, context):
        """Runs one request; raises BadInput for bad input."""
        if not request.HasField("image"):
            raise BadInput("image is required")
        image = decode_image(request.image)
        params = self.resolve_params(request.params if request.HasField("params") else None)
        result = self.process(image, params, Call(request, context))
        if result is None:
            result = Result()
        resp = processor_pb2.ProcessResponse(request_id=request.request_id,
                                             detections=result.detections,
                                             values=result.values,
                                             replace_detections=result.replace_detections)
        if result.image is not None:
            encode_raw(result.image, resp.image.raw)
        return resp


def decode_image(img):
    """Turns a wire Image into a contiguous HxWx3 BGR uint8 array; BadInput
    when it is not a picture."""
    kind = img.WhichOneof("data")
    if kind == "encoded":
        data = img.encoded.data
        if not data:
            raise BadInput("encoded image without data")
        out = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if out is None:
            raise BadInput("cannot decode %d bytes as JPEG or PNG" % len(data))
        return out
    if kind != "raw":
        raise BadInput("image has neither encoded nor raw data")
    raw = img.raw
    bpp = _BYTES_PER_PIXEL.get(raw.format)
    if bpp is None:
        raise BadInput("raw format %d not supported (BGR24, RGB24, GRAY8)" % raw.format)
    w, h = raw.width, raw.height
    if w <= 0 or h <= 0 or w > 1 << 15 or h > 1 << 15:
        raise BadInput("raw size %dx%d" % (w, h))
    row = w * bpp
    stride = raw.stride or row
    if stride < row:
        raise BadInput("stride %d below the row size %d" % (stride, row))
    need = stride * (h - 1) + row  # the last row may omit its padding
    if len(raw.data) < need:
        raise BadInput("%dx%d with stride %d needs %d bytes, got %d" % (w, h, stride, need, len(raw.data)))
    buf = np.frombuffer(raw.data, dtype=np.uint8)
    pixels = np.lib.stride_tricks.as_strided(buf, shape=(h, w, bpp), strides=(stride, bpp, 1), writeable=False)
    if raw.format == bus_pb2.PIXEL_FORMAT_GRAY8:
        return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if raw.format == bus_pb2.PIXEL_FORMAT_RGB24:
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(pixels)


def encode_raw(image, raw):
    """Writes a BGR (HxWx3) or grey (HxW) uint8 array into a RawImage, packed."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        raise ValueError("returned image has dtype %s, want uint8" % image.dtype)
    if image.ndim == 2:
        raw.format = bus_pb2.PIXEL_FORMAT_GRAY8
    elif image.ndim == 3 and image.shape[2] == 3:
        raw.format = bus_pb2.PIXEL_FORMAT_BGR24
    else:
        raise ValueError("returned image has shape %s, want HxWx3 BGR or HxW grey" % (image.shape,))
    raw.height, raw.width = image.shape[0], image.shape[1]
    raw.stride = 0
    raw.data = image.tobytes()


class _ProcessorService(processor_pb2_grpc.ProcessorServicer):
    def __init__(self, processor):
        self.p = processor
        self._info = processor.info()

    def Info(self, request, context):
        return self._info

    def _one(self, request, context):
        try:
            return self.p.handle(request, context)
        except BadInput as e:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception as e:  # a bug or a library failure: tell the caller, keep serving
            log.exception("%s: processing failed", self.p.name)
            return processor_pb2.ProcessResponse(request_id=request.request_id,
                                                 error="%s: %s" % (type(e).__name__, e))

    def Process(self, request, context):
        # A call that waited in the queue past its deadline is not worth
        # running: the caller has already given up on it.
        left = context.time_remaining()
        if left is not None and left <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before processing")
        try:
            return self._one(request, context)
        except _Refused as e:
            context.abort(e.code, e.message)

    def ProcessStream(self, request_iterator, context):
        for request in request_iterator:
            try:
                yield self._one(request, None)
            except _Refused as e:
                yield processor_pb2.ProcessResponse(request_id=request.request_id, error=e.message)


class _Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class _HealthService(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING for "" and the processor's name until stop."""

    def __init__(self, name):
        self.names = {"", name, "ifc.processor.v1.Processor"}
        self.serving = threading.Event()
        self.serving.set()

    def _status(self, service):
        if service not in self.names:
            return None
        S = health_pb2.HealthCheckResponse
        return S.SERVING if self.serving.is_set() else S.NOT_SERVING

    def Check(self, request, context):
        st = self._status(request.service)
        if st is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % request.service)
        return health_pb2.HealthCheckResponse(status=st)

    def Watch(self, request, context):
        st = self._status(request.service)
        if st is None:
            st = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        yield health_pb2.HealthCheckResponse(status=st)
        # Status changes only at shutdown, which ends the stream anyway.
        while context.is_active() and self.serving.wait(1.0):
            pass


def serve(processor, address, workers=4):
    """Starts a gRPC server for processor on address (host:port; port 0 picks
    one). Returns (server, port, health); stop with server.stop(grace)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE),
                                  ("grpc.so_reuseport", 0)])
    processor_pb2_grpc.add_ProcessorServicer_to_server(_ProcessorService(processor), server)
    health = _HealthService(processor.name)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError("cannot listen on %s" % address)
    server.start()
    return server, port, health


def main(processor, argv=None):
    """Command line of a processor: --listen host:port, --workers N. Serves
    until SIGINT or SIGTERM, then lets in-flight calls finish (1 s)."""
    ap = argparse.ArgumentParser(description=processor.description or processor.name)
    ap.add_argument("--listen", default="127.0.0.1:50061", help="gRPC address (host:port)")
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                    help="calls processed at once")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server, port, health = serve(processor, args.listen, args.workers)
    log.info("processor %s listening on %s (port %d)", processor.name, args.listen, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    health.serving.clear()
    server.stop(1.0).wait()
