"""Ray: the image list sharded over actors on a Ray cluster (``--ray [ADDRESS]``).

Each actor builds the run's parts once from the run's :class:`~capshap.job.Plan` (its
:class:`~capshap.settings.Settings`: the captioner and scorer from their registry specs, on
a GPU where ``gpus_per_worker`` asks for one) and explains the images it is given with the
in-flight runner's machinery: it is a threaded actor whose concurrent calls (one per image,
up to ``in_flight``) share one :class:`~capshap.runners.flight.Batcher`, so their batches
are stacked into one model call. The driver builds no model: a given caption is checked
by the first actor before any image is handed out.

The driver hands images out as actors free up (so a slow image does not hold a shard
back), yields each :class:`~capshap.job.Outcome` as it comes back (the run owner writes it
to the run folder then), and counts progress. An image whose worker died (the process exited or
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
from collections.abc import Iterable, Iterator
from typing import Any

from capshap.job import ImageInput, Outcome, Plan, Prepared, outcome_of
from capshap.runners.registry import RUNNERS

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


def recipe_of(plan: Plan) -> Plan:
    """``plan``, checked to travel to the workers: any object passed by hand must pickle
    (specs are rebuilt there). Raises ValueError saying what cannot travel."""
    if plan.masker is not None:
        raise ValueError("the Ray runner cannot ship a masker object to its workers; use tree= and mask= specs")
    objects = {"captioner": plan.captioner, "scorer": plan.scorer, "tree": plan.tree}
    if plan.settings.mask == "image":
        objects["mask"] = plan.fill
    try:  # what Ray itself uses: sends functions and local classes by value
        from ray import cloudpickle as dumper
    except ImportError:  # pragma: no cover - ray is needed to run anyway
        dumper = pickle
    for key, obj in objects.items():
        if obj is None:
            continue
        try:
            dumper.dumps(obj)
        except Exception as e:  # noqa: BLE001 - any pickling failure says the same
            raise ValueError(
                f"the Ray runner rebuilds the {key} on each worker, but the {key} object "
                f"{type(obj).__name__} cannot be sent there ({_first_line(e)}); give it as a spec "
                f"(--{key} / settings.{key}) so workers build their own (keys come from their environment)"
            ) from None
    return plan


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

    def __init__(self, plan: Plan, n_images: int):
        from capshap.runners.flight import Batcher, BatcherRoute

        self.setup: tuple[str, ...] | None = None
        try:
            self.parts = Prepared(plan).parts  # binds a given caption: a bad one fails here
        except ValueError as e:  # kept for the driver, which reports it as a usage error
            self.setup = _setup_error(e)
            return
        self.batcher = Batcher(4096)
        self.route = BatcherRoute(self.batcher)
        self.n_images = n_images

    def ping(self) -> int:
        return os.getpid()

    def setup_error(self) -> tuple[str, ...] | None:
        """Why the parts could not be built here (see :func:`_setup_error`), or None."""
        return self.setup

    def explain(self, item: ImageInput) -> Outcome:
        if self.setup is not None:
            return Outcome(item.name, item.source, error=f"the worker could not build the run: {self.setup[-1]}",
                           stage="worker")
        res = outcome_of(item, self.parts, n_images=self.n_images, route=self.route)
        res.exception = None  # the exception object may not pickle; its text travels
        return res


def _setup_error(e: ValueError) -> tuple[str, ...]:
    """A build error as plain strings (exceptions with their own constructors do not
    survive pickling): ("setting", name, value, reason), ("spec", option, value, reason)
    or ("other", message)."""
    from capshap.registry import SpecError
    from capshap.settings import SettingError

    if isinstance(e, SettingError):
        return ("setting", e.setting, str(e.value), e.reason)
    if isinstance(e, SpecError):
        return ("spec", e.option, str(e.value), e.reason)
    return ("other", _first_line(e))


def _raise_setup_error(err: tuple[str, ...]) -> None:
    from capshap.registry import SpecError
    from capshap.settings import SettingError

    if err[0] == "setting":
        raise SettingError(err[1], err[2], err[3])
    if err[0] == "spec":
        raise SpecError(err[1], err[2], err[3])
    raise RayUnavailable(f"the Ray workers could not build the run: {err[-1]}")


@RUNNERS.register("ray", help="ray, the images sharded over the actors of a Ray cluster (--ray [ADDRESS])")
def run_ray(
    prepared: Prepared,
    items: Iterable[ImageInput],
    *,
    n_images: int | None = None,
    bars: Any = None,
    cpus_per_worker: float = 1,
) -> Iterator[Outcome]:
    """Explain ``items`` on Ray actors; yields an :class:`Outcome` per input in completion
    order.

    From the settings: ``ray_address`` (a running cluster, ``HOST:PORT`` or
    ``ray://HOST:PORT``; None uses the Ray this process already joined, else starts a
    local one; an address that does not answer fails in one line within a few seconds),
    ``workers`` (actors; default: the cluster's CPUs / ``cpus_per_worker``, or its GPUs /
    ``gpus_per_worker``, at most the number of images), ``gpus_per_worker`` (GPUs each
    actor asks for; 0: CPU actors) and ``in_flight`` (images at once per actor; default 8
    on a GPU, else 2). The driver builds no model.
    """
    from capshap.runners.flight import FlightProgress

    s = prepared.settings
    ray = _import_ray()
    address = s.ray_address
    if address in ("", "local"):
        address = None
    plan = recipe_of(prepared.plan)  # before any cluster work: a bad object fails at once
    workers, gpus_per_worker = s.workers, float(s.gpus_per_worker)
    k = int(s.in_flight) if s.in_flight is not None else (8 if gpus_per_worker > 0 else 2)
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
    plan_ref = ray.put(plan)

    def new_actor() -> Any:
        return actor_cls.remote(plan_ref, n)

    actors = [new_actor() for _ in range(workers)]
    # the first actor's build checks the plan (a given caption included) before any image
    err = ray.get(actors[0].setup_error.remote())
    if err is not None:
        for a in actors:
            ray.kill(a)
        _raise_setup_error(err)
    load = {i: 0 for i in range(workers)}
    progress = FlightProgress(bars, n_images, s.max_evals)
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
                        progress.image_done(item.name)
                        yield outcome_of(item, None)  # type: ignore[arg-type] - a loading failure needs no parts
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
