"""Several server processes on one database, and servers killed mid-write: no acknowledged write is
lost, no version number is handed out twice, and no failed call leaves anything behind."""

from __future__ import annotations

import itertools
import random
import threading
from concurrent import futures

import grpc
import pytest
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from tests.servers import ServerProcess

MODELS = ["alpha", "beta", "gamma"]


def registry(target: str) -> tuple[grpc.Channel, pb_grpc.ModelRegistryServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, pb_grpc.ModelRegistryServiceStub(channel)


def prepare(target: str) -> str:
    channel, stub = registry(target)
    with channel:
        for name in MODELS:
            stub.CreateModel(pb.CreateModelRequest(name=name), timeout=10)
        return stub.CreateCheckpoint(pb.CreateCheckpointRequest(), timeout=10).checkpoint.uuid


def stored_versions(target: str) -> dict[str, list[tuple[int, str]]]:
    """model -> [(version, comment)] as stored, oldest first."""
    channel, stub = registry(target)
    with channel:
        result = {}
        for name in MODELS:
            versions, token = [], ""
            while True:
                page = stub.ListModelVersions(
                    pb.ListModelVersionsRequest(model_name=name, page_size=1000, page_token=token, order_by=1), timeout=30
                )
                versions += [(v.version, v.comment) for v in page.model_versions]
                token = page.next_page_token
                if not token:
                    break
            result[name] = versions
        return result


def assert_consistent(stored: dict, acknowledged: dict, failed: set) -> None:
    """Versions are exactly 1..N; every acknowledged call is there under its number; anything else
    stored is a call whose outcome the client never heard (it failed as the server died)."""
    for name, versions in stored.items():
        assert [v for v, _ in versions] == list(range(1, len(versions) + 1)), f"{name}: gap or duplicate"
    by_comment = {comment: (name, v) for name, versions in stored.items() for v, comment in versions}
    for comment, where in acknowledged.items():
        assert by_comment.get(comment) == where, f"acknowledged {comment} {where} lost"
    assert set(by_comment) - set(acknowledged) <= failed


def test_replicas_share_one_database(database_url: str) -> None:
    """Two servers (one of them two worker processes) on one database, twelve client threads spread
    over them, registering versions of the same three models at once."""
    threads, per_thread = 12, 30
    with ServerProcess(database_url) as first, ServerProcess(database_url, workers=2) as second:
        uuid = prepare(first.target)
        targets = [first.target, second.target]
        acknowledged: dict[str, tuple[str, int]] = {}
        failed: set[str] = set()
        lock = threading.Lock()

        def client(worker: int) -> None:
            channels = [registry(t) for t in targets]
            try:
                for i in range(per_thread):
                    name, comment = MODELS[(worker + i) % 3], f"w{worker}-{i}"
                    _, stub = channels[(worker + i) % 2]
                    request = pb.CreateModelVersionRequest(model_name=name, checkpoint_uuid=uuid, comment=comment)
                    try:
                        version = stub.CreateModelVersion(request, timeout=60).model_version.version
                        with lock:
                            acknowledged[comment] = (name, version)
                    except grpc.RpcError:
                        with lock:
                            failed.add(comment)
            finally:
                for channel, _ in channels:
                    channel.close()

        with futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(client, range(threads)))
        stored = stored_versions(second.target)
        assert not failed, f"{len(failed)} registrations failed"
        assert len(acknowledged) == threads * per_thread
        assert_consistent(stored, acknowledged, failed)
        assert sum(len(v) for v in stored.values()) == threads * per_thread


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_under_write_load_loses_nothing_acknowledged(database_url: str, round_: int) -> None:
    """A server under a steady write load is killed with SIGKILL at a random moment and restarted on
    the same database, twice in each run; afterwards every acknowledged write is intact and the
    version sequence continues without a gap."""
    rng = random.Random(round_)
    acknowledged: dict[str, tuple[str, int]] = {}
    failed: set[str] = set()
    counter = itertools.count()
    lock = threading.Lock()
    server = ServerProcess(database_url)
    uuid = prepare(server.target)
    try:
        for _crash in range(2):
            stop = threading.Event()

            def writer(worker: int, target: str = server.target) -> None:
                channel, stub = registry(target)
                with channel:
                    for _ in range(2000):  # bounded; the kill ends it long before
                        if stop.is_set():
                            return
                        comment = f"c{next(counter)}"
                        name = MODELS[worker % 3]
                        request = pb.CreateModelVersionRequest(model_name=name, checkpoint_uuid=uuid, comment=comment)
                        try:
                            version = stub.CreateModelVersion(request, timeout=10).model_version.version
                            with lock:
                                acknowledged[comment] = (name, version)
                        except grpc.RpcError:
                            with lock:
                                failed.add(comment)
                            return

            with futures.ThreadPoolExecutor(6) as pool:
                running = [pool.submit(writer, w) for w in range(6)]
                threading.Event().wait(rng.uniform(0.3, 1.5))
                server.kill()
                stop.set()
                for job in running:
                    job.result(timeout=60)
            assert acknowledged, "no write was acknowledged before the kill"
            server = ServerProcess(database_url)
            assert_consistent(stored_versions(server.target), acknowledged, failed)
        # The counters survived: the next registration continues each sequence.
        channel, stub = registry(server.target)
        with channel:
            for name in MODELS:
                latest = stub.GetModel(pb.GetModelRequest(name=name), timeout=10).model.latest_version
                request = pb.CreateModelVersionRequest(model_name=name, checkpoint_uuid=uuid)
                assert stub.CreateModelVersion(request, timeout=10).model_version.version == latest + 1
        print(f"round {round_}: {len(acknowledged)} acknowledged writes, {len(failed)} cut off, 2 crashes survived")
    finally:
        server.kill()


def test_client_spreads_over_replicas_and_survives_one_dying(database_url: str) -> None:
    """The client's round_robin policy over two replicas: calls go on when one of them is killed."""
    from registry_client import Registry

    first, second = ServerProcess(database_url), ServerProcess(database_url)
    try:
        target = "ipv4:" + ",".join([first.target, second.target])
        with Registry(target, timeout=20) as registry:
            registry.create_model("m")
            for _ in range(20):
                assert registry.get_model("m").name == "m"
            first.kill()
            for _ in range(20):
                assert registry.get_model("m").name == "m"  # reads retried on the live replica
            ckpt = registry.create_checkpoint()
            assert registry.get_model("m").register_version(ckpt.uuid).version == 1
    finally:
        first.kill()
        second.stop()
