"""Prometheus metrics of the server, in one place: what is measured (the names below, documented in
README.md "Operating"), the recording functions the rooms call, and the exposition.

Metrics are off until `configure()` runs (the server does it unless --no-metrics): every recording
function is then a no-op costing one global lookup. With `--workers N` the parent calls
`configure(multiprocess_dir=...)` before it forks, so that every worker writes its values to files in
that private directory (prometheus_client's multiprocess mode) and one scrape, from any process, sums
them; the parent marks a worker's files dead when it reaps it.

`exposition()` gives the body and content type of a scrape, for whatever serves GET /metrics (the
HTTP gateway; `--metrics-port` serves it on a port of its own meanwhile)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets (seconds): a GetModel takes ~1 ms; writes on SQLite with fsync take ~5-20 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_m: _Metrics | None = None  # None: metrics off


class _Metrics:
    """Every metric of the server, created by configure()."""

    def __init__(self, multiprocess_dir: str | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.multiprocess_dir = multiprocess_dir
        # The value class is chosen by prometheus_client when it is imported, from the environment;
        # choose it again now that the environment is set (the values are created below and lazily).
        values.ValueClass = values.get_value_class()
        registry = None if multiprocess_dir else CollectorRegistry()  # multiprocess: read from the files
        if registry is not None:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
        self.registry = registry
        kw: dict[str, Any] = {"registry": registry}

        def gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Any:
            return Gauge(name, doc, labels, multiprocess_mode=mode, **kw)  # type: ignore[arg-type]

        call = ("method", "protocol")
        self.requests = Counter(
            "model_registry_requests", "Calls ended, by method, protocol, status code and ErrorInfo reason",
            (*call, "code", "reason"), **kw,
        )
        self.duration = Histogram(
            "model_registry_request_duration_seconds", "Time from admission to the end of a call (a stream: its lifetime)",
            call, buckets=_LATENCY_BUCKETS, **kw,
        )
        self.in_flight = gauge("model_registry_requests_in_flight", "Calls in progress", call)
        self.request_bytes = Counter("model_registry_request_bytes", "Bytes of request messages received", call, **kw)
        self.response_bytes = Counter("model_registry_response_bytes", "Bytes of response messages sent", call, **kw)
        self.pool_max = gauge("model_registry_db_pool_max_connections", "Size of each process's database connection pool")
        self.pool_in_use = gauge("model_registry_db_pool_connections_in_use", "Pooled database connections in use")
        self.pool_idle = gauge("model_registry_db_pool_connections_idle", "Pooled database connections open and idle")
        self.pool_wait = Histogram(
            "model_registry_db_connection_wait_seconds", "Time taken to get a pooled database connection",
            buckets=_WAIT_BUCKETS, **kw,
        )
        self.db_errors = Counter(
            "model_registry_db_errors", "Database failures answered to callers, by reason "
            "(DATABASE_BUSY, DATABASE_UNAVAILABLE, TRANSACTION_CONFLICT)", ("reason",), **kw,
        )
        self.schema_version = gauge(
            "model_registry_db_schema_version", "Number of the latest schema migration applied", mode="livemax"
        )
        self.watchers = gauge("model_registry_watchers", "WatchEvents streams connected")
        self.watch_lag = gauge(
            "model_registry_watch_lag_events", "Events the slowest watcher of a process has yet to read", mode="livemax"
        )
        self.events = Counter("model_registry_events_appended", "Events appended to the event log", **kw)
        self.upload_bytes = Counter("model_registry_checkpoint_upload_bytes", "Checkpoint file bytes received", **kw)
        self.download_bytes = Counter("model_registry_checkpoint_download_bytes", "Checkpoint file bytes sent", **kw)
        self.uploads = gauge("model_registry_checkpoint_uploads_in_progress", "Checkpoint file uploads in progress")
        self.storage_errors = Counter(
            "model_registry_storage_errors", "Failures of the checkpoint file storage answered to callers, by reason",
            ("reason",), **kw,
        )
        self.auth_refusals = Counter(
            "model_registry_auth_refusals", "Calls refused by authentication or authorization, by reason "
            "(MISSING_TOKEN, INVALID_TOKEN, ROLE_NOT_ALLOWED, NOT_OWNER...)", ("reason",), **kw,
        )
        self.token_reloads = Counter(
            "model_registry_auth_token_reloads", "Readings of the token file on SIGHUP, by result (ok, error)",
            ("result",), **kw,
        )
        self.info = gauge("model_registry_build_info", "Always 1; the labels tell the server's release", ("version",), "max")
        from . import __version__

        self.info.labels(__version__).set(1)
        self._calls: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def call(self, method: str, protocol: str) -> tuple[Any, Any, Any, Any]:
        """The children of one method and protocol (duration, in flight, request and response bytes),
        resolved once."""
        children = self._calls.get((method, protocol))
        if children is None:
            children = (
                self.duration.labels(method, protocol),
                self.in_flight.labels(method, protocol),
                self.request_bytes.labels(method, protocol),
                self.response_bytes.labels(method, protocol),
            )
            self._calls[(method, protocol)] = children
        return children


def configure(multiprocess_dir: str | None = None) -> None:
    """Turns metrics on in this process (once; later calls change nothing). With `multiprocess_dir`
    (an empty private directory), this process and those it forks afterwards share their values
    through files there."""
    global _m
    with _lock:
        if _m is not None:
            return
        if multiprocess_dir:
            os.environ[MULTIPROC_ENV] = multiprocess_dir
        _m = _Metrics(multiprocess_dir)


def enabled() -> bool:
    return _m is not None


def exposition() -> tuple[bytes, str]:
    """The body and content type of a scrape (Prometheus text format), of the whole server."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    m = _m
    if m is None:
        return b"# metrics are off (--no-metrics)\n", PROMETHEUS_TEXT
    if m.multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=m.multiprocess_dir)
        return generate_latest(registry), PROMETHEUS_TEXT
    assert m.registry is not None
    return generate_latest(m.registry), PROMETHEUS_TEXT


def serve(host: str, port: int) -> tuple[Any, int]:
    """Serves exposition() on http://host:port/metrics (port 0: a free one) from a daemon thread of
    this process (prometheus_client's own server); returns the server (`shutdown()` stops it) and its
    port."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import Collector

    class _Whole(Collector):
        def collect(self) -> Any:
            from prometheus_client import CollectorRegistry, multiprocess

            m = _m
            if m is None:
                return iter(())
            if m.multiprocess_dir:
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry, path=m.multiprocess_dir)
                return registry.collect()
            assert m.registry is not None
            return m.registry.collect()

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_Whole())
    httpd, _thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
    return httpd, httpd.server_port


def check_exposure(host: str, has_tokens: bool, explicit: bool) -> None:
    """Metrics are served without authentication. On a server with tokens that is reachable beyond
    this machine (non-loopback `host`), that needs the operator's explicit choice (`explicit`: the
    metrics port was named, --metrics-port): ValueError otherwise; a warning when chosen."""
    from .auth import is_loopback

    if not has_tokens or is_loopback(host):
        return
    if not explicit:
        raise ValueError(
            f"refusing to serve metrics on {host} without authentication while calls need tokens: "
            "name a metrics port (--metrics-port) to expose them anyway"
        )
    log.warning("metrics on %s are served WITHOUT authentication: anyone who can reach the port may read them", host)


def worker_exited(pid: int) -> None:
    """Forgets the live gauges (in flight, pool, watchers...) of a worker that exited; its counters stay."""
    m = _m
    if m is not None and m.multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, m.multiprocess_dir)


# Recording, one function per concern; each is a no-op while metrics are off.


class CallTimer:
    """One call of a method over a protocol: in flight from creation to `end`."""

    __slots__ = ("_children", "_started", "_method", "_protocol")

    def __init__(self, method: str, protocol: str, children: tuple[Any, Any, Any, Any]) -> None:
        self._method, self._protocol, self._children = method, protocol, children
        self._started = time.perf_counter()
        children[1].inc()

    def received(self, size: int) -> None:
        self._children[2].inc(size)

    def end(self, code: str, reason: str) -> None:
        m = _m
        children = self._children
        children[0].observe(time.perf_counter() - self._started)
        children[1].dec()
        if m is not None:
            m.requests.labels(self._method, self._protocol, code, reason).inc()


def start_call(method: str, protocol: str) -> CallTimer | None:
    """A call admitted to the registry service (protocol "grpc" or "http"); None while metrics are off."""
    m = _m
    return None if m is None else CallTimer(method, protocol, m.call(method, protocol))


def response_counter(method: str, protocol: str) -> Callable[[int], None] | None:
    """Adds to the response bytes of a method (called with each message's size); None while off."""
    m = _m
    return None if m is None else m.call(method, protocol)[3].inc


def refused(method: str, protocol: str, code: str, reason: str) -> None:
    """A call refused before it was admitted (capacity, authentication)."""
    m = _m
    if m is not None:
        m.requests.labels(method, protocol, code, reason).inc()


def auth_refused(reason: str) -> None:
    m = _m
    if m is not None:
        m.auth_refusals.labels(reason).inc()


def tokens_reloaded(ok: bool) -> None:
    m = _m
    if m is not None:
        m.token_reloads.labels("ok" if ok else "error").inc()


def database_error(reason: str) -> None:
    m = _m
    if m is not None:
        m.db_errors.labels(reason).inc()


def storage_error(reason: str) -> None:
    m = _m
    if m is not None:
        m.storage_errors.labels(reason).inc()


def events_appended(count: int) -> None:
    m = _m
    if m is not None:
        m.events.inc(count)


def bytes_uploaded(count: int) -> None:
    m = _m
    if m is not None:
        m.upload_bytes.inc(count)


def bytes_downloaded(count: int) -> None:
    m = _m
    if m is not None:
        m.download_bytes.inc(count)


def upload_started() -> None:
    m = _m
    if m is not None:
        m.uploads.inc()


def upload_ended() -> None:
    m = _m
    if m is not None:
        m.uploads.dec()


def schema_version(number: int) -> None:
    m = _m
    if m is not None:
        m.schema_version.set(number)


def sample(db: Any, watchers: int, watch_lag: int) -> None:
    """The gauges read from state (every few seconds, by the server's health thread): the database
    pool and the watchers of this process."""
    m = _m
    if m is None:
        return
    m.pool_max.set(getattr(db, "_max_connections", 0) or 0)
    m.pool_in_use.set(len(getattr(db, "_in_use", ())))
    m.pool_idle.set(len(getattr(db, "_connections", ())))
    m.watchers.set(watchers)
    m.watch_lag.set(watch_lag)


def time_connections(db: Any) -> None:
    """Measures the wait for each of the database's pooled connections (wraps its `connect`)."""
    m = _m
    if m is None or getattr(db, "_metrics_timed", False):
        return
    connect: Callable[..., Any] = db.connect
    observe = m.pool_wait.observe

    def timed_connect(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return connect(*args, **kwargs)
        finally:
            observe(time.perf_counter() - started)

    db.connect = timed_connect
    db._metrics_timed = True
