"""Serving workflows end to end, through the real server, client and CLI: register-and-promote in one
retry-safe call, aliases, and WatchEvents across replicas, disconnects and restarts."""

from __future__ import annotations

import itertools
import socket
import threading
import time

import grpc
import pytest
from modelregistry.v1 import checkpoint_pb2
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import (
    AlreadyExistsError,
    EventKind,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    Registry,
    ResourceExhaustedError,
    UnavailableError,
)
from registry_server import db as database
from registry_server.server import build_server
from registry_server.store import RegistryStore
from tests.servers import ServerProcess, wait_for


class AnswerDroppingProxy:
    """A TCP proxy in front of a server. Once armed, it lets the next request through but swallows the
    answer and cuts the connection when the answer (bytes containing `marker`) arrives: what a
    network failure between the server's commit and the client looks like. Disarms itself after."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker = b""
        self.dropped_answers = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        swallowed = b""
        try:
            while data := source.recv(65536):
                if answers and self.marker:
                    swallowed += data
                    if self.marker in swallowed:
                        self.marker, self.dropped_answers = b"", self.dropped_answers + 1
                        break
                    continue
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_register_and_promote_in_one_retry_safe_call(registry_server) -> None:
    """A pipeline registers a new checkpoint as a version of a model that does not exist yet and
    points "production" at it, in one call. The first answer is lost after the server committed; the
    client retries on UNAVAILABLE by itself, and gets the same version back: nothing is registered twice."""
    proxy = AnswerDroppingProxy(registry_server.port)
    try:
        with Registry(f"127.0.0.1:{proxy.port}", timeout=30) as r:
            assert r.get_model_labels() == []  # connected
            proxy.marker = b"mnist_cnn"
            version = r.register_version(
                "mnist_cnn",
                checkpoint={"experiment_id": 7, "metrics": {"loss": 0.09}},
                create_model_if_missing=True,
                aliases=["production"],
            )
            assert proxy.dropped_answers == 1
            assert (version.version, version.aliases, version.checkpoint.metrics) == (1, ["production"], {"loss": 0.09})
            model = r.get_model("mnist_cnn")
            assert model.num_versions == 1
            assert len(r.get_checkpoints(experiment_id=7)) == 1
            assert model.get_version(alias="production").checkpoint.uuid == version.checkpoint.uuid
            kinds = [e.kind for e in itertools.islice(r.watch(after=0, reconnect=False), 4)]
    finally:
        proxy.close()
    assert kinds == [EventKind.MODEL_CREATED, EventKind.CHECKPOINT_CREATED, EventKind.MODEL_VERSION_CREATED, EventKind.ALIAS_SET]


def test_request_id_replays_and_refuses_a_different_request(registry: Registry) -> None:
    first = registry.register_version(
        "m", checkpoint={"experiment_id": 1}, create_model_if_missing=True, aliases=["production"], request_id="run-1"
    )
    again = registry.register_version(
        "m", checkpoint={"experiment_id": 1}, create_model_if_missing=True, aliases=["production"], request_id="run-1"
    )
    assert (again.version, again.checkpoint.uuid) == (first.version, first.checkpoint.uuid)
    with pytest.raises(AlreadyExistsError) as excinfo:
        registry.register_version("m", checkpoint={"experiment_id": 2}, request_id="run-1")
    assert excinfo.value.reason == "REQUEST_ID_REUSED"
    assert excinfo.value.metadata == {"request_id": "run-1", "method": "CreateModelVersion"}
    model = registry.create_model("n", request_id="make-n")
    assert registry.create_model("n", request_id="make-n").creation_time == model.creation_time
    ckpt = registry.create_checkpoint(experiment_id=3, request_id="ck")
    assert registry.create_checkpoint(experiment_id=3, request_id="ck").uuid == ckpt.uuid
    assert registry.get_model("m").num_versions == 1
    with pytest.raises(InvalidArgumentError) as excinfo:
        registry.register_version("m", "not-a-uuid", checkpoint={})
    assert excinfo.value.reason == "CHECKPOINT_REQUIRED"


def test_aliases_through_the_client(registry: Registry) -> None:
    model = registry.create_model("m")
    ckpt = registry.create_checkpoint()
    for _ in range(2):
        model.register_version(ckpt.uuid)
    assert model.set_alias("production", 1).aliases == ["production"]
    assert model.set_alias("production", 2).version == 2
    assert model.get_version(alias="production").version == 2
    assert model.get_version(1).aliases == []
    with pytest.raises(FailedPreconditionError) as excinfo:
        model.get_version(2).delete()
    assert excinfo.value.reason == "VERSION_HAS_ALIASES"
    with pytest.raises(InvalidArgumentError) as excinfo:
        model.set_alias("42", 1)
    assert excinfo.value.reason == "INVALID_ALIAS"
    model.delete_alias("production")
    with pytest.raises(NotFoundError) as excinfo:
        model.get_version(alias="production")
    assert excinfo.value.reason == "ALIAS_NOT_FOUND"
    assert [(c.previous_version, c.version) for c in model.get_alias_history()] == [(0, 1), (1, 2), (2, 0)]


def test_watch_streams_history_then_live_events_and_cancel_frees_the_slot(database_url: str) -> None:
    """With room for one watcher: a second is RESOURCE_EXHAUSTED; breaking out of the loop cancels
    the stream and frees the room; a filtered watch sees only its model and kinds."""
    server = build_server(database_url, max_workers=4, max_watchers=1, watch_poll_interval=0.1)
    try:
        with Registry(f"127.0.0.1:{server.port}", timeout=10) as r:
            model = r.create_model("watched")
            r.create_model("other")
            stream = r.watch(models=["watched"], kinds=[EventKind.ALIAS_SET, EventKind.MODEL_VERSION_CREATED])
            version = model.register_version(r.create_checkpoint().uuid, aliases=["production"])
            first = next(stream)
            assert (first.kind, first.model_name, first.version) == (EventKind.MODEL_VERSION_CREATED, "watched", 1)
            with pytest.raises(ResourceExhaustedError) as excinfo:
                next(r.watch(reconnect=False))
            assert excinfo.value.reason == "TOO_MANY_STREAMS"
            model.set_alias("staging", version.version)  # live, after the stream caught up
            assert [(e.alias, e.sequence) for e in (next(stream), next(stream))] == [("production", 5), ("staging", 6)]
            stream.close()  # cancels the call; the server frees the slot when it notices
            for _ in range(100):
                try:
                    assert next(r.watch(after=5, reconnect=False)).alias == "staging"
                    break
                except ResourceExhaustedError:
                    time.sleep(0.1)
            else:
                pytest.fail("the cancelled stream's slot was never freed")
            # The stream above was dropped after one event: its slot is freed once the server notices.
            wait_for(lambda: server.calls.active("watch") == 0)
            with pytest.raises(grpc.RpcError) as rpc_error:
                next(iter(r._stub.WatchEvents(pb.WatchEventsRequest(kinds=[99]))))
            assert rpc_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=5)


def test_a_stopping_server_ends_its_streams_with_unavailable(registry_server) -> None:
    with Registry(f"127.0.0.1:{registry_server.port}", timeout=10) as r:
        r.create_model("m")
        stream = r.watch(reconnect=False)
        assert next(stream).kind == EventKind.MODEL_CREATED
        stopper = threading.Thread(target=registry_server.stop, args=(30,))
        stopper.start()
        with pytest.raises(UnavailableError) as excinfo:
            next(stream)
        stopper.join(30)
        assert not stopper.is_alive()
    assert excinfo.value.reason == "SERVER_STOPPING"


def test_watchers_see_every_promotion_once_across_replicas_disconnects_and_restarts(database_url: str) -> None:
    """Two server processes on one database. Two pipelines register-and-promote versions through both
    (round robin). A watcher follows WatchEvents, disconnects every few events and resumes after the
    last sequence it saw, and rides through one server being stopped and another one started. It must
    see every event exactly once, in sequence order, and each model's promotions as an unbroken chain."""
    per_writer = 25
    with ServerProcess(database_url, "--watch-poll-interval", "0.1") as first, ServerProcess(
        database_url, "--watch-poll-interval", "0.1"
    ) as second:
        target = f"ipv4:{first.target},{second.target}"
        seen: list = []
        done_writing = threading.Event()
        failures: list[BaseException] = []

        def writer(model_name: str) -> None:
            try:
                with Registry(target, timeout=30) as r:
                    for i in range(per_writer):
                        r.register_version(
                            model_name, checkpoint={"batch_number": i}, create_model_if_missing=True, aliases=["production"]
                        )
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)

        def watcher() -> None:
            with Registry(target, timeout=30) as r:
                while not (done_writing.is_set() and seen and seen[-1].sequence >= final[0]):
                    after = seen[-1].sequence if seen else 0
                    for count, event in enumerate(r.watch(after=after), start=1):
                        seen.append(event)
                        if count == 7 or (done_writing.is_set() and event.sequence >= final[0]):
                            break  # disconnect; resume after the last one seen

        final = [1 << 62]
        writers = [threading.Thread(target=writer, args=(name,), daemon=True) for name in ("alpha", "beta")]
        watching = threading.Thread(target=watcher, daemon=True)
        watching.start()
        for thread in writers:
            thread.start()
        deadline = time.monotonic() + 60
        while len(seen) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.stop() == 0  # graceful stop while a watcher and writers may be on it
        with ServerProcess(database_url):  # a restarted replica on the same database
            for thread in writers:
                thread.join(timeout=120)
            assert failures == []
            # A last event, numbered after everything the pipelines wrote, tells the watcher to stop.
            final[0] = stored_events(database_url)[-1].sequence + 1
            done_writing.set()
            with Registry(second.target, timeout=30) as r:
                r.create_model("the_end")
            watching.join(timeout=60)
            assert not watching.is_alive()
            stored = stored_events(database_url)
    sequences = [e.sequence for e in seen]
    assert sequences == list(range(1, len(stored) + 1)), "gap, duplicate or disorder"
    assert [(e.kind, e.model_name, e.version, e.alias) for e in seen] == [
        (e.kind, e.model_name, e.version, e.alias) for e in stored
    ]
    assert len(stored) == 2 * (1 + 3 * per_writer) + 1  # per model: created, then checkpoint, version, alias
    for name in ("alpha", "beta"):
        promotions = [(e.previous_version, e.version) for e in seen if e.model_name == name and e.kind == EventKind.ALIAS_SET]
        assert promotions == [(v - 1, v) for v in range(1, per_writer + 1)]


def stored_events(database_url: str) -> list:
    """The event log as the database holds it (read directly, not through a server)."""
    db = database.connect(database_url)
    try:
        with db.connection_context():
            rows, _ = RegistryStore(db).events.after(0, limit=1_000_000)
            return rows
    finally:
        db.close_all()


def test_sigkill_mid_registration_leaves_whole_registrations_or_nothing(database_url: str) -> None:
    """Pipelines register-and-promote fresh models (model, checkpoint, version, alias in one call) while
    the server is SIGKILLed. Afterwards every attempt is either all there or not there at all: no
    model without its version, no checkpoint without its model, no event without its change."""
    attempts = 200
    server = ServerProcess(database_url)
    started: list[int] = []
    lock = threading.Lock()

    def pipeline(worker: int) -> None:
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.ModelRegistryServiceStub(channel)
        try:
            for i in range(worker, attempts, 4):
                with lock:
                    started.append(i)
                stub.CreateModelVersion(
                    pb.CreateModelVersionRequest(
                        model_name=f"model-{i}", checkpoint=checkpoint_pb2.Checkpoint(batch_number=i),
                        create_model_if_missing=True, aliases=["production"],
                    ),
                    timeout=10,
                )
        except grpc.RpcError:
            pass  # the server died under this call
        finally:
            channel.close()

    pipelines = [threading.Thread(target=pipeline, args=(w,), daemon=True) for w in range(4)]
    for thread in pipelines:
        thread.start()
    deadline = time.monotonic() + 60
    while len(started) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    for thread in pipelines:
        thread.join(timeout=30)
    with ServerProcess(database_url) as restarted, Registry(restarted.target, timeout=30) as r:
        models = {m.name: m for m in r.get_models()}
        batches = sorted(c.batch_number for c in r.get_checkpoints())
        assert 0 < len(models) < attempts
        for name, model in models.items():
            version = model.get_version(alias="production")
            assert (model.num_versions, version.version, version.checkpoint.batch_number) == (1, 1, int(name[6:]))
        assert batches == sorted(int(name[6:]) for name in models)
    kinds = [(e.kind, e.model_name) for e in stored_events(database_url)]
    assert len(kinds) == 4 * len(models)
    assert {name for kind, name in kinds if kind == EventKind.MODEL_CREATED} == set(models)


def test_postgresql_notify_wakes_watchers_of_other_replicas(database_url: str) -> None:
    """With polling all but off (every 60 s), a watcher on one replica still hears at once of a change
    committed through another: PostgreSQL's NOTIFY wakes it."""
    if database_url.startswith("sqlite"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite replicas rely on polling")
    slow_poll = ("--watch-poll-interval", "60")
    with ServerProcess(database_url, *slow_poll) as writer, ServerProcess(database_url, *slow_poll) as reader:
        with Registry(reader.target, timeout=30) as r, Registry(writer.target, timeout=30) as w:
            w.create_model("first")
            stream = r.watch(reconnect=False)
            assert next(stream).model_name == "first"  # the stream is now waiting for live events
            received: list = []
            follower = threading.Thread(target=lambda: received.append(next(stream)), daemon=True)
            follower.start()
            time.sleep(0.5)  # let the stream settle into its wait before the write
            w.create_model("second")
            follower.join(timeout=20)  # far below the 60 s poll: only a notification explains it
            assert [e.model_name for e in received] == ["second"]
            stream.close()
