"""Unit tests of the Python kit: a real gRPC server on a loopback port per
test class, called through the generated stubs.

    /usr/bin/python3 -m unittest discover -s processors/python/tests -v
"""

import os
import sys
import threading
import time
import unittest

import cv2
import grpc
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import imageflow_processor as kit  # noqa: E402
from imageflow_processor import bus_pb2, health_pb2, health_pb2_grpc, processor_pb2, processor_pb2_grpc  # noqa: E402
from clahe import Clahe  # noqa: E402
from aruco import Aruco  # noqa: E402

MESSI = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"


def test_picture():
    img = cv2.imread(MESSI)
    if img is None:  # no opencv-doc: a picture with structure anyway
        img = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(img, (40, 30), (200, 180), (30, 160, 240), -1)
        cv2.circle(img, (250, 120), 50, (200, 40, 90), -1)
    return img


class Echo(kit.Processor):
    """Returns what it saw: the picture, and its parameters as values."""
    name = "echo"
    outputs = ("image", "values")
    params = (
        kit.Param("n", "int", 3, lo=0, hi=10),
        kit.Param("gain", "float", 1.5, lo=0, hi=4),
        kit.Param("mode", "enum", "a", choices=("a", "b")),
        kit.Param("flag", "bool", False),
        kit.Param("text", "string", ""),
    )

    def __init__(self):
        self.ran = 0
        self.lock = threading.Lock()

    def process(self, image, params, call):
        with self.lock:
            self.ran += 1
        if params["text"] == "sleep":
            time.sleep(0.3)
        if params["text"] == "boom":
            raise RuntimeError("boom")
        return kit.Result(image=image, values={k: repr(v) for k, v in params.items()})


def raw_image(img, fmt=bus_pb2.PIXEL_FORMAT_BGR24, pad=0):
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else 3
    rows = np.zeros((h, w * ch + pad), np.uint8)
    rows[:, :w * ch] = img.reshape(h, w * ch)
    rows[:, w * ch:] = 0xA5
    return processor_pb2.Image(raw=processor_pb2.RawImage(format=fmt, width=w, height=h,
                                                          stride=w * ch + pad if pad else 0,
                                                          data=rows.tobytes()))


def to_array(raw):
    ch = 1 if raw.format == bus_pb2.PIXEL_FORMAT_GRAY8 else 3
    stride = raw.stride or raw.width * ch
    a = np.frombuffer(raw.data, np.uint8).reshape(raw.height, stride)[:, :raw.width * ch]
    return a.reshape(raw.height, raw.width, ch) if ch == 3 else a


class ServerCase(unittest.TestCase):
    processor = None

    @classmethod
    def setUpClass(cls):
        cls.server, port, cls.health = kit.serve(cls.processor, "127.0.0.1:0", workers=2)
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % port, options=[
            ("grpc.max_receive_message_length", kit.MAX_MESSAGE),
            ("grpc.max_send_message_length", kit.MAX_MESSAGE)])
        cls.stub = processor_pb2_grpc.ProcessorStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop(0).wait()

    def process(self, image, params=None, timeout=10):
        req = processor_pb2.ProcessRequest(request_id="r1", image=image)
        if params is not None:
            req.params.update(params)
        return self.stub.Process(req, timeout=timeout)

    def assertCode(self, code, fn):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()


class KitTest(ServerCase):
    processor = Echo()

    def test_info_describes_params(self):
        info = self.stub.Info(processor_pb2.InfoRequest())
        self.assertEqual(info.name, "echo")
        byname = {p.name: p for p in info.params}
        self.assertEqual(byname["n"].type, "int")
        self.assertEqual(byname["n"].default.number_value, 3)
        self.assertEqual((byname["n"].min, byname["n"].max), (0, 10))
        self.assertFalse(byname["text"].HasField("min"))
        self.assertEqual(list(byname["mode"].choices), ["a", "b"])
        self.assertTrue(byname["flag"].default.HasField("bool_value"))

    def test_every_wire_form_gives_the_same_pixels(self):
        img = test_picture()
        ok, png = cv2.imencode(".png", img)
        forms = {
            "bgr": raw_image(img),
            "bgr stride": raw_image(img, pad=7),
            "rgb": raw_image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), bus_pb2.PIXEL_FORMAT_RGB24),
            "png": processor_pb2.Image(encoded=processor_pb2.EncodedImage(format=bus_pb2.PIXEL_FORMAT_PNG, data=png.tobytes())),
        }
        for name, form in forms.items():
            resp = self.process(form)
            self.assertEqual(resp.error, "", name)
            self.assertEqual(resp.request_id, "r1")
            self.assertTrue(np.array_equal(to_array(resp.image.raw), img), name)
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        out = to_array(self.process(raw_image(gray, bus_pb2.PIXEL_FORMAT_GRAY8, pad=3)).image.raw)
        self.assertTrue(np.array_equal(out[:, :, 1], gray))

    def test_last_row_may_omit_padding(self):
        img = test_picture()[:20, :30]
        form = raw_image(img, pad=5)
        form.raw.data = form.raw.data[:-5]
        self.assertTrue(np.array_equal(to_array(self.process(form).image.raw)[:, :30], img))

    def test_defaults_and_given_params(self):
        v = self.process(raw_image(test_picture()), {"n": 7, "mode": "b"}).values
        self.assertEqual((v["n"], v["mode"], v["gain"], v["flag"]), ("7", "'b'", "1.5", "False"))

    def test_bad_images_are_invalid_argument(self):
        img = test_picture()
        bad = [
            processor_pb2.Image(encoded=processor_pb2.EncodedImage(format=bus_pb2.PIXEL_FORMAT_JPEG, data=b"\xff\xd8\xff\xe0junk")),
            processor_pb2.Image(raw=processor_pb2.RawImage(format=bus_pb2.PIXEL_FORMAT_BGR24, width=100, height=100, data=b"\0" * 100)),
            processor_pb2.Image(raw=processor_pb2.RawImage(format=bus_pb2.PIXEL_FORMAT_BGR24, width=4, height=4, stride=5, data=b"\0" * 64)),
            processor_pb2.Image(raw=processor_pb2.RawImage(format=bus_pb2.PIXEL_FORMAT_I420, width=4, height=4, data=b"\0" * 64)),
            processor_pb2.Image(),
        ]
        for b in bad:
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, lambda: self.process(b))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, lambda: self.stub.Process(processor_pb2.ProcessRequest()))
        self.assertEqual(self.process(raw_image(img)).error, "")  # still serving

    def test_bad_params_are_invalid_argument(self):
        img = raw_image(test_picture())
        for params in ({"n": "x"}, {"n": 11}, {"n": 1.5}, {"gain": -1}, {"mode": "c"},
                       {"flag": "yes"}, {"text": 3}, {"nope": 1}):
            msg = self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, lambda: self.process(img, params))
            self.assertTrue(msg, params)

    def test_processing_failure_is_a_response_error(self):
        resp = self.process(raw_image(test_picture()), {"text": "boom"})
        self.assertIn("boom", resp.error)

    def test_expired_calls_are_dropped(self):
        img = raw_image(test_picture())
        before = self.processor.ran
        # Two workers busy for 0.3 s each; the short calls queue behind them
        # and expire there.
        slow = [self.stub.Process.future(processor_pb2.ProcessRequest(image=img, params=_struct({"text": "sleep"})), timeout=5)
                for _ in range(2)]
        time.sleep(0.05)
        short = [self.stub.Process.future(processor_pb2.ProcessRequest(image=img), timeout=0.1) for _ in range(6)]
        for f in short:
            with self.assertRaises(grpc.RpcError) as cm:
                f.result()
            self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        for f in slow:
            f.result()
        time.sleep(0.1)
        self.assertEqual(self.processor.ran - before, 2, "expired calls ran")

    def test_health(self):
        h = health_pb2_grpc.HealthStub(self.channel)
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest()).status, health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(service="echo")).status, health_pb2.HealthCheckResponse.SERVING)
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: h.Check(health_pb2.HealthCheckRequest(service="other")))

    def test_stream_answers_in_order(self):
        img = raw_image(test_picture())
        reqs = [processor_pb2.ProcessRequest(request_id="s%d" % i, image=img) for i in range(3)]
        reqs.insert(1, processor_pb2.ProcessRequest(request_id="bad"))
        ids = [(r.request_id, bool(r.error)) for r in self.stub.ProcessStream(iter(reqs), timeout=10)]
        self.assertEqual(ids, [("s0", False), ("bad", True), ("s1", False), ("s2", False)])


def _struct(d):
    from google.protobuf import struct_pb2
    s = struct_pb2.Struct()
    s.update(d)
    return s


class ClaheTest(ServerCase):
    processor = Clahe()

    def test_equals_opencv_clahe_on_lightness(self):
        img = test_picture()
        out = to_array(self.process(raw_image(img), {"clip_limit": 3.0, "tile_grid": 4}).image.raw)
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab)
        lab[:, :, 0] = cv2.createCLAHE(3.0, (4, 4)).apply(np.ascontiguousarray(lab[:, :, 0]))
        want = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)
        self.assertTrue(np.array_equal(out, want))
        # It does something: contrast of the lightness goes up on a flat picture.
        flat = (img // 4 + 90).astype(np.uint8)
        got = to_array(self.process(raw_image(flat)).image.raw)
        self.assertGreater(cv2.cvtColor(got, cv2.COLOR_BGR2GRAY).std(), cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY).std() * 1.3)


class ArucoTest(ServerCase):
    processor = Aruco()

    def test_finds_markers_with_their_numbers(self):
        d = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
        img = test_picture().copy()
        places = {7: (40, 30), 23: (300, 150)}
        for marker, (x, y) in places.items():
            m = cv2.aruco.drawMarker(d, marker, 100)
            img[y - 20:y + 120, x - 20:x + 120] = 255  # white border around the marker
            img[y:y + 100, x:x + 100] = m[:, :, None]
        resp = self.process(raw_image(img))
        self.assertEqual(resp.error, "")
        self.assertEqual(resp.values["aruco.ids"], "7,23")
        for det, (marker, (x, y)) in zip(resp.detections, sorted(places.items())):
            self.assertEqual((det.label, det.class_id), ("marker", marker))
            self.assertLess(abs(det.x - x), 3)
            self.assertLess(abs(det.y - y), 3)
            self.assertLess(abs(det.w - 100), 4)
        # Another family finds nothing, and neither does a picture without markers.
        self.assertEqual(len(self.process(raw_image(img), {"dictionary": "6x6_250"}).detections), 0)
        self.assertEqual(self.process(raw_image(test_picture())).values["aruco.ids"], "")


if __name__ == "__main__":
    unittest.main()
