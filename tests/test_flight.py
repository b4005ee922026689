"""The in-flight runner: several images at once, stacked model calls, serial values."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from runs import prepare, run_images

from capshap.interfaces import FunctionCaptioner, Scorer
from capshap.job import ImageInput
from capshap.runners.flight import Batcher, concurrent_calls, run_in_flight
from capshap.settings import Settings


def _images(n: int, seed: int = 0) -> list[ImageInput]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 48 + 8 * i, 64 - 4 * i  # different sizes: stacking must not mix them up
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * (3 + i)) % 256, (yy * (5 + i)) % 256, (xx + yy * i) % 256], -1)
        noise = rng.integers(0, 30, (h, w, 3))
        out.append(ImageInput(f"im{i}", (base + noise).clip(0, 255).astype(np.uint8), None, (h, w)))
    return out


class RowScorer(Scorer):
    """A stackable scorer whose rows do not depend on the batch (numpy, row by row), and
    that records every call: values must then be bit for bit a serial run's."""

    def __init__(self, caption: str, log: list, weights: np.ndarray):
        self.caption, self.tokens, self.log, self.w = caption, caption.split(), log, weights

    @property
    def stack_key(self):
        return ("row", id(self.log))

    def _rows(self, images: np.ndarray) -> np.ndarray:
        m = np.asarray(images, dtype=np.float64).mean(axis=(1, 2))  # (N, 3)
        return np.sin(m @ self.w[:, : len(self.tokens)]) * 3.0

    def score(self, images):
        self.log.append(("single", len(images)))
        return self._rows(images)

    def score_stacked(self, requests):
        self.log.append(("stacked", [len(im) for _, im in requests]))
        return [sc._rows(im) for sc, im in requests]


class RowFactory:
    def __init__(self):
        self.log: list = []
        self.w = np.random.default_rng(3).normal(size=(3, 4)) / 60.0

    def bind(self, caption: str) -> RowScorer:
        return RowScorer(caption, self.log, self.w)


def _captioner(image: np.ndarray) -> str:
    return ["red cat on mat", "a blue dog", "green bird here now"][int(image.shape[0]) % 3]


def _parts(max_evals: int = 40, batch_size: int = 6, **kw):
    return prepare(Settings(max_evals=max_evals, batch_size=batch_size, mask="0", **kw), captioner=_captioner,
                   scorer=RowFactory())


def test_in_flight_values_equal_serial_bit_for_bit_and_calls_are_stacked():
    items = _images(5)
    serial = {o.name: o.explanation for o in run_images(items, _parts())}
    parts = _parts()
    outs = list(run_images(items, parts, runner="in_flight", in_flight=3))
    assert sorted(o.name for o in outs) == sorted(serial)
    for o in outs:
        a, b = serial[o.name], o.explanation
        assert b is not None and a.caption == b.caption
        assert a.coalitions == b.coalitions
        assert np.array_equal(a.node_values, b.node_values)  # bit for bit
        assert np.array_equal(a.values, b.values)
        assert a.params == b.params
    stacked = [e for e in parts.parts.scorer.log if e[0] == "stacked"]
    assert any(len(sizes) > 1 for _, sizes in stacked), "no model call served two images"
    # every masked image scored exactly once, over all calls
    n_scored = sum(sum(s) if isinstance(s, list) else s for _, s in parts.parts.scorer.log)
    assert n_scored == sum(o.explanation.n_evals for o in outs)


def test_builtin_in_flight_matches_serial_within_float_tolerance():
    """The classifier's rows change in the last float32 bits with the batch they are in
    (oneDNN picks kernels by batch size), so stacked values agree to rounding, not bits."""
    pytest.importorskip("efficientnet_lite_pytorch")
    items = _images(4)
    s = Settings(max_evals=24, batch_size=6, mask="0", max_side=64)
    parts = prepare(s)
    serial = {o.name: o.explanation for o in run_images(items, parts)}
    outs = {o.name: o.explanation for o in run_images(items, parts, runner="in_flight", in_flight=4)}
    assert outs.keys() == serial.keys()
    for name, a in serial.items():
        b = outs[name]
        assert a.caption == b.caption and a.tokens == b.tokens and a.coalitions == b.coalitions
        scale = max(1.0, float(np.abs(a.scores).max()))
        np.testing.assert_allclose(b.node_values, a.node_values, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-5 * scale)
        assert b.params["scorer"] == a.params["scorer"] == "BuiltinScorer"


def test_one_failing_image_loses_only_itself():
    items = _images(4)
    items.insert(1, ImageInput("broken", None, None, None, ValueError("cannot decode broken.png")))

    def cap(image):
        if image.shape[0] == 56:
            raise RuntimeError("captioner refused")
        return "a small thing"

    parts = prepare(Settings(max_evals=20, batch_size=4, mask="0"), captioner=cap, scorer=RowFactory())
    outs = {o.name: o for o in run_in_flight(parts, items, in_flight=2)}
    assert set(outs) == {"im0", "im1", "im2", "im3", "broken"}
    assert outs["broken"].stage == "loading" and "cannot decode" in outs["broken"].error
    assert outs["im1"].stage == "captioning" and "captioner refused" in outs["im1"].error
    assert all(outs[n].ok for n in ("im0", "im2", "im3"))


def test_batcher_runs_one_model_call_at_a_time_and_returns_errors_to_the_caller():
    active, most = [0], [0]
    lock = threading.Lock()

    class Slow(Scorer):
        caption, tokens = "x", ["x"]

        def score(self, images):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            threading.Event().wait(0.01)
            with lock:
                active[0] -= 1
            if len(images) == 3:
                raise ValueError("bad batch")
            return np.zeros((len(images), 1))

    b = Batcher(100)
    results: dict[int, object] = {}

    def go(i):
        try:
            results[i] = b.score(Slow(), np.zeros((i + 1, 2, 2, 3), np.uint8))[0].shape
        except ValueError as e:
            results[i] = str(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert most[0] == 1
    assert results[2] == "bad batch"
    assert results[4] == (5, 1)


def test_cloud_clients_are_called_concurrently_not_through_the_model_thread():
    """Concurrency is declared (interfaces.py), not guessed from private attributes: the cloud
    captioners declare it, presence scorers and the caption cache forward it, and an object
    that only has an HTTP client inside does not count."""
    from capshap.captioners.azure import AzureCaptioner
    from capshap.captioners.cache import CaptionCache, with_cache
    from capshap.interfaces import FunctionCaptioner
    from capshap.scoring.presence import PresenceFactory

    cloud = AzureCaptioner(endpoint="http://127.0.0.1:9", key="not-a-key")  # sends nothing
    local = FunctionCaptioner(_captioner)
    try:
        assert concurrent_calls(cloud) and concurrent_calls(PresenceFactory(cloud).bind("a red cat"))
        assert concurrent_calls(with_cache(cloud, CaptionCache(), "ns"))
        assert not concurrent_calls(local) and not concurrent_calls(PresenceFactory(local).bind("a red cat"))

        class Flagged(AzureCaptioner):
            concurrent_calls = False

        assert not concurrent_calls(Flagged(endpoint="http://127.0.0.1:9", key="not-a-key"))
    finally:
        cloud.close()


class _ThreadCaptioner(FunctionCaptioner):
    """Records the thread of every call."""

    def __init__(self, concurrent: bool):
        super().__init__(_captioner)
        self.concurrent_calls = concurrent
        self.threads: list[str] = []

    def caption(self, images):
        self.threads.append(threading.current_thread().name)
        return super().caption(images)


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_declared_concurrent_captioner_is_called_from_the_image_threads(concurrent):
    cap = _ThreadCaptioner(concurrent)
    parts = prepare(Settings(max_evals=20, batch_size=4, mask="0"), captioner=cap, scorer=RowFactory())
    outs = list(run_in_flight(parts, _images(3), in_flight=3))
    assert all(o.ok for o in outs) and len(cap.threads) == 3
    expected = "capshap-image" if concurrent else "capshap-model"
    assert all(t.startswith(expected) for t in cap.threads), cap.threads


def test_bad_runner_and_in_flight_are_refused():
    parts = _parts()
    with pytest.raises(ValueError, match="unknown runner; use auto, in_flight, ray, serial"):
        run_images([], parts, runner="threads")
    with pytest.raises(ValueError, match="in_flight=0: must be an integer >= 1"):
        run_images([], parts, runner="in_flight", in_flight=0)


def test_explain_api_keeps_input_order_with_in_flight():
    import capshap

    arrays = [im.array for im in _images(3)]
    exps = capshap.explain(arrays, captioner=_captioner, scorer=RowFactory(), max_evals=20, mask="0",
                           runner="in_flight", in_flight=3, progress=False)
    assert [e.name for e in exps] == ["image0", "image1", "image2"]
    ref = capshap.explain(arrays, captioner=_captioner, scorer=RowFactory(), max_evals=20, mask="0", progress=False)
    for a, b in zip(ref, exps):
        assert np.array_equal(a.node_values, b.node_values)


def test_progress_counts_images_and_evaluations():
    from capshap.progress import Bars

    items = _images(3)
    bars = Bars(3, enabled=True, notebook=False)
    outs = list(run_in_flight(_parts(max_evals=20), items, in_flight=2, n_images=3, bars=bars))
    assert bars.run is not None and bars.run.n == 3
    bars.close()
    assert all(o.ok for o in outs)


def test_a_bad_batch_stacked_with_others_fails_only_its_image():
    class Picky(RowScorer):
        def score_stacked(self, requests):
            if any(im.shape[2] == 60 for _, im in requests):  # im1's masked images
                raise ValueError("cannot score this size")
            return super().score_stacked(requests)

    class PickyFactory(RowFactory):
        def bind(self, caption):
            return Picky(caption, self.log, self.w)

    items = _images(4)
    parts = prepare(Settings(max_evals=20, batch_size=4, mask="0"), captioner=_captioner, scorer=PickyFactory())
    outs = {o.name: o for o in run_in_flight(parts, items, in_flight=4)}
    assert outs["im1"].stage == "explaining" and "cannot score this size" in outs["im1"].error
    assert all(outs[n].ok for n in ("im0", "im2", "im3"))


def test_closing_the_batcher_fails_queued_calls_instead_of_hanging():
    b = Batcher(10)
    gate = threading.Event()
    first = threading.Thread(target=lambda: b.call(gate.wait))
    first.start()
    while b.requests == 0:  # the model thread has taken the first call
        threading.Event().wait(0.001)
    errors = []

    def queued():
        try:
            b.call(lambda: None)
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=queued)
    t.start()
    while not b._queue:  # the second call is queued behind the first
        threading.Event().wait(0.001)
    closer = threading.Thread(target=b.close)
    closer.start()
    t.join(timeout=10)
    gate.set()
    first.join(timeout=10)
    closer.join(timeout=10)
    assert errors == ["the run was stopped"]


class _HalfSizeCaptioner(FunctionCaptioner):
    """Declares that its model sees every image at half size (render_size="auto" renders there)."""

    def __init__(self):
        super().__init__(_captioner)
        self.asked: list[tuple[int, int]] = []

    def input_size_for(self, image_shape):
        self.asked.append((int(image_shape[0]), int(image_shape[1])))
        return (int(image_shape[0]) // 2, int(image_shape[1]) // 2)


def test_in_flight_renders_at_the_size_the_captioner_declares_as_serial_does():
    items = _images(3)
    runs = {}
    for runner in ("serial", "in_flight"):
        cap = _HalfSizeCaptioner()
        parts = prepare(Settings(max_evals=20, batch_size=4, mask="0", render_size="auto"), captioner=cap,
                        scorer=RowFactory())
        extra = {"in_flight": 3} if runner == "in_flight" else {}
        runs[runner] = {o.name: o.explanation for o in run_images(items, parts, runner=runner, **extra)}
        assert sorted(cap.asked) == sorted(im.array.shape[:2] for im in items)  # asked once per image
    for name, a in runs["serial"].items():
        assert np.array_equal(a.node_values, runs["in_flight"][name].node_values)


def test_abilities_are_read_not_probed():
    """Optional abilities are declared in interfaces.py: no module looks them up with getattr
    or hasattr, and none reads the cloud captioners' private client."""
    import pathlib
    import re

    import capshap

    root = pathlib.Path(capshap.__file__).parent
    names = "stack_key|score_stacked|concurrent_calls|input_size_for|input_size|limits|_client|_tqdm"
    probe = re.compile(rf"""(getattr|hasattr)\([^)]*["']({names})["']""")
    cloud = {"cloud.py", "azure.py", "openai.py"}  # CloudCaptioner owns _client; its subclasses use it
    found = []
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found += [f"{path.name}: {m.group(0)}" for m in probe.finditer(text)]
        if path.name not in cloud:
            found += [f"{path.name}: ._client" for _ in re.finditer(r"\._client\b", text)]
    assert not found, found
