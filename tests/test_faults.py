"""Transient database faults: PostgreSQL stopped and restarted, connections dropped, SQLite busy.
Each surfaces as UNAVAILABLE with a reason (never INTERNAL), health follows the database, and the
server recovers by itself."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import Registry
from registry_server import db as database
from registry_server import server as server_module
from registry_server.server import build_server
from registry_server.storage import LocalStorage
from tests import pgcluster

SERVICE = "modelregistry.v1.ModelRegistryService"


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason of a call that must fail."""
    with pytest.raises(grpc.RpcError) as excinfo:
        call()
    status = rpc_status.from_call(excinfo.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    return excinfo.value.code(), info.reason


def wait_for_health(channel: grpc.Channel, expected: int, timeout: float = 20) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while True:
        status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
        if status == expected:
            return
        assert time.monotonic() < deadline, f"health stayed {status}, expected {expected}"
        time.sleep(0.2)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[pgcluster.PrivateCluster]:
    reason = pgcluster.available()
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(server_module, "HEALTH_PROBE_INTERVAL_S", 0.2)
    private = pgcluster.PrivateCluster()
    private.start()
    try:
        yield private
    finally:
        private.destroy()


def test_postgresql_restart(cluster: pgcluster.PrivateCluster, tmp_path) -> None:
    running = build_server(cluster.url, storage=LocalStorage(tmp_path))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ModelRegistryServiceStub(channel)
            stub.CreateModel(pb.CreateModelRequest(name="m"), timeout=10)
            cluster.stop()
            # Plain stubs, without the client's retries: every call fails cleanly, none hangs.
            for call in (
                lambda: stub.GetModel(pb.GetModelRequest(name="m"), timeout=10),
                lambda: stub.CreateModel(pb.CreateModelRequest(name="n"), timeout=10),
                lambda: stub.ListModels(pb.ListModelsRequest(), timeout=10),
            ):
                assert failure(call) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
            wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            cluster.start()
            wait_for_health(channel, health_pb2.HealthCheckResponse.SERVING)
            # Recovered by itself: the first calls after the restart succeed.
            assert stub.GetModel(pb.GetModelRequest(name="m"), timeout=10).model.name == "m"
            assert stub.CreateModel(pb.CreateModelRequest(name="n"), timeout=10).model.name == "n"
            assert not failure(lambda: stub.GetModel(pb.GetModelRequest(name="absent"), timeout=10))[1].startswith("DATABASE")
    finally:
        running.stop(grace=None)


def test_dropped_connections_do_not_reach_the_caller(cluster: pgcluster.PrivateCluster, tmp_path) -> None:
    """The database drops every connection of the server (a failover, a proxy restart): the pool
    discards the dead ones at check-out, and reads and writes alike go on, none refused."""
    running = build_server(cluster.url, storage=LocalStorage(tmp_path))
    try:
        with Registry(f"127.0.0.1:{running.port}", timeout=20) as registry:
            registry.create_model("m")
            for round_ in range(3):
                for _ in range(5):
                    assert registry.get_model("m").name == "m"
                cluster.terminate_other_connections()
                assert [m.name for m in registry.get_models()] == ["m"]
                assert registry.get_model("m").add_metadata({"k": round_}).metadata == {"k": round_}
                registry.create_checkpoint()  # a create, which the client never retries
    finally:
        running.stop(grace=None)


def test_sqlite_busy_is_unavailable_and_writes_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_S", 0.3)
    running = build_server(f"sqlite:///{tmp_path}/r.db")
    blocker = sqlite3.connect(f"{tmp_path}/r.db", isolation_level=None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ModelRegistryServiceStub(channel)
            blocker.execute("BEGIN EXCLUSIVE")
            code, reason = failure(lambda: stub.CreateModel(pb.CreateModelRequest(name="m"), timeout=10))
            assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY")
            blocker.execute("ROLLBACK")
            assert stub.ListModels(pb.ListModelsRequest(), timeout=10).total_size == 0
            assert stub.CreateModel(pb.CreateModelRequest(name="m"), timeout=10).model.name == "m"
    finally:
        blocker.close()
        running.stop(grace=None)
