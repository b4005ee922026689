"""A real vLLM OpenAI-compatible server for the integration tests, on loopback only.

The server runs from a separate venv (``CAPSHAP_VLLM_PYTHON``: its python, made by
``.ci/vllm-stage``; vLLM pins its own torch and transformers, so it never shares capshap's
venv). :func:`vllm_python` says whether one is configured: without one the tests skip with
the reason, and with ``CAPSHAP_REQUIRE_VLLM=1`` (the CI stage) they fail instead.

:class:`VLLMServer` starts ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 at
a free port, under ``timeout`` (so it dies after ``lifetime`` seconds even if the test
process is killed), in its own process group; it sets ``VLLM_HOST_IP`` and
``VLLM_LOOPBACK_IP`` to 127.0.0.1 so that the engine's own processes bind loopback too.
While it starts, and once more before the first request, every socket of the server's
processes is checked: anything bound or connected outside 127.0.0.0/8 (or ::1) stops the
server and fails the test before a request is sent. :meth:`VLLMServer.stop` stops the
process group by the PID it started, then any process of the tree still alive, by PID.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ENV_PYTHON = "CAPSHAP_VLLM_PYTHON"
ENV_REQUIRE = "CAPSHAP_REQUIRE_VLLM"
LIFETIME = 1500.0  # seconds a server may live at most
READY_TIMEOUT = 420.0  # seconds to wait for it to answer (about 75 s on 2 cores)

# what the server needs of the environment; nothing else is passed (no proxies, no keys)
_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")


def unavailable(reason: str) -> None:
    """Skip (or fail, in CI) the vLLM tests for ``reason``."""
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"vLLM integration tests required ({ENV_REQUIRE}=1) but {reason}")
    pytest.skip(f"vLLM integration tests skipped: {reason}")


def vllm_python() -> str:
    """The vLLM venv's python from ``CAPSHAP_VLLM_PYTHON``; skips or fails without one."""
    py = os.environ.get(ENV_PYTHON)
    if not py:
        unavailable(f"no vLLM venv is configured (set {ENV_PYTHON} to its python; .ci/vllm-stage makes one)")
    if not Path(py).is_file():
        unavailable(f"{ENV_PYTHON}={py} is not a file")
    return str(py)


def run_python(py: str, code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``code`` with the vLLM venv's python (bounded in time), offline."""
    return subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=_server_env(), check=False)


def _server_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEEP if k in os.environ}
    env.update(
        VLLM_HOST_IP="127.0.0.1", VLLM_LOOPBACK_IP="127.0.0.1", VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", NO_PROXY="*",
    )
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if isinstance(a, ipaddress.IPv4Address):
        return a in ipaddress.ip_network("127.0.0.0/8")
    return a == ipaddress.IPv6Address("::1")


class VLLMServer:
    """One vLLM server for a model folder; ``base_url`` is its API root once started."""

    def __init__(self, python: str, model: str, name: str, log: Path, extra_args: tuple[str, ...] = (),
                 lifetime: float = LIFETIME):
        self.python, self.model, self.name, self.log = python, model, name, log
        self.extra_args = tuple(extra_args)
        self.lifetime = float(lifetime)
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, Any] = {}  # pid -> psutil.Process (knows its start time)
        self.sockets_checked = 0

    def start(self) -> VLLMServer:
        import psutil  # noqa: F401 - checked by the caller; without it the sockets cannot be checked

        cmd = [
            "timeout", "--signal=TERM", "--kill-after=15", str(int(self.lifetime)),
            self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
            "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--seed", "0", "--max-model-len", "256", "--enforce-eager",
            *self.extra_args,
        ]
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=_server_env(), start_new_session=True)
        try:
            self._wait_ready()
            self.check_sockets()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_sockets()
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with status {self.proc.returncode} before it was "
                                   f"ready; its log ends:\n{self.log_tail()}")
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                        f"{self.base_url}/models", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2.0)
        raise RuntimeError(f"the vLLM server did not answer within {READY_TIMEOUT:.0f} s; its log ends:\n"
                           f"{self.log_tail()}")

    def processes(self) -> list[Any]:
        """The server's processes: the one started and all its descendants."""
        import psutil

        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def check_sockets(self) -> None:
        """Fail (and stop the server) if any of its processes has an internet socket bound or
        connected outside loopback."""
        import psutil

        bad = []
        for p in self.processes():
            try:
                conns = p.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            for c in conns:
                for addr in (c.laddr, c.raddr):
                    if addr and not _loopback(addr.ip):
                        bad.append(f"pid {p.pid} {c.status} {c.laddr} -> {c.raddr or '-'}")
        self.sockets_checked += 1
        if bad:
            self.stop()
            raise RuntimeError("the vLLM server opened sockets outside 127.0.0.0/8, so the test stops it and "
                               "sends nothing: " + "; ".join(bad[:10]))

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        """Stop the server: its process group by the PID started, then stragglers by PID."""
        import psutil

        if self.proc is None:
            return
        self.processes()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        for p in self.seen.values():  # is_running() is false for a reused PID
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc = None
        if not self._log.closed:
            self._log.close()
