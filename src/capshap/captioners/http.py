"""One HTTP client for the cloud captioners: secrets, retries, deadlines, size caps, concurrency.

:class:`HTTPClient` wraps an :class:`httpx.Client` and adds what every cloud captioner
needs, once:

- **Secrets** (:class:`Secret`) go only into request headers; they are validated up front
  (not empty, no control characters, ASCII) with errors that never echo them, are never in
  a ``repr`` or a pickle, and :meth:`HTTPClient.scrub` removes them from every error text
  the client makes, every exception it hands back, and every log line it writes. A key
  sent over plain ``http://`` is warned about once per client.
- **No redirects**: a 3xx answer fails the request with :class:`RedirectRefused` (a
  redirected POST would drop its body or carry the key to another host).
- **Retries** of 429, 408, 5xx, time-outs and network errors, with exponential backoff and
  jitter from a private seeded RNG, honouring ``Retry-After`` (seconds or an HTTP date)
  and ``retry-after-ms``, capped at ``max_backoff``. Waits of ``warn_wait`` seconds or more
  are logged as warnings, and every wait is cut into slices of at most ``poll`` seconds so
  that Ctrl-C (or :meth:`HTTPClient.close`) stops it within one slice.
- **Deadline and size cap per attempt**: an attempt (connect, send, headers and every read
  of the body) must finish within ``timeout`` seconds of the client's clock, and an answer
  larger than ``max_response_bytes`` is refused from its ``Content-Length`` or, when the
  server does not say, by stopping reading at the cap (:class:`ResponseTooLarge`). A server
  that trickles one byte at a time therefore cannot hold a request for ever: each network
  operation waits at most ``timeout`` and the deadline is checked when the headers arrive
  and after every chunk, so an attempt ends within ``2 * timeout`` at worst.
- **Concurrency**: one bounded pool of ``max_concurrency`` daemon worker threads and one
  connection pool per client, shared by every caller of :meth:`HTTPClient.map` (many
  images in flight from many threads never exceed the limit).
- **Per-item results**: :meth:`HTTPClient.map` returns a value or an exception for every
  request, in order; one failure never loses another's result. Identical requests in a
  batch are sent once, and an optional content cache answers repeats without a request.

The transport (e.g. :class:`httpx.MockTransport`), the sleep function and the clock are
injectable, so unit tests need neither sockets nor wall-clock waits.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import queue
import random
import re
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

try:
    import httpx
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("the cloud captioners need httpx: pip install 'capshap[cloud]' (or pip install httpx)") from e

from capshap.text import printable

__all__ = [
    "Secret",
    "Request",
    "Response",
    "HTTPClient",
    "ClientError",
    "RetriesExhausted",
    "BadAnswer",
    "ResponseTooLarge",
    "RedirectRefused",
    "Cancelled",
    "BatchStopped",
    "RetryAnswer",
    "ContentCache",
    "scrub",
    "parse_retry_after",
    "RETRY_STATUSES",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses retried by default: too many requests, request time-out, and server errors.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_MB = 1024 * 1024


# ---------------------------------------------------------------------------- secrets


class Secret:
    """A key or token: validated on construction, shown as ``'***'``, never pickled.

    Parameters
    ----------
    value : str
        The secret. Surrounding whitespace (a newline at the end of a file) is stripped;
        what remains must be non-empty printable ASCII without control characters.
    name : str
        What the secret is, for error messages (e.g. ``"Azure AI Vision key"``).
    source : str, optional
        Where it came from, for error messages (e.g. ``"AZURE_VISION_KEY"``).
    prefix : str
        Put before the value in the header, e.g. ``"Bearer "`` for ``Authorization``.

    Raises
    ------
    ValueError
        When the value is empty or holds a control or non-ASCII character; the message
        gives the position and kind of the character, never the value.
    """

    __slots__ = ("_value", "name", "prefix")

    def __init__(self, value: str, name: str = "key", source: str | None = None, prefix: str = ""):
        where = f" (from {source})" if source else ""
        if not isinstance(value, str):
            raise TypeError(f"the {name}{where} must be a str, got {type(value).__name__}")
        v = value.strip()
        if not v:
            raise ValueError(f"the {name}{where} is empty: pass the key itself")
        for i, ch in enumerate(v):
            if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ord(ch) > 126:
                kind = unicodedata.name(ch, f"U+{ord(ch):04X}").lower() if ord(ch) > 126 else f"control character U+{ord(ch):04X}"
                raise ValueError(
                    f"the {name}{where} contains a {kind} at position {i} of {len(v)}; keys are "
                    "printable ASCII: copy the key again (a key pasted with a line break or "
                    "read from a file with two lines shows this)"
                )
        self._value = v
        self.name = name
        self.prefix = prefix

    def reveal(self) -> str:
        """The secret itself (only for the request header)."""
        return self._value

    def header_value(self) -> str:
        """``prefix + value``, what the header carries."""
        return self.prefix + self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __reduce__(self) -> Any:  # never pickle (or deep-copy) the key along with an object
        raise TypeError(f"the {self.name} cannot be pickled; pass it again where it is needed")


#: Secrets at least this long are also scrubbed in altered forms (shorter ones: exact only,
#: so that common words are not taken for a key).
_FUZZY_MIN = 8
#: Edits (a character left out, changed or added) an echoed form may have and still be scrubbed.
_FUZZY_EDITS = 2
_TOKEN = re.compile(r"[A-Za-z0-9_\-~+/.%]+")


def _within_edits(a: str, b: str, k: int) -> bool:
    """Whether the edit distance of ``a`` and ``b`` is at most ``k`` (banded, O(len * k))."""
    if abs(len(a) - len(b)) > k:
        return False
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        lo, hi = max(1, i - k), min(len(b), i + k)
        cur = [i] + [k + 1] * len(b)
        for j in range(lo, hi + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != b[j - 1]))
        if min(cur[max(0, lo - 1):hi + 1]) > k:
            return False
        prev = cur
    return prev[len(b)] <= k


def _looks_like(token: str, forms: Sequence[str]) -> bool:
    t = token.lower()
    bare = t.strip("._-~+/%")  # a full stop or slash after the key is not part of it
    seen = {t, bare, urllib.parse.unquote(bare)}  # percent-encoded beyond what quote() does
    return any(f in c or _within_edits(c, f, _FUZZY_EDITS)
               or (len(c) >= max(_FUZZY_MIN, 0.6 * len(f)) and c in f)  # most of it, cut or split
               for f in forms for c in seen)


def scrub(text: object, secrets: Sequence[Secret]) -> str:
    """``str(text)`` with every secret's value replaced by ``***``: plain and URL-quoted,
    and (for secrets of at least 8 characters) the forms a server may echo: upper- or
    lower-cased, reversed, with up to two characters left out, changed or added, or cut
    (a piece of at least 60% of it)."""
    s = str(text)
    fuzzy: list[str] = []
    for sec in secrets:
        v = sec.reveal()
        for form in {v, urllib.parse.quote(v, safe=""), urllib.parse.quote_plus(v)}:
            if form and form in s:
                s = s.replace(form, "***")
        if len(v) >= _FUZZY_MIN:
            fuzzy += [v.lower(), v.lower()[::-1]]
    if fuzzy:
        shortest = max(_FUZZY_MIN, min(min(len(f) - _FUZZY_EDITS, int(0.6 * len(f))) for f in fuzzy))
        s = _TOKEN.sub(lambda m: "***" if len(m.group(0)) >= shortest and _looks_like(m.group(0), fuzzy)
                       else m.group(0), s)
    return s


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """One HTTP request, without secrets (the client adds its secret headers when sending).

    ``label`` names the request in error messages (e.g. ``"image 3 ('cat.jpg')"``).
    """

    method: str
    url: str
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    label: str = "request"

    def fingerprint(self) -> str:
        """Hex sha256 of method, URL, headers and body: equal exactly for identical requests."""
        h = hashlib.sha256()
        h.update(self.method.upper().encode())
        h.update(b"\0" + self.url.encode() + b"\0")
        for k, v in sorted((k.lower(), v) for k, v in self.headers.items()):
            h.update(f"{k}:{v}\n".encode())
        h.update(b"\0")
        h.update(self.content)
        return h.hexdigest()


@dataclass(frozen=True)
class Response:
    """A final answer: ``status``, ``headers`` and the whole ``content`` (at most the cap).

    ``attempts``: tries it took (1 = no retry); ``request``: what was sent.
    """

    status: int
    headers: httpx.Headers
    content: bytes
    request: Request
    attempts: int = 1

    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class ContentCache(Protocol):
    """What :class:`HTTPClient` needs from a cache (:class:`~capshap.captioners.cache.CaptionCache` fits)."""

    def get_key(self, namespace: str, key: str) -> str | None: ...

    def put_key(self, namespace: str, key: str, caption: str, shape: Any = None) -> None: ...


# ---------------------------------------------------------------------------- errors


class ClientError(RuntimeError):
    """A request failed for good. ``label``: the request's name; ``reason``: what happened;
    ``status``: the last HTTP status (None without an answer); ``attempts``: tries made."""

    def __init__(self, label: str, reason: str, *, status: int | None = None, attempts: int = 0):
        super().__init__(f"{label}: {reason}")
        self.label = label
        self.reason = reason
        self.status = status
        self.attempts = attempts


class RetriesExhausted(ClientError):
    """Every try met a retryable failure (429/408/5xx, time-out, network error)."""


class BadAnswer(ClientError):
    """The parser refused the answer (:class:`RetryAnswer`) more often than allowed."""


class ResponseTooLarge(ClientError):
    """The answer was larger than ``max_response_bytes``; reading stopped at the cap."""


class RedirectRefused(ClientError):
    """The server answered 3xx; redirects are not followed."""


class Cancelled(ClientError):
    """The batch was interrupted (Ctrl-C) or the client closed before this request finished."""


class BatchStopped(ClientError):
    """Not sent: an earlier request of the batch failed in a way that stops the batch.

    ``first`` is that failure."""

    def __init__(self, label: str, first: BaseException):
        super().__init__(label, f"not sent, an earlier request failed for good: {first}",
                         status=getattr(first, "status", None))
        self.first = first


class RetryAnswer(Exception):
    """Raised by a parser for a 2xx answer it cannot use (e.g. malformed JSON): try again,
    at most ``max_bad_answers`` times, then :class:`BadAnswer`."""


class _Transient(Exception):
    """A retryable failure of one attempt."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class _Final(Exception):
    def __init__(self, error: ClientError):
        self.error = error


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asks to wait: ``retry-after-ms`` / ``x-ms-retry-after-ms`` (ms), else
    ``Retry-After`` (seconds or an HTTP date, relative to ``now``, Unix seconds, default
    :func:`time.time`), else None. Negative and unreadable values give 0 / None."""
    if headers is None:
        return None
    headers = httpx.Headers(headers)
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        v = headers.get(name)
        if v is not None:
            try:
                ms = float(v)
            except ValueError:
                continue
            if ms == ms:  # not NaN
                return max(0.0, ms / 1000.0)
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        s = float(v)
        return max(0.0, s) if s == s else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------------------- worker pool


class _Pool:
    """``size`` daemon threads serving one queue: the concurrency limit of one client.

    Daemon threads, so that an interrupted program exits at once instead of waiting for
    requests in flight (each of which is bounded by the client's deadline anyway); they
    end after ``idle`` seconds without work, so a forgotten client leaves no threads."""

    def __init__(self, size: int, name: str, idle: float = 10.0):
        self.size = size
        self.name = name
        self.idle = idle  # seconds an idle worker waits for work before it ends
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        self._queue.put((fut, fn))
        with self._lock:
            if len(self._threads) < self.size:
                t = threading.Thread(target=self._work, name=f"{self.name}-worker", daemon=True)
                self._threads.append(t)
                t.start()
        return fut

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                item = self._queue.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:  # idle: leave, unless work arrived meanwhile (submit checks
                    if self._queue.empty():  # the thread count under the same lock)
                        if me in self._threads:
                            self._threads.remove(me)
                        return
                continue
            if item is None:
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller, KeyboardInterrupt too
                fut.set_exception(e)
            else:
                fut.set_result(result)

    def close(self) -> None:
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)
            self._threads = []


# ---------------------------------------------------------------------------- client


Parser = Callable[[Response], Any]


class HTTPClient:
    """An HTTP client for cloud APIs: retries, deadlines, size caps, secrets, one shared pool.

    Parameters
    ----------
    secret_headers : mapping of str to Secret
        Headers added to every request, e.g. ``{"Ocp-Apim-Subscription-Key": Secret(key)}``
        or ``{"Authorization": Secret(token, prefix="Bearer ")}``. Their values are
        scrubbed from every error and log line.
    headers : mapping of str to str
        Other headers added to every request (a request's own headers win).
    name : str
        Names the client in log lines and its worker threads.
    max_concurrency : int
        Requests in flight at once, over all callers (worker threads and connections).
    max_retries : int
        Retries per request after the first try, for retryable statuses, time-outs and
        network errors.
    max_bad_answers : int
        Retries of 2xx answers the parser refuses with :class:`RetryAnswer` (at most
        ``max_retries`` either way).
    timeout : float
        Seconds one attempt may take in all: connect, send, headers and the whole body
        (checked on ``clock`` after the headers and after every chunk; each network wait
        is also bounded by it, so an attempt never lasts past ``2 * timeout``).
    max_response_bytes : int
        Largest answer body read, in bytes (after content decoding).
    backoff, max_backoff : float
        Retry ``k`` (0-based) waits ``min(max_backoff, backoff * 2**k)`` seconds, or the
        server's ``Retry-After`` capped at ``max_backoff``, times ``1 + U(0, 0.1)`` jitter.
    seed : int
        Seed of the private jitter RNG.
    retry_statuses : set of int
        Statuses retried (default :data:`RETRY_STATUSES`); other statuses are final
        answers handed to the parser.
    warn_wait : float
        Waits of this many seconds or more are logged as warnings (others at debug level).
    poll : float
        Longest slice of one wait, in seconds: an interrupt is noticed within it.
    transport : httpx.BaseTransport, optional
        Replaces the network (e.g. :class:`httpx.MockTransport` in tests).
    proxies : dict, optional
        ``{"http": URL, "https": URL}``; None reads the environment (``https_proxy``,
        ``no_proxy``), ``{}`` uses no proxy. Ignored with ``transport``.
    verify : bool or str
        TLS verification, as in httpx (a CA bundle path, or False to switch it off).
    sleep : callable(float), optional
        Waits the given seconds (default :func:`time.sleep`); called with slices of at most
        ``poll`` seconds.
    clock : callable() -> float, optional
        Monotonic seconds (default :func:`time.monotonic`), for deadlines and waits.
    cache : ContentCache, optional
        Answers of :meth:`map` that are ``str`` are cached by request fingerprint under
        the namespace ``"http:" + method + URL``; a hit costs no request.

    Attributes ``requests_sent`` (attempts made, retries included) and ``cache_hits``
    count what the client did. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        secret_headers: Mapping[str, Secret] | None = None,
        headers: Mapping[str, str] | None = None,
        name: str = "http",
        max_concurrency: int = 8,
        max_retries: int = 5,
        max_bad_answers: int = 2,
        timeout: float = 30.0,
        max_response_bytes: int = 8 * _MB,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        seed: int = 0,
        retry_statuses: frozenset[int] | set[int] = RETRY_STATUSES,
        warn_wait: float = 5.0,
        poll: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        proxies: Mapping[str, str] | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        cache: ContentCache | None = None,
    ):
        self.secret_headers = dict(secret_headers or {})
        for k, s in self.secret_headers.items():
            if not isinstance(s, Secret):
                raise TypeError(f"secret header {k!r} must be a Secret, got {type(s).__name__}")
        self._secrets = list(self.secret_headers.values())
        self.headers = dict(headers or {})
        self.name = str(name)
        if int(max_concurrency) < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        if int(max_retries) < 0 or int(max_bad_answers) < 0:
            raise ValueError(f"max_retries and max_bad_answers must be >= 0, got {max_retries!r}, {max_bad_answers!r}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if int(max_response_bytes) < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes!r}")
        if not (float(backoff) >= 0 and float(max_backoff) >= 0):
            raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff!r}, {max_backoff!r}")
        if not float(poll) > 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll!r}")
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.max_bad_answers = int(max_bad_answers)
        self.timeout = float(timeout)
        self.max_response_bytes = int(max_response_bytes)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.retry_statuses = frozenset(int(s) for s in retry_statuses)
        self.warn_wait = float(warn_wait)
        self.poll = float(poll)
        self.cache = cache
        self._sleep = sleep if sleep is not None else time.sleep
        self._clock = clock if clock is not None else time.monotonic
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._warned_plain = False
        self.requests_sent = 0
        self.cache_hits = 0
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        kw: dict[str, Any] = {
            "follow_redirects": False,
            "timeout": httpx.Timeout(self.timeout),
            "limits": limits,
            "verify": verify,
        }
        if transport is not None:
            kw["transport"] = transport
        elif proxies is not None:
            kw["trust_env"] = False
            kw["mounts"] = {
                f"{scheme}://": httpx.HTTPTransport(proxy=url, limits=limits, verify=verify)
                for scheme, url in proxies.items()
                if scheme in ("http", "https") and url
            }
        self._http = httpx.Client(**kw)
        self._pool = _Pool(self.max_concurrency, f"capshap-{self.name}")

    # ------------------------------------------------------------------ housekeeping

    def __repr__(self) -> str:
        return (f"HTTPClient(name={self.name!r}, secret_headers={sorted(self.secret_headers)!r}, "
                f"max_concurrency={self.max_concurrency}, timeout={self.timeout:g})")

    def __reduce__(self) -> Any:
        raise TypeError("an HTTPClient holds connections and secrets and cannot be pickled; make a new one")

    def __enter__(self) -> "HTTPClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop: waits in progress end within ``poll`` seconds, connections are closed."""
        self._closed.set()
        self._pool.close()
        self._http.close()

    def scrub(self, text: object) -> str:
        """``text`` with every secret of this client replaced by ``***``."""
        return scrub(text, self._secrets)

    def _scrub_exception(self, exc: BaseException) -> BaseException:
        """Scrub secrets from ``exc`` and its chain in place (a safety net for parser errors)."""
        seen: set[int] = set()
        e: BaseException | None = exc
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            e.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in e.args)
            notes = getattr(e, "__notes__", None)
            if notes:
                e.__notes__ = [self.scrub(n) for n in notes]
            for attr in ("reason", "label"):
                if isinstance(getattr(e, attr, None), str):
                    try:
                        setattr(e, attr, self.scrub(getattr(e, attr)))
                    except AttributeError:
                        pass
            e = e.__cause__ or e.__context__
        return exc

    # ------------------------------------------------------------------ waits

    def wait(self, seconds: float, cancel: threading.Event | None = None) -> None:
        """Wait ``seconds`` on the client's clock in slices of at most ``poll`` seconds.

        Raises :class:`Cancelled` (label ``"wait"``) as soon as ``cancel`` is set or the
        client is closed.
        """
        end = self._clock() + max(0.0, float(seconds))
        while True:
            if self._closed.is_set() or (cancel is not None and cancel.is_set()):
                raise Cancelled("wait", "interrupted while waiting to retry")
            left = end - self._clock()
            if left <= 0:
                return
            self._sleep(min(left, self.poll))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = retry_after if retry_after is not None else self.backoff * (2.0 ** attempt)
        with self._lock:
            u = self._rng.random()
        return min(self.max_backoff, base) * (1.0 + 0.1 * u)

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, request: Request) -> Response:
        """One try -> the answer; raises _Transient (retry) or _Final (give up)."""
        url = httpx.URL(request.url)
        if self._secrets and url.scheme == "http" and not self._warned_plain:
            with self._lock:
                warn, self._warned_plain = not self._warned_plain, True
        else:
            warn = False
        if warn:
            logger.warning(
                "%s: sending the key over plain http:// to %s: anyone on the path can read it; "
                "use an https:// endpoint", self.name, self.scrub(printable(url.host)),
            )
        headers = {"User-Agent": "capshap", **self.headers, **dict(request.headers)}
        for k, s in self.secret_headers.items():
            headers[k] = s.header_value()
        with self._lock:
            self.requests_sent += 1
        start = self._clock()
        deadline = start + self.timeout
        where = f"{request.method} {self.scrub(printable(str(url.copy_with(query=None)), 200))}"
        try:
            req = self._http.build_request(request.method, url, content=request.content, headers=headers)
            resp = self._http.send(req, stream=True)
        except httpx.TimeoutException:
            raise _Transient(f"no answer within timeout={self.timeout:g} s") from None
        except (httpx.TransportError, OSError) as e:
            raise _Transient(f"network error ({type(e).__name__}: {self.scrub(printable(e, 300))})") from None
        except httpx.HTTPError as e:  # e.g. an invalid URL
            raise _Final(ClientError(request.label, f"cannot send {where}: {self.scrub(printable(e, 300))}")) from None
        try:
            status = resp.status_code
            if 300 <= status < 400:
                loc = resp.headers.get("location", "")
                raise _Final(RedirectRefused(
                    request.label,
                    f"{where} answered HTTP {status} (redirect to {self.scrub(printable(loc, 200))!r}); "
                    "redirects are not followed, so that the key never goes to another URL: use the "
                    "final URL as the endpoint",
                    status=status,
                ))
            if self._clock() > deadline:
                raise _Transient(f"no answer within timeout={self.timeout:g} s", status=None)
            declared = resp.headers.get("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > self.max_response_bytes:
                raise _Final(self._too_large(request, where, status, f"declares {int(declared)} bytes"))
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():  # as they arrive, so the deadline is checked often
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise _Final(self._too_large(request, where, status, f"sent more than {self.max_response_bytes} bytes"))
                chunks.append(chunk)
                if self._clock() > deadline:
                    raise _Transient(
                        f"no complete answer within timeout={self.timeout:g} s "
                        f"({size} bytes received; the server is too slow)", status=None,
                    )
            if self._clock() > deadline:
                raise _Transient(f"no complete answer within timeout={self.timeout:g} s", status=None)
        except httpx.TimeoutException:
            raise _Transient(f"no complete answer within timeout={self.timeout:g} s") from None
        except (httpx.TransportError, OSError) as e:
            raise _Transient(f"network error while reading ({type(e).__name__}: {self.scrub(printable(e, 300))})") from None
        finally:
            resp.close()
        logger.debug("%s: %s: %s -> %d in %.2f s (%d bytes sent, %d received)", self.name, request.label,
                     where, status, self._clock() - start, len(request.content), size)
        return Response(status, resp.headers, b"".join(chunks), request)

    def _too_large(self, request: Request, where: str, status: int, what: str) -> ResponseTooLarge:
        return ResponseTooLarge(
            request.label,
            f"the answer of {where} (HTTP {status}) {what}; at most max_response_bytes="
            f"{self.max_response_bytes} are read: is the endpoint right? (raise the limit if it is)",
            status=status,
        )

    # ------------------------------------------------------------------ one request

    def send(self, request: Request, parse: Parser | None = None, cancel: threading.Event | None = None) -> Any:
        """Send ``request`` with retries; return ``parse(response)`` (default: the Response).

        Retryable statuses, time-outs and network errors are retried; other statuses are
        final and go to ``parse``, which may raise :class:`RetryAnswer` to retry a 2xx answer
        it cannot read, or any exception to fail the request. Raises :class:`ClientError`
        subclasses (texts scrubbed of secrets), or what ``parse`` raised.
        """
        try:
            return self._send(request, parse, cancel)
        except Exception as e:
            self._scrub_exception(e)
            raise

    def _send(self, request: Request, parse: Parser | None, cancel: threading.Event | None) -> Any:
        last, last_status, bad = "nothing", None, 0
        for attempt in range(self.max_retries + 1):
            if self._closed.is_set() or (cancel is not None and cancel.is_set()):
                raise Cancelled(request.label, "not sent: the batch was interrupted", attempts=attempt)
            retry_after: float | None = None
            try:
                resp = self._attempt(request)
            except _Final as f:
                f.error.attempts = attempt + 1
                raise f.error from None
            except _Transient as t:
                last, last_status, retry_after = t.reason, t.status, t.retry_after
                logger.debug("%s: %s: %s (try %d)", self.name, request.label, last, attempt + 1)
            else:
                last_status = resp.status
                resp = Response(resp.status, resp.headers, resp.content, request, attempt + 1)
                if resp.status in self.retry_statuses:
                    last = f"HTTP {resp.status}: {self.scrub(printable(resp.text().strip(), 300)) or '(empty body)'}"
                    retry_after = parse_retry_after(resp.headers)
                else:
                    if parse is None:
                        return resp
                    try:
                        return parse(resp)
                    except RetryAnswer as e:
                        bad += 1
                        last = self.scrub(e)
                        if bad > self.max_bad_answers:
                            raise BadAnswer(request.label, f"{last} ({bad} times)", status=resp.status,
                                            attempts=attempt + 1) from None
            if attempt < self.max_retries:
                wait = self._delay(attempt, retry_after)
                if retry_after is None:
                    why = "backoff"
                else:
                    why = f"server asked for Retry-After {retry_after:g} s"
                    if retry_after > self.max_backoff:
                        why += f", capped at max_backoff={self.max_backoff:g} s"
                level = logging.WARNING if wait >= self.warn_wait else logging.DEBUG
                logger.log(level, "%s: %s: waiting %.1f s before retry %d of %d (%s) after %s", self.name,
                           request.label, wait, attempt + 1, self.max_retries, why, last)
                try:
                    self.wait(wait, cancel)
                except Cancelled:
                    raise Cancelled(request.label, f"interrupted while waiting to retry after {last}",
                                    status=last_status, attempts=attempt + 1) from None
        raise RetriesExhausted(
            request.label, f"failed after {self.max_retries + 1} tries; last: {last}",
            status=last_status, attempts=self.max_retries + 1,
        )

    # ------------------------------------------------------------------ many requests

    def map(
        self,
        requests: Sequence[Request],
        parse: Parser | None = None,
        *,
        stop: Callable[[BaseException], bool] | None = None,
    ) -> list[Any]:
        """Send every request (at most ``max_concurrency`` at once over all callers).

        Returns, in input order, ``parse(response)`` or the exception for every request;
        identical requests (same :meth:`Request.fingerprint`) are sent once and share their
        result, and with a ``cache`` str results are cached and repeats answered from it.
        ``stop(exc)`` true for a failure stops the batch: requests not yet started get
        :class:`BatchStopped`. KeyboardInterrupt (in the caller or a worker) cancels the
        batch (waits end within ``poll`` seconds, nothing more is sent) and propagates.
        """
        n = len(requests)
        results: list[Any] = [None] * n
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.fingerprint(), []).append(i)
        todo: dict[str, list[int]] = {}
        for fp, idx in groups.items():
            r = requests[idx[0]]
            hit = self.cache.get_key(self._namespace(r), fp) if self.cache is not None else None
            if hit is not None:
                with self._lock:
                    self.cache_hits += len(idx)
                for i in idx:
                    results[i] = hit
            else:
                todo[fp] = idx
        if not todo:
            return results
        cancel = threading.Event()
        stopped: list[BaseException] = []

        def job(req: Request) -> Any:
            if stopped:
                raise BatchStopped(req.label, stopped[0])
            if cancel.is_set():
                raise Cancelled(req.label, "not sent: the batch was interrupted")
            try:
                return self.send(req, parse, cancel)
            except Exception as e:
                if stop is not None and stop(e):
                    stopped.append(e)
                raise
            except BaseException:  # KeyboardInterrupt in this worker: stop the batch at once
                cancel.set()
                raise

        futures: dict[str, Future[Any]] = {}
        try:
            for fp, idx in todo.items():
                futures[fp] = self._pool.submit(lambda r=requests[idx[0]]: job(r))
            pending = set(futures.values())
            while pending:
                done, pending = wait_futures(pending, timeout=self.poll, return_when=FIRST_EXCEPTION)
                for f in done:
                    e = f.exception()
                    if e is not None and not isinstance(e, Exception):
                        raise e  # KeyboardInterrupt / SystemExit from a worker
        except BaseException:
            cancel.set()
            for f in futures.values():
                f.cancel()
            raise
        for fp, fut in futures.items():
            idx = todo[fp]
            e = fut.exception()
            if e is None:
                value = fut.result()
                if self.cache is not None and isinstance(value, str):
                    self.cache.put_key(self._namespace(requests[idx[0]]), fp, value)
            else:
                value = self._scrub_exception(e)
            for i in idx:
                results[i] = value
        return results

    @staticmethod
    def _namespace(request: Request) -> str:
        return f"http:{request.method.upper()} {request.url}"
