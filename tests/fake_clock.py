"""An injected clock for tests: no sockets wait, no test sleeps, nothing asserts wall time."""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds that move only when slept on; records every sleep (seconds).

    Pass the instance as ``clock=`` and its :meth:`sleep` as ``sleep=``.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
