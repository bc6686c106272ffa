"""Building the gRPC server: the registry service, health and reflection, on one database."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import peewee as pw
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from modelregistry.v1 import registry_service_pb2, registry_service_pb2_grpc

from . import auth, budget, metrics
from . import db as database
from .events import WATCH_POLL_INTERVAL_S, EventLog
from .files import DEFAULT_MAX_UPLOAD_BYTES
from .health import SERVICE_NAME as HEALTH_SERVICE_NAME
from .health import HealthServicer
from .interceptor import RegistryInterceptor
from .servicer import ModelRegistryServicer
from .storage import Storage, open_storage
from .store import RegistryStore

log = logging.getLogger(__name__)

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name
DEFAULT_WORKERS = 16
MAX_CONCURRENT_RPCS = 256  # unary calls in progress (running or queued) at once; more are refused RESOURCE_EXHAUSTED
# Streams: at most so many of each kind at once per process (each holds a thread of its kind's own
# pool), and per authenticated principal; see budget.py.
MAX_WATCHERS = 64
MAX_UPLOADS = 8
MAX_DOWNLOADS = 16
MAX_STREAMS_PER_CALLER = 4
MAX_REFLECTION_STREAMS = 4
MAX_HEALTH_WATCHERS = 16
STREAM_IDLE_TIMEOUT_S = 60.0  # a stream blocked on its peer this long is ended DEADLINE_EXCEEDED
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # one request message; larger is refused RESOURCE_EXHAUSTED
HEALTH_PROBE_INTERVAL_S = 2.0
PURGE_INTERVAL_S = 3600.0  # how often request_ids past their retention are forgotten
STORAGE_SWEEP_INTERVAL_S = 3600.0  # how often checkpoint file storage is swept (files.CheckpointFiles.sweep)


class RegistryServer:
    """A started registry server: the gRPC server, its port, its health servicer and its database."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        health_servicer: HealthServicer,
        db: pw.Database,
        servicer: ModelRegistryServicer,
        calls: budget.CallBudget,
        tokens: auth.TokenFile | None = None,
        http: Any = None,
    ):
        self.server = server
        self.http = http  # gateway.HttpServer, or None with --no-http
        self.http_port = http.port if http is not None else None
        self.tokens = tokens
        self.port = port
        self.health = health_servicer
        self.db = db
        self.servicer = servicer
        self.calls = calls
        self._purged_at = 0.0
        self._swept_at = time.monotonic()
        self._stopping = threading.Event()
        self._serving: bool | None = None
        self._watcher = threading.Thread(target=self._watch_database, name="health", daemon=True)
        self._listener = threading.Thread(target=servicer.store.events.listen, name="listen", daemon=True)

    def _watch_database(self) -> None:
        """Health follows the database: NOT_SERVING while it cannot be reached, SERVING once it answers."""
        while not self._stopping.is_set():
            serving = database.ping(self.db)
            metrics.sample(self.db, *self.servicer.store.events.watch_state())
            if serving != self._serving:
                (log.info if serving else log.warning)("database %s", "reachable" if serving else "unreachable")
                self.set_serving(serving)
            if serving and time.monotonic() - self._purged_at > PURGE_INTERVAL_S:
                self._purge_request_records()
            if serving and time.monotonic() - self._swept_at > STORAGE_SWEEP_INTERVAL_S:
                self.sweep_storage()
            self._stopping.wait(HEALTH_PROBE_INTERVAL_S)

    def _purge_request_records(self) -> None:
        """Forgets request_ids past their retention (every replica may do it; deleting twice is harmless)."""
        try:
            with self.db.connection_context():
                purged = self.servicer.store.tx.purge_request_records()
            self._purged_at = time.monotonic()
            if purged:
                log.info("forgot %d request ids past their retention", purged)
        except pw.PeeweeException as error:
            log.warning("could not purge old request ids: %s", error)

    def sweep_storage(self, *, collect: bool = True) -> None:
        """Storage upkeep (stale temporary files, the trash, expired holds, unreferenced blobs and, at
        start-up, an earlier release's files): at start-up and every STORAGE_SWEEP_INTERVAL_S. A
        failure is logged and tried again at the next sweep."""
        self._swept_at = time.monotonic()
        try:
            with self.db.connection_context():
                done = self.servicer.files.sweep(collect=collect)
        except (OSError, pw.PeeweeException) as error:
            log.warning("could not sweep the checkpoint file storage (tried again later): %s", error)
            return
        if any(done.values()):
            log.info("swept the checkpoint file storage: %s", ", ".join(f"{n} {what}" for what, n in done.items() if n))

    def set_serving(self, serving: bool) -> None:
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def reload_tokens(self) -> bool:
        """Reads the token file again (on SIGHUP); False, keeping the old tokens, when it is invalid.
        Streams opened with a token that no longer grants what it granted are ended at once."""
        tokens = self.tokens
        if tokens is None or not tokens.reload():
            return False
        for ticket in self.calls.streams():
            principal = ticket.principal
            if ticket.credential is not None and principal is not None and not tokens.grants(ticket.credential, principal):
                log.info("ending a %s stream of %r: its token was revoked", ticket.kind, principal.name)
                ticket.end(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED: the token of this stream was revoked")
        return True

    def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets those in flight finish for up to `grace` seconds, closes the database."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.servicer.store.events.stop()
        if self.http is not None:  # stops listening at once; its calls finish beside gRPC's
            self.http.server.should_exit = True
            self.http.server.config.timeout_graceful_shutdown = grace or 0  # None: cut at once, as gRPC does
        self.server.stop(grace).wait()  # calls cut at the end of the grace end CANCELLED (the client resumes watches)
        if self.http is not None:
            self.http.stop(grace)
        self.calls.shutdown()
        database.close_pool(self.db)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the server's certificate chain and key, and of the CA its clients' certificates
    must be signed by (mutual TLS) when `client_ca` is set."""

    cert: str
    key: str
    client_ca: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        client_ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


def build_server(
    database_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_workers: int = DEFAULT_WORKERS,
    reuse_port: bool = False,
    watch_poll_interval: float = WATCH_POLL_INTERVAL_S,
    max_watchers: int = MAX_WATCHERS,
    max_uploads: int = MAX_UPLOADS,
    max_downloads: int = MAX_DOWNLOADS,
    max_streams_per_caller: int = MAX_STREAMS_PER_CALLER,
    stream_idle_timeout: float = STREAM_IDLE_TIMEOUT_S,
    storage: Storage | None = None,
    auth_tokens: str | None = None,
    allow_unauthenticated: bool = False,
    tls: TlsFiles | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
    sqlite_synchronous: str = "full",
    private_address: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    with_metrics: bool = True,
    http_port: int | None = None,
) -> RegistryServer:
    """Opens and migrates the database, then starts a server on host:port (0 picks a free port).
    Checkpoint files go to `storage`, by default a directory beside the SQLite file (see open_storage).

    With `reuse_port`, several processes may bind the same port and the kernel spreads connections
    over them; without it, binding a port that is taken fails instead of silently sharing it.
    Unary calls run on `max_workers` threads, at most `max_concurrent_rpcs` of them in progress
    (running or queued); each kind of stream runs on a pool of its own, capped by its `max_*` per
    process and by `max_streams_per_caller` per principal (see budget.py), so no stream can take the
    capacity of unary calls; a stream blocked on its peer for `stream_idle_timeout` seconds is ended.
    Stale temporary files of uploads are swept, and an earlier release's files adopted, before it
    serves.
    Without `auth_tokens` (a token file) every caller may do everything, so only a loopback `host`
    is served unless `allow_unauthenticated`; ValueError says so. `private_address` (e.g.
    unix:/path) is served as well, in plaintext: a worker's parent probes its health there.
    `with_metrics` turns this process's metrics on (metrics.py; they stay on for the process).
    Health is NOT_SERVING until the database is migrated and has answered.
    With `http_port` (0 picks a free one), the HTTP/JSON gateway (gateway.py) serves the same service
    on that port of `host`, through the same gate, with the same TLS certificate."""
    if with_metrics:
        metrics.configure()
    auth.check_exposure(host, auth_tokens is not None, allow_unauthenticated)
    tokens = auth.TokenFile(auth_tokens) if auth_tokens is not None else None
    credentials = tls.credentials() if tls is not None else None
    storage = storage or open_storage(database_url)
    db = database.connect(database_url, max_connections=max_workers + 4, sqlite_synchronous=sqlite_synchronous)
    database.migrate(db)
    metrics.time_connections(db)
    with db.connection_context():
        metrics.schema_version(database.schema_version(db)[0])
    per_caller = max_streams_per_caller
    calls = budget.CallBudget(
        {
            budget.UNARY: budget.Limit(max_concurrent_rpcs, max_concurrent_rpcs),
            budget.WATCH: budget.Limit(max_watchers, per_caller),
            budget.UPLOAD: budget.Limit(max_uploads, per_caller),
            budget.DOWNLOAD: budget.Limit(max_downloads, per_caller),
            budget.REFLECTION: budget.Limit(MAX_REFLECTION_STREAMS, MAX_REFLECTION_STREAMS),
            budget.HEALTH_WATCH: budget.Limit(MAX_HEALTH_WATCHERS, MAX_HEALTH_WATCHERS),
        },
        idle_timeout=stream_idle_timeout,
        unary_threads=max_workers,
    )
    # No maximum_concurrent_rpcs: the interceptor admits calls (with an ErrorInfo reason when it
    # refuses), and a refusal by gRPC after admission would never release the call's ticket.
    interceptor = RegistryInterceptor(SERVICE_NAME, tokens, calls)
    server = grpc.server(
        calls.pools[budget.UNARY],
        interceptors=[interceptor],
        options=[("grpc.so_reuseport", int(reuse_port)), ("grpc.max_receive_message_length", max_request_bytes)],
    )
    servicer = ModelRegistryServicer(
        RegistryStore(db, EventLog(db, watch_poll_interval)), storage, max_upload_bytes=max_upload_bytes
    )
    registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server(servicer, server)
    health_servicer = HealthServicer()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older releases returned 0: the port is taken
        bound = 0
    if bound and private_address is not None and not server.add_insecure_port(private_address):
        bound = 0
    if not bound:
        calls.shutdown()
        database.close_pool(db)
        raise OSError(f"cannot bind {host}:{port}")
    http = None
    if http_port is not None:
        from . import gateway, openapi  # imported only when serving HTTP

        app = gateway.Gateway(servicer, interceptor, max_request_bytes=max_request_bytes, openapi=openapi.render())
        try:
            http = gateway.HttpServer(app, host, http_port, reuse_port=reuse_port, tls=tls)
        except OSError:
            calls.shutdown()
            database.close_pool(db)
            raise
    running = RegistryServer(server, bound, health_servicer, db, servicer, calls, tokens, http)
    running.sweep_storage(collect=False)  # blobs are listed by the periodic sweeps only: a start stays quick
    server.start()
    if http is not None:
        http.start()
    running.set_serving(database.ping(db))
    running._watcher.start()
    if not database.is_sqlite(db):
        running._listener.start()
    return running
