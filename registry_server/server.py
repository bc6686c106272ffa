"""Building the gRPC server: the registry service, health and reflection, on one database."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
import peewee as pw
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelregistry.v1 import registry_service_pb2, registry_service_pb2_grpc

from . import db as database
from .servicer import ModelRegistryServicer
from .store import RegistryStore

log = logging.getLogger(__name__)

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name
DEFAULT_WORKERS = 16
MAX_CONCURRENT_RPCS = 256
HEALTH_PROBE_INTERVAL_S = 2.0


class RegistryServer:
    """A started registry server: the gRPC server, its port, its health servicer and its database."""

    def __init__(self, server: grpc.Server, port: int, health_servicer: health.HealthServicer, db: pw.Database):
        self.server = server
        self.port = port
        self.health = health_servicer
        self.db = db
        self._stopping = threading.Event()
        self._serving: bool | None = None
        self._watcher = threading.Thread(target=self._watch_database, name="health", daemon=True)

    def _watch_database(self) -> None:
        """Health follows the database: NOT_SERVING while it cannot be reached, SERVING once it answers."""
        while not self._stopping.is_set():
            serving = database.ping(self.db)
            if serving != self._serving:
                (log.info if serving else log.warning)("database %s", "reachable" if serving else "unreachable")
                self.set_serving(serving)
            self._stopping.wait(HEALTH_PROBE_INTERVAL_S)

    def set_serving(self, serving: bool) -> None:
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets those in flight finish for up to `grace` seconds, closes the database."""
        self._stopping.set()
        self.set_serving(False)
        self.server.stop(grace).wait()
        self.db.close_all() if hasattr(self.db, "close_all") else self.db.close()


def build_server(
    database_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_workers: int = DEFAULT_WORKERS,
    reuse_port: bool = False,
    sqlite_synchronous: str = "full",
) -> RegistryServer:
    """Opens and migrates the database, then starts a server on host:port (0 picks a free port).

    With `reuse_port`, several processes may bind the same port and the kernel spreads connections
    over them; without it, binding a port that is taken fails instead of silently sharing it."""
    db = database.connect(database_url, max_connections=max_workers + 4, sqlite_synchronous=sqlite_synchronous)
    database.migrate(db)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        options=[("grpc.so_reuseport", int(reuse_port))],
    )
    registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server(
        ModelRegistryServicer(RegistryStore(db)), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    running = RegistryServer(server, bound, health_servicer, db)
    running.set_serving(database.ping(db))
    running._watcher.start()
    return running
