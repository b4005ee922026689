"""Ray: the image list sharded over actors on a Ray cluster (``--ray [ADDRESS]``).

Each actor builds the run's parts once from the run's :class:`~capshap.settings.Settings`
(the captioner and scorer from their registry specs, on a GPU where ``gpus_per_worker``
asks for one) and explains the images it is given with the in-flight runner's machinery:
it is a threaded actor whose concurrent calls (one per image, up to ``in_flight``) share one
:class:`~capshap.flight.Batcher`, so their batches are stacked into one model call.

The driver hands images out as actors free up (so a slow image does not hold a shard
back), yields each :class:`~capshap.run.Outcome` as it comes back (the CLI writes it to the
run folder then), and counts progress. An image whose worker died (the process exited or
was killed) is given to a fresh actor once more; a second death fails only that image.

Secrets: keys are never pickled (capshap's ``Secret`` refuses to be) and never pass
through Ray's ``runtime_env`` (Ray writes that into its logs). Each worker reads them from
its own environment: a local Ray started here inherits this process's environment; on a
cluster, set them where its workers start (``OPENAI_API_KEY=... ray start ...``). Only the
non-secret variables of :data:`ENV_PASSED` travel in ``runtime_env``.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run_ray", "RayUnavailable", "ENV_PASSED", "ENV_SECRET", "check_address", "check_gpus", "recipe_of"]

#: Environment variables passed to workers in ``runtime_env``: endpoints and caches, no key.
ENV_PASSED = (
    "AZURE_VISION_ENDPOINT", "OPENAI_BASE_URL",
    "HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE",
)
#: Keys a worker reads from its own environment; never put in ``runtime_env`` (Ray logs it).
ENV_SECRET = ("AZURE_VISION_KEY", "OPENAI_API_KEY")

_CONNECT_TIMEOUT_S = 5.0
_RETRIES = 1


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster at the given address cannot be reached."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the Ray runner needs Ray: pip install 'capshap[ray]'") from None
    return ray


def check_address(address: str | None, timeout: float = _CONNECT_TIMEOUT_S) -> None:
    """Fail fast, in one line, when ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``)
    does not answer a TCP connection within ``timeout`` seconds. None / ``"auto"`` /
    ``"local"`` are not checked (Ray finds or starts a local cluster)."""
    if address is None or address in ("auto", "local"):
        return
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayUnavailable(f"--ray {address}: expected HOST:PORT or ray://HOST:PORT (or no address for a local Ray)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise RayUnavailable(f"--ray {address}: no Ray cluster answers there ({reason}); start one with "
                             "'ray start --head' or check the address") from None


def recipe_of(parts: Any) -> dict[str, Any]:
    """What a worker needs to rebuild ``parts``: the settings, plus any object passed by
    hand (which must then pickle). Raises ValueError saying what cannot travel."""
    recipe: dict[str, Any] = {"settings": parts.settings}
    s = parts.settings
    if parts.masker is not None:
        raise ValueError("the Ray runner cannot ship a masker object to its workers; use tree= and mask= specs")
    objects = {}
    if s.captioner is None and parts.captioner is not None:
        objects["captioner"] = parts.captioner
    if s.scorer is None:
        objects["scorer"] = parts.scorer
    if parts.tree is not None:
        objects["tree"] = parts.tree
    if s.mask == "image":
        objects["mask"] = parts.fill
    try:  # what Ray itself uses: sends functions and local classes by value
        from ray import cloudpickle as dumper
    except ImportError:  # pragma: no cover - ray is needed to run anyway
        dumper = pickle
    for key, obj in objects.items():
        try:
            dumper.dumps(obj)
        except Exception as e:  # noqa: BLE001 - any pickling failure says the same
            raise ValueError(
                f"the Ray runner rebuilds the {key} on each worker, but the {key} object "
                f"{type(obj).__name__} cannot be sent there ({_first_line(e)}); give it as a spec "
                f"(--{key} / settings.{key}) so workers build their own (keys come from their environment)"
            ) from None
    recipe.update(objects)
    return recipe


def _first_line(e: BaseException) -> str:
    text = (str(e).strip() or type(e).__name__).splitlines()[0]
    return text[:300]


def _env_vars() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_PASSED if os.environ.get(k) and k not in ENV_SECRET}


def check_gpus(resources: dict[str, Any], gpus_per_worker: float) -> None:
    """Fail at once, in one line, when the cluster (its ``ray.cluster_resources()``) has
    fewer GPUs than one worker asks for: Ray would wait for them forever."""
    have = float(resources.get("GPU", 0) or 0)
    if gpus_per_worker > 0 and have < gpus_per_worker:
        raise RayUnavailable(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {have:g} GPU(s), so no "
                             "worker could ever start; use --gpus-per-worker 0 (CPU workers) or a cluster with GPUs")


class _Worker:
    """The actor: parts built once, concurrent ``explain`` calls share one batcher."""

    def __init__(self, recipe: dict[str, Any], n_images: int):
        from capshap.flight import Batcher, routed_parts
        from capshap.run import prepare

        s = recipe["settings"]
        parts = prepare(s, captioner=recipe.get("captioner"), scorer=recipe.get("scorer"),
                        tree=recipe.get("tree"), mask=recipe.get("mask"))
        # prepare() records objects as None/"custom"; keep the driver's settings as stored
        parts.settings = s
        self.parts = parts
        self.batcher = Batcher(4096)
        self.routed = routed_parts(parts, self.batcher)
        self.n_images = n_images

    def ping(self) -> int:
        return os.getpid()

    def explain(self, item: Any) -> Any:
        from capshap.run import ImageFailure, Outcome, explain_input

        t0 = time.perf_counter()
        try:
            exp = explain_input(item, self.routed, n_images=self.n_images)
        except ImageFailure as f:
            # the exception object may not pickle; its text travels
            return Outcome(item.name, item.source, error=str(f), stage=f.stage, seconds=time.perf_counter() - t0)
        exp.params["scorer"] = self.routed.scorer.names.get(exp.caption, exp.params["scorer"])
        return Outcome(item.name, item.source, exp, caption=exp.caption, seconds=time.perf_counter() - t0)


def run_ray(
    items: Iterable[Any],
    parts: Any,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0,
    in_flight: int | None = None,
    n_images: int | None = None,
    bars: Any = None,
    cpus_per_worker: float = 1,
) -> Iterator[Any]:
    """Explain ``items`` on Ray actors; yields an :class:`~capshap.run.Outcome` per input
    in completion order.

    Parameters
    ----------
    address : str, optional
        A running cluster (``HOST:PORT`` or ``ray://HOST:PORT``); None uses the Ray this
        process already joined, else starts a local one. Checked first: an address that
        does not answer fails in one line within a few seconds.
    workers : int, optional
        Actors (default: the cluster's CPUs / ``cpus_per_worker``, or its GPUs /
        ``gpus_per_worker``, at most the number of images).
    gpus_per_worker : float
        GPUs each actor asks Ray for (0: CPU actors).
    in_flight : int, optional
        Images explained at once by each actor (default: 8 on a GPU, else 2).
    """
    from capshap.flight import FlightProgress
    from capshap.run import Outcome, _reason

    ray = _import_ray()
    if address in ("", "local"):
        address = None
    recipe = recipe_of(parts)  # before any cluster work: a bad object fails at once
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
    k = int(in_flight) if in_flight is not None else (8 if gpus_per_worker > 0 else 2)
    check_address(address)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": _env_vars()}, "logging_level": logging.WARNING,
                                  "log_to_driver": False}
        if address is None:
            kwargs.update(include_dashboard=False)
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; one line for the user
            raise RayUnavailable(f"--ray {address or '(local)'}: could not join Ray: {_first_line(e)}") from None
    resources = ray.cluster_resources()
    check_gpus(resources, gpus_per_worker)
    if workers is None:
        if gpus_per_worker > 0:
            workers = max(1, int(resources.get("GPU", 0) // gpus_per_worker))
        else:
            workers = max(1, int(resources.get("CPU", 1) // max(cpus_per_worker, 1e-9)))
    if n_images is not None:
        workers = max(1, min(workers, n_images))
    env = {"env_vars": _env_vars()}
    actor_cls = ray.remote(_Worker).options(
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_concurrency=k, runtime_env=env,
    )
    n = n_images if n_images is not None else 2
    recipe_ref = ray.put(recipe)

    def new_actor() -> Any:
        return actor_cls.remote(recipe_ref, n)

    actors = [new_actor() for _ in range(workers)]
    load = {i: 0 for i in range(workers)}
    progress = FlightProgress(bars, n_images, parts.settings.max_evals)
    running: dict[Any, tuple[int, Any, int]] = {}  # ref -> (actor index, item, tries)
    retry: list[tuple[Any, int]] = []
    it = iter(items)
    exhausted = False
    try:
        while True:
            # hand out work: retries first, then new items, at most k per actor
            while True:
                free = [i for i in load if load[i] < k]
                if not free:
                    break
                if retry:
                    item, tries = retry.pop(0)
                elif not exhausted:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        continue
                    tries = 0
                    if item.error is not None or item.array is None:
                        reason = getattr(item.error, "reason", None) or _reason(item.error or ValueError("not loaded"))
                        progress.image_done(item.name)
                        yield Outcome(item.name, item.source, error=reason, stage="loading", exception=item.error)
                        continue
                else:
                    break
                i = min(free, key=lambda j: load[j])
                ref = actors[i].explain.remote(item)
                running[ref] = (i, item, tries)
                load[i] += 1
                progress._set(item.name, "queued" if tries == 0 else "retrying")
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            i, item, tries = running.pop(ref)
            load[i] -= 1
            try:
                res = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                # the actor died: replace it (once per death) and give its image another go
                if _alive(ray, actors[i]) is False:
                    logger.warning("Ray worker %d died (%s); starting a new one", i, _first_line(e))
                    actors[i] = new_actor()
                if tries < _RETRIES:
                    retry.append((item, tries + 1))
                    continue
                res = Outcome(item.name, item.source, error=f"the Ray worker died twice on this image: "
                              f"{_first_line(e)}", stage="worker")
            except ray.exceptions.RayError as e:
                res = Outcome(item.name, item.source, error=f"Ray: {_first_line(e)}", stage="worker")
            if res.explanation is not None:
                progress.advance(res.explanation.n_evals)
            progress.image_done(item.name)
            yield res
    finally:
        for ref in running:
            ray.cancel(ref, force=False)
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        progress.close()


def _alive(ray: Any, actor: Any) -> bool | None:
    """False when the actor no longer answers (died), True when it does."""
    try:
        ray.get(actor.ping.remote(), timeout=30)
        return True
    except Exception:  # noqa: BLE001 - any failure means it is gone
        return False
