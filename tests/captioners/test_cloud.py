"""CloudCaptioner as a base class: a new cloud captioner is only what differs (its request and
how to read the answer); the base owns the image format, JPEG quality, encoding, caption
cache and HTTP client, and declares the concurrency the runners read. No network: the
client's transport is an httpx.MockTransport."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from capshap.captioners.cache import CaptionCache, with_cache
from capshap.captioners.cloud import IMAGE_ENCODERS, CloudCaptioner
from capshap.captioners.http import Request, Response, Secret
from capshap.interfaces import Captioner, ImageLimits

KEY = "cloud-key-never-shown-4b1d"


class SizeService(CloudCaptioner):
    """A made-up service that answers with the size and format of the uploaded image."""

    image_formats = ("png", "jpeg", "bmp")

    def __init__(self, transport: httpx.BaseTransport, **kw):
        self.limits = ImageLimits(min_side=4)
        super().__init__(client_name="size-service", secret_headers={"X-Key": Secret(KEY, name="key")},
                         headers={"Content-Type": "application/octet-stream"}, transport=transport, max_retries=0,
                         **kw)

    @property
    def namespace(self) -> str:
        return f"size|{self.format_tag}"

    def _request_for(self, image, label, index):
        return Request("POST", "https://size.invalid/caption", self.encode_image(image), label=label)

    def _parse_caption(self, resp: Response, index: int) -> str:
        return json.loads(resp.content)["caption"]


class Recorder:
    """The mock service: decodes each upload with Pillow, records it, answers its size."""

    def __init__(self):
        self.uploads: list[tuple[str, np.ndarray]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Key"] == KEY
        im = Image.open(io.BytesIO(request.content))
        arr = np.asarray(im.convert("RGB"))
        self.uploads.append((im.format, arr))
        return httpx.Response(200, json={"caption": f"a {arr.shape[1]} by {arr.shape[0]} {im.format} image"})


def _image(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_a_subclass_gets_encoding_cache_and_client_from_the_base():
    rec = Recorder()
    cap = SizeService(httpx.MockTransport(rec))
    try:
        a, b = _image(seed=1), _image(8, 6, seed=2)
        assert cap.caption([a, b, a]) == ["a 20 by 12 PNG image", "a 6 by 8 PNG image", "a 20 by 12 PNG image"]
        assert len(rec.uploads) == 2 and cap.requests_sent == 2  # the repeated image is sent once
        sent = {arr.shape: arr for _, arr in rec.uploads}  # sent concurrently, in any order
        assert np.array_equal(sent[a.shape], a) and np.array_equal(sent[b.shape], b)  # PNG: exactly the pixels
        assert cap.caption([b]) == ["a 6 by 8 PNG image"] and cap.requests_sent == 2 and cap.cache_hits == 1
        assert cap.concurrent_calls and cap.limits == ImageLimits(min_side=4)
        assert cap.namespace == "size|png" and cap.mime_type == "image/png"
    finally:
        cap.close()


def test_jpeg_quality_reaches_the_encoder_and_the_cache_namespace():
    rec = Recorder()
    img = _image(32, 32, seed=3)
    sizes = {}
    for q in (20, 95):
        cap = SizeService(httpx.MockTransport(rec), image_format="JPG", jpeg_quality=q)
        assert cap.image_format == "jpeg" and cap.namespace == f"size|jpeg{q}" and cap.mime_type == "image/jpeg"
        sizes[q] = len(cap.encode_image(img))
        cap.caption([img])
        cap.close()
    assert [f for f, _ in rec.uploads] == ["JPEG", "JPEG"]  # one captioner after the other: in order
    assert sizes[20] < sizes[95]
    # the higher quality is the closer one to the pixels
    err = [np.abs(arr.astype(int) - img).mean() for _, arr in rec.uploads]
    assert err[1] < err[0]


@pytest.mark.parametrize("kw, message", [
    ({"image_format": "webp"}, r"unknown image_format 'webp'; use one of \['bmp', 'jpeg', 'png'\]"),
    ({"jpeg_quality": 0}, "jpeg_quality must be in 1..100, got 0"),
    ({"jpeg_quality": 101}, "jpeg_quality must be in 1..100, got 101"),
])
def test_bad_format_options_are_named_before_a_client_is_built(kw, message):
    def refuse(request):  # pragma: no cover - nothing may be sent
        raise AssertionError("sent a request")

    with pytest.raises(ValueError, match=message) as info:
        SizeService(httpx.MockTransport(refuse), **kw)
    assert KEY not in str(info.value)


def test_a_subclass_refuses_a_format_its_service_does_not_take():
    class PngOnly(SizeService):
        def _refuse_format(self, given, image_format):
            return None if image_format == "png" else f"image_format={given!r}: this service takes PNG only"

    with pytest.raises(ValueError, match="image_format='bmp': this service takes PNG only"):
        PngOnly(httpx.MockTransport(Recorder()), image_format="bmp")


def test_every_encoder_round_trips_through_pillow():
    img = _image(9, 11, seed=4)
    for name, (fmt, mime, _) in IMAGE_ENCODERS.items():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        assert mime == f"image/{fmt.lower()}"
    cap = SizeService(httpx.MockTransport(Recorder()), image_format="bmp")
    try:
        back = Image.open(io.BytesIO(cap.encode_image(img)))
        assert back.format == "BMP" and np.array_equal(np.asarray(back), img)
    finally:
        cap.close()


def test_declared_abilities_have_defaults_and_wrappers_forward_them():
    class Plain(Captioner):
        def caption(self, images):
            return ["x"] * len(images)

    p = Plain()
    assert (p.input_size, p.limits, p.concurrent_calls, p.spec) == (None, None, False, None)
    assert p.input_size_for((480, 640)) is None
    p.input_size = (32, 24)
    assert p.input_size_for((480, 640)) == (32, 24)  # default: a plain resize to input_size

    class Cropping(Plain):
        input_size = (16, 16)

        def input_size_for(self, image_shape):
            return (int(image_shape[0]) // 2, int(image_shape[1]) // 2)

    cap = SizeService(httpx.MockTransport(Recorder()))
    try:
        for inner in (cap, Cropping()):
            wrapped = with_cache(inner, CaptionCache(), "ns")
            assert wrapped.concurrent_calls == inner.concurrent_calls
            assert wrapped.limits == inner.limits and wrapped.input_size == inner.input_size
            assert wrapped.input_size_for((40, 60)) == inner.input_size_for((40, 60))
    finally:
        cap.close()
