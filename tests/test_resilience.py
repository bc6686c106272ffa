"""Nothing a caller does can wedge the server or take the capacity of other callers, and SIGTERM
always ends it (issue 10: health Watch churn, idle streams, worker crashes and hangs, graceful stops)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from modelregistry.v1 import checkpoint_pb2
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import Registry
from registry_server.server import build_server
from registry_server.storage import LocalStorage

from .conftest import TOKENS
from .servers import ServerProcess, console_script, wait_for

# How long the health Watch churn runs against a server while GetModel keeps being answered.
CHURN_SECONDS = float(os.environ.get("MODEL_REGISTRY_CHURN_SECONDS", "60"))


def bearer(who: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[who][0]}"),)


def churn_health_watch(target: str, stop: threading.Event, cycles: Counter) -> None:
    """What the attack did: open a Watch, read its first answer, cancel it; again and again."""
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            try:
                stream = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
                next(stream)
                stream.cancel()
                cycles["ok"] += 1
            except grpc.RpcError as error:  # refused while the Watch budget is full: still no wedge
                cycles[error.code().name] += 1


def test_health_watch_churn_cannot_wedge_the_server_and_sigterm_ends_it(tmp_path: Path, tokens_file: str) -> None:
    """Two threads churn health Watch streams (no token needed) for a minute against a server with
    auth on, while an admin's GetModel keeps being answered; then SIGTERM ends the server, exit 0."""
    with ServerProcess(f"sqlite:///{tmp_path}/registry.db", "--auth-tokens", tokens_file, "--grace", "2") as server:
        with Registry(server.target, token=TOKENS["admin"][0], timeout=10) as registry:
            registry.create_model("steady")
            stop, cycles = threading.Event(), Counter()
            churners = [threading.Thread(target=churn_health_watch, args=(server.target, stop, cycles)) for _ in range(2)]
            for thread in churners:
                thread.start()
            latencies = []
            try:
                deadline = time.monotonic() + CHURN_SECONDS
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    assert registry.get_model("steady").name == "steady"  # a 10 s deadline each
                    latencies.append(time.perf_counter() - started)
            finally:
                stop.set()
                for thread in churners:
                    thread.join(timeout=30)
            with grpc.insecure_channel(server.target) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
        print(f"\nhealth Watch churn: {cycles['ok']} cycles in {CHURN_SECONDS:.0f}s ({dict(cycles)}); "
              f"GetModel answered {len(latencies)} times, p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms")
        assert cycles["ok"] >= 100  # the attack really ran (it wedged the old server within ~20 cycles)
        assert server.stop(timeout=2 + 5 + 20) == 0


def test_health_status_changes_during_watch_churn_cannot_wedge_the_server(tmp_path: Path) -> None:
    """Status changes (drain, database up and down) while Watch streams open and close."""
    running = build_server(f"sqlite:///{tmp_path}/registry.db", storage=LocalStorage(tmp_path / "files"))
    target = f"127.0.0.1:{running.port}"
    stop, cycles = threading.Event(), Counter()
    churners = [threading.Thread(target=churn_health_watch, args=(target, stop, cycles)) for _ in range(2)]
    for thread in churners:
        thread.start()
    try:
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for flip in range(400):
                running.set_serving(flip % 2 == 0)
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        stop.set()
        for thread in churners:
            thread.join(timeout=30)
        running.stop(grace=2)
    assert cycles["ok"] >= 50


def test_health_watch_sends_changes_and_ends_on_shutdown(tmp_path: Path) -> None:
    running = build_server(f"sqlite:///{tmp_path}/registry.db", storage=LocalStorage(tmp_path / "files"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            running.set_serving(False)
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            running.set_serving(True)
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            stopper = threading.Thread(target=running.stop, args=(30,))
            stopper.start()
            assert [answer.status for answer in stream] == [health_pb2.HealthCheckResponse.NOT_SERVING]
            stopper.join(timeout=30)
            assert not stopper.is_alive()  # the stream ended: the stop did not wait out its grace
    finally:
        running.stop(grace=0)


class Blocked:
    """A request iterator that sends `first` and then nothing until released."""

    def __init__(self, *first: object) -> None:
        self.first = list(first)
        self.release = threading.Event()

    def __iter__(self) -> Iterator[object]:
        yield from self.first
        self.release.wait(120)


@pytest.fixture
def small_server(tmp_path: Path, tokens_file: str) -> Iterator[object]:
    """A server with authentication, four threads for unary calls, small stream caps and a two-second
    idle timeout."""
    running = build_server(
        f"sqlite:///{tmp_path}/registry.db",
        max_workers=4,
        max_uploads=3,
        max_downloads=3,
        max_streams_per_caller=2,
        stream_idle_timeout=2.0,
        storage=LocalStorage(tmp_path / "files"),
        auth_tokens=tokens_file,
    )
    try:
        yield running
    finally:
        running.stop(grace=0)


def assert_unary_calls_answer(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        registry = pb_grpc.ModelRegistryServiceStub(channel)
        for _ in range(8):  # more calls than the server has threads for unary calls
            registry.ListModels(pb.ListModelsRequest(), timeout=10, metadata=bearer("viewer"))


def test_idle_reflection_streams_cannot_starve_unary_calls(small_server) -> None:
    target = f"127.0.0.1:{small_server.port}"
    with grpc.insecure_channel(target) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        idle = [Blocked() for _ in range(16)]
        streams = [reflect.ServerReflectionInfo(iter(requests), timeout=60) for requests in idle]
        assert_unary_calls_answer(target)
        codes = Counter()
        for stream in streams:
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
            codes[ended.value.code()] += 1
        # A few were admitted and then ended for idling; the rest were refused at once.
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert codes[grpc.StatusCode.DEADLINE_EXCEEDED] <= 4
        for requests in idle:
            requests.release.set()
        wait_for(lambda: small_server.calls.active("reflection") == 0, what="the reflection streams to be released")
        answer = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        assert answer.list_services_response.service


def upload(registry: pb_grpc.ModelRegistryServiceStub, data: bytes) -> str:
    """A checkpoint holding one file of `data`, uploaded by alice; its uuid."""
    uuid = registry.CreateCheckpoint(
        pb.CreateCheckpointRequest(checkpoint=checkpoint_pb2.Checkpoint(state=checkpoint_pb2.CHECKPOINT_STATE_ACTIVE)),
        timeout=10, metadata=bearer("alice"),
    ).checkpoint.uuid
    header = checkpoint_pb2.CheckpointFile(path="weights.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    chunks = [pb.UploadCheckpointFilesRequest(chunk=data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
    messages = [pb.UploadCheckpointFilesRequest(checkpoint_uuid=uuid), pb.UploadCheckpointFilesRequest(file=header), *chunks]
    registry.UploadCheckpointFiles(iter(messages), timeout=120, metadata=bearer("alice"))
    return uuid


def test_downloads_that_stop_reading_cannot_starve_unary_calls(small_server, tmp_path: Path) -> None:
    target = f"127.0.0.1:{small_server.port}"
    with grpc.insecure_channel(target) as channel:
        registry = pb_grpc.ModelRegistryServiceStub(channel)
        uuid = upload(registry, os.urandom(24 * 1024 * 1024))  # beyond any flow-control window
        request = pb.DownloadCheckpointFilesRequest(checkpoint_uuid=uuid)
        streams = [
            registry.DownloadCheckpointFiles(request, timeout=120, metadata=bearer(who))
            for who in ["alice", "bob", "viewer", "admin"] * 4
        ]
        started = []
        for stream in streams:  # read one message of each, then stop reading
            try:
                started.append((stream, next(stream)))
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 1 <= len(started) <= 3  # the download cap
        assert_unary_calls_answer(target)
        wait_for(lambda: small_server.calls.active("download") == 0, what="the stalled downloads to be ended")
        for stream, _ in started:  # ended for not reading
            with pytest.raises(grpc.RpcError) as ended:
                for _ in stream:
                    pass
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "STREAM_IDLE" in ended.value.details()


def test_uploads_that_stop_sending_cannot_starve_unary_calls(small_server) -> None:
    target = f"127.0.0.1:{small_server.port}"
    with Registry(target, token=TOKENS["alice"][0], timeout=10) as alice:
        uuid = alice.create_checkpoint(state=1).uuid  # ACTIVE
    with grpc.insecure_channel(target) as channel:
        registry = pb_grpc.ModelRegistryServiceStub(channel)
        header = pb.UploadCheckpointFilesRequest(file=checkpoint_pb2.CheckpointFile(path="a", size=10, sha256="0" * 64))
        stalled = [Blocked(pb.UploadCheckpointFilesRequest(checkpoint_uuid=uuid), header) for _ in range(16)]
        futures = [
            registry.UploadCheckpointFiles.future(iter(requests), timeout=120, metadata=bearer(who))
            for requests, who in zip(stalled, ["alice", "bob", "admin", "viewer"] * 4, strict=True)
        ]
        assert_unary_calls_answer(target)
        codes = Counter()
        for future in futures:
            with pytest.raises(grpc.RpcError) as ended:
                future.result(timeout=60)
            codes[ended.value.code()] += 1
        # viewers may not upload; of the others at most 3 were admitted, then ended for idling
        assert codes[grpc.StatusCode.DEADLINE_EXCEEDED] <= 3
        assert codes[grpc.StatusCode.DEADLINE_EXCEEDED] + codes[grpc.StatusCode.RESOURCE_EXHAUSTED] + codes[
            grpc.StatusCode.PERMISSION_DENIED
        ] == 16
        for requests in stalled:
            requests.release.set()
        wait_for(lambda: small_server.calls.active("upload") == 0, what="the uploads to be released")


def test_streams_are_capped_per_principal(small_server) -> None:
    """Two watches per principal here: alice's third is refused, bob still gets his."""
    target = f"127.0.0.1:{small_server.port}"
    with grpc.insecure_channel(target) as channel:
        registry = pb_grpc.ModelRegistryServiceStub(channel)

        def watch(who: str) -> grpc.Future:
            return registry.WatchEvents(pb.WatchEventsRequest(), timeout=30, metadata=bearer(who))

        alices = [watch("alice"), watch("alice")]
        wait_for(lambda: small_server.calls.active("watch") == 2, what="alice's two watches")
        with pytest.raises(grpc.RpcError) as refused:
            next(watch("alice"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        bobs = watch("bob")
        wait_for(lambda: small_server.calls.active("watch") == 3, what="bob's watch")
        for stream in (*alices, bobs):
            stream.cancel()
        wait_for(lambda: small_server.calls.active("watch") == 0, what="the watches to be released")


def test_revoking_a_token_ends_its_streams(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKENS['alice'][0]} alice editor\n{TOKENS['admin'][0]} root admin\n")
    tokens.chmod(0o600)
    running = build_server(f"sqlite:///{tmp_path}/registry.db", storage=LocalStorage(tmp_path / "files"), auth_tokens=str(tokens))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            registry = pb_grpc.ModelRegistryServiceStub(channel)
            alices = registry.WatchEvents(pb.WatchEventsRequest(), timeout=60, metadata=bearer("alice"))
            admins = registry.WatchEvents(pb.WatchEventsRequest(), timeout=60, metadata=bearer("admin"))
            registry.CreateModel(pb.CreateModelRequest(name="m"), timeout=10, metadata=bearer("admin"))
            assert next(alices).event.model_name == next(admins).event.model_name == "m"
            tokens.write_text(f"{TOKENS['admin'][0]} root admin\n")
            assert running.reload_tokens()
            with pytest.raises(grpc.RpcError) as ended:
                next(alices)
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "TOKEN_REVOKED" in ended.value.details()
            registry.CreateModel(pb.CreateModelRequest(name="n"), timeout=10, metadata=bearer("admin"))
            assert next(admins).event.model_name == "n"  # the admin's stream goes on
            admins.cancel()
    finally:
        running.stop(grace=0)


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """{worker number: pid} of the latest start of each worker, from the log."""
    pids = {}
    for line in list(server.lines):
        match = re.search(r"registry serving on .*\(worker (\d+)/\d+, pid (\d+)\)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def serving_lines(server: ServerProcess) -> int:
    return sum("registry serving on" in line for line in list(server.lines))


def test_workers_are_restarted_after_early_crashes_and_hangs(tmp_path: Path) -> None:
    """A worker killed right after it started is started again (the old parent gave up and exited 1);
    a worker that stops answering (SIGSTOP) is killed and replaced; SIGTERM still ends the server
    when a worker is wedged."""
    args = ("--worker-probe-timeout", "3", "--grace", "1")
    with ServerProcess(f"sqlite:///{tmp_path}/registry.db", *args, workers=2) as server:
        with Registry(server.target, timeout=30) as registry:
            registry.create_model("m")
            for _round in range(2):  # twice within a few seconds of each start
                victim = worker_pids(server)[1]
                before = serving_lines(server)
                os.kill(victim, signal.SIGKILL)
                wait_for(lambda: serving_lines(server) > before, what="the killed worker to be started again")
                assert server.process.poll() is None
                assert registry.get_model("m").name == "m"
            hung = worker_pids(server)[2]
            before = serving_lines(server)
            os.kill(hung, signal.SIGSTOP)
            wait_for(lambda: serving_lines(server) > before, timeout=60, what="the hung worker to be replaced")
            assert any(f"pid {hung}) has not answered its health probe" in line for line in server.lines)
            for _ in range(10):
                assert registry.get_model("m").name == "m"
        wedged = worker_pids(server)[1]
        os.kill(wedged, signal.SIGSTOP)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=1 + 5 + 30) == 1  # a worker had to be killed
        with pytest.raises(ProcessLookupError):
            os.kill(wedged, 0)


def test_workers_that_keep_failing_to_start_stop_the_server(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    process = subprocess.run(
        [console_script("model-registry-server"), "--port", "0", "--workers", "2",
         "--database-url", f"sqlite:///{tmp_path}/registry.db", "--storage-dir", str(blocker / "files")],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 1
    assert "failed to start 5 times in a row" in process.stderr
    assert process.stderr.count("before it served; starting it again") >= 3


def test_writers_ride_through_graceful_stops_of_a_replica(tmp_path: Path) -> None:
    """Pipelines write through two replicas while one of them is stopped (SIGTERM) and started again,
    three times: no call fails (a call cut by a stopping server is retried, like UNAVAILABLE), and
    every acknowledged create is stored exactly once."""
    url = f"sqlite:///{tmp_path}/registry.db"
    with ServerProcess(url) as steady:
        acknowledged, failures = [], []
        stop = threading.Event()

        def writer(index: int, target: str, round_: int) -> None:
            with Registry(target, timeout=60) as registry:
                count = 0
                while not stop.is_set() and count < 400:
                    count += 1
                    try:
                        acknowledged.append(registry.create_model(f"w{round_}-{index}-{count}").name)
                    except Exception as error:  # noqa: BLE001 - reported below
                        failures.append(error)

        for round_ in range(3):
            with ServerProcess(url) as stopping:
                target = f"ipv4:{steady.target},{stopping.target}"
                writers = [threading.Thread(target=writer, args=(i, target, round_)) for i in range(6)]
                stop.clear()
                for thread in writers:
                    thread.start()
                wait_for(lambda: len(acknowledged) > 50, what="writes to flow")
                assert stopping.stop() == 0
                stop.set()
                for thread in writers:
                    thread.join(timeout=120)
            assert failures == []
            acknowledged_now = list(acknowledged)
            acknowledged.clear()
            with Registry(steady.target, timeout=30) as registry:
                stored = {m.name for m in registry.get_models()}
            assert set(acknowledged_now) <= stored
            assert len(acknowledged_now) == len(set(acknowledged_now))


def test_the_client_retries_a_call_the_server_cancelled(tmp_path: Path) -> None:
    """gRPC ends calls CANCELLED that reached a stopping server before it took them (and, in older
    servers, those cut at the end of the grace period): the client retries them like UNAVAILABLE
    where a repeat is safe. Here a stand-in server cancels the first attempt itself."""
    from concurrent import futures as thread_futures

    from modelregistry.v1 import model_pb2

    attempts = []

    class CancelsOnce(pb_grpc.ModelRegistryServiceServicer):
        def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
            attempts.append(request.name)
            if len(attempts) == 1:
                context.cancel()
            return pb.GetModelResponse(model=model_pb2.Model(name=request.name))

    stand_in = grpc.server(thread_futures.ThreadPoolExecutor(2))
    pb_grpc.add_ModelRegistryServiceServicer_to_server(CancelsOnce(), stand_in)
    port = stand_in.add_insecure_port("127.0.0.1:0")
    stand_in.start()
    try:
        with Registry(f"127.0.0.1:{port}", timeout=10) as registry:
            assert registry.get_model("m").name == "m"
        assert attempts == ["m", "m"]
    finally:
        stand_in.stop(0)
