"""The Ray runner on a local 2-CPU cluster bound to 127.0.0.1: values, a dying worker,
an unreachable address, objects that cannot travel."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("efficientnet_lite_pytorch")

from runs import prepare, run_images  # noqa: E402

from capshap.job import ImageInput  # noqa: E402
from capshap.runners.ray import RayUnavailable, recipe_of  # noqa: E402
from capshap.settings import Settings  # noqa: E402

SETTINGS = Settings(max_evals=16, batch_size=6, mask="0", max_side=64)


def _images(n: int) -> list[ImageInput]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        h, w = 40 + 6 * i, 56
        out.append(ImageInput(f"im{i}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), None, (h, w)))
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    yield ray
    ray.shutdown()


def _dying_captioner(marker: str, target_rows: int):
    """A picklable captioner (defined in a function, so it travels by value) that wraps the
    built-in one and kills its worker process the first time it sees the target image."""
    from capshap.captioners.builtin import BuiltinCaptioner
    from capshap.interfaces import Captioner

    class Dying(Captioner):
        def __init__(self):
            self.inner = BuiltinCaptioner()

        def caption(self, images):
            if images[0].shape[0] == target_rows and not os.path.exists(marker):
                Path(marker).write_text("died once")
                os._exit(1)
            return self.inner.caption(images)

        def own_scorer(self, caption, score="logodds", merge_words=False):
            return self.inner.own_scorer(caption, score=score)

    return Dying()


def _close(got, serial):
    assert set(got) == set(serial)
    for name, a in serial.items():
        b = got[name].explanation
        assert b is not None, got[name].error
        assert b.caption == a.caption and b.coalitions == a.coalitions
        scale = max(1.0, float(np.abs(a.scores).max()))
        # stacked batches: equal to float rounding (the classifier is not batch-invariant)
        np.testing.assert_allclose(b.node_values, a.node_values, rtol=0, atol=1e-5 * scale)


def test_ray_values_equal_a_local_run_and_failures_come_back_as_outcomes(local_ray):
    items = _images(3)
    serial = {o.name: o.explanation for o in run_images(items, prepare(SETTINGS))}
    broken = ImageInput("broken.png", None, "broken.png", None, ValueError("not an image"))
    outs = {o.name: o for o in run_images(items + [broken], prepare(SETTINGS), runner="ray", workers=1,
                                          in_flight=3)}
    assert outs.pop("broken.png").stage == "loading"
    _close(outs, serial)
    # the record is the run's settings: the same engine settings, and how it was run
    ray_settings = SETTINGS.replace(runner="ray", workers=1, in_flight=3)
    assert all(outs[n].explanation.settings == ray_settings for n in serial)
    assert all(outs[n].explanation.settings.engine_key() == serial[n].settings.engine_key() for n in serial)


def test_a_killed_worker_loses_only_its_image_which_is_retried(local_ray, tmp_path):
    items = _images(3)
    serial = {o.name: o.explanation for o in run_images(items, prepare(SETTINGS))}
    marker = tmp_path / "died"
    cap = _dying_captioner(str(marker), target_rows=items[1].array.shape[0])
    parts = prepare(SETTINGS, captioner=cap, scorer="own")
    got = {o.name: o for o in run_images(items, parts, runner="ray", workers=2, in_flight=1)}
    assert marker.exists(), "the worker never died: the test did not test anything"
    assert all(o.ok for o in got.values()), {n: o.error for n, o in got.items()}
    _close(got, serial)


@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:1", "nonsense"])
def test_unreachable_address_fails_in_one_line_quickly(address, monkeypatch):
    import ray

    def no_init(*a, **k):  # Ray's own connect retries for minutes: it must not be reached
        raise AssertionError("ray.init was called for an unreachable address")

    monkeypatch.setattr(ray, "init", no_init)
    with pytest.raises(RayUnavailable) as e:
        list(run_images(_images(1), prepare(SETTINGS), runner="ray", ray_address=address))
    assert "\n" not in str(e.value) and address in str(e.value)


def test_objects_that_cannot_travel_are_refused_before_any_work():
    import threading

    class Locked:
        def __init__(self):
            self.lock = threading.Lock()  # cannot be pickled

        def __call__(self, image):
            return "a photo of a tabby"

    parts = prepare(SETTINGS, captioner=Locked(), scorer="presence")
    with pytest.raises(ValueError, match="give it as a spec"):
        recipe_of(parts.plan)


def test_keys_travel_by_environment_never_pickled(monkeypatch):
    pytest.importorskip("httpx")
    from capshap.captioners.azure import AzureCaptioner
    from capshap.runners.ray import _env_vars

    key = "k3y-that-must-not-leak-0123456789"
    cap = AzureCaptioner(endpoint="https://example.invalid", key=key)
    parts = prepare(SETTINGS, captioner=cap, scorer="presence")
    with pytest.raises(ValueError, match="give it as a spec") as e:
        recipe_of(parts.plan)
    assert key not in str(e.value)
    monkeypatch.setenv("AZURE_VISION_KEY", key)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # keys never travel in runtime_env (Ray logs it): workers read their own environment
    assert "AZURE_VISION_KEY" not in _env_vars() and "OPENAI_API_KEY" not in _env_vars()
    assert key not in repr(_env_vars())
    # a spec travels as settings only: nothing in the recipe holds the key
    monkeypatch.setenv("AZURE_VISION_ENDPOINT", "https://example.invalid")
    spec_parts = prepare(SETTINGS.replace(captioner="azure", scorer="presence"))
    assert key.encode() not in ray.cloudpickle.dumps(recipe_of(spec_parts.plan))


def test_the_driver_builds_no_model_and_a_bad_caption_fails_before_any_image(local_ray, monkeypatch):
    import capshap.captioners as captioners
    from capshap.job import Plan, Prepared
    from capshap.runners import runner_for
    from capshap.settings import SettingError

    def no_model_here(*a, **k):  # the driver process: any captioner built here fails the run
        raise AssertionError("the Ray driver built a captioner")

    monkeypatch.setattr(captioners, "build_captioner", no_model_here)
    s = SETTINGS.replace(runner="ray", workers=1, in_flight=2)
    outs = list(runner_for("ray")(Prepared(Plan.of(s)), _images(2), n_images=2))
    assert len(outs) == 2 and all(o.ok for o in outs), [o.error for o in outs]  # built on the workers
    # the caption check runs where the scorer is built (a worker), before any image goes out
    bad = s.replace(caption="a bird on a wire")
    with pytest.raises(SettingError, match="caption") as e:
        list(runner_for("ray")(Prepared(Plan.of(bad)), _images(2), n_images=2))
    assert "\n" not in str(e.value)
