"""The real server over the network: reflection, health, concurrency, and the console script."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_server import db as database
from registry_server.main import parse_args
from tests.servers import ServerProcess, console_script

SERVICE = "modelregistry.v1.ModelRegistryService"


def stub(target: str) -> tuple[grpc.Channel, pb_grpc.ModelRegistryServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, pb_grpc.ModelRegistryServiceStub(channel)


def test_reflection_lists_and_describes_the_services(registry_target: str) -> None:
    with grpc.insecure_channel(registry_target) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflect.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
                    ]
                ),
                timeout=10,
            )
        )
    services = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert answers[1].file_descriptor_response.file_descriptor_proto


def test_health_serving_for_server_and_service(registry_target: str) -> None:
    with grpc.insecure_channel(registry_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_concurrent_registrations_never_collide(registry_target: str) -> None:
    """Many threads register versions of the same few models at once: every number is handed out
    exactly once, and each model's versions are exactly 1..N."""
    threads, per_thread, models = 16, 25, ["a", "b", "c"]
    channel, registry = stub(registry_target)
    with channel:
        for name in models:
            registry.CreateModel(pb.CreateModelRequest(name=name), timeout=10)
        uuid = registry.CreateCheckpoint(pb.CreateCheckpointRequest(), timeout=10).checkpoint.uuid

        def register(worker: int) -> list[tuple[str, int]]:
            got = []
            for i in range(per_thread):
                name = models[(worker + i) % len(models)]
                request = pb.CreateModelVersionRequest(model_name=name, checkpoint_uuid=uuid)
                got.append((name, registry.CreateModelVersion(request, timeout=60).model_version.version))
            return got

        with futures.ThreadPoolExecutor(threads) as pool:
            results = [pair for batch in pool.map(register, range(threads)) for pair in batch]
        assert len(results) == threads * per_thread == 400
        assert len(set(results)) == len(results), "a version number was handed out twice"
        for name in models:
            numbers = sorted(v for n, v in results if n == name)
            assert numbers == list(range(1, len(numbers) + 1))
            stored = registry.ListModelVersions(pb.ListModelVersionsRequest(model_name=name, page_size=1000), timeout=10)
            assert sorted(v.version for v in stored.model_versions) == numbers
            assert registry.GetModel(pb.GetModelRequest(name=name), timeout=10).model.latest_version == len(numbers)


def test_concurrent_metadata_merges_lose_nothing(registry_target: str) -> None:
    threads, keys_each = 16, 10
    channel, registry = stub(registry_target)
    with channel:
        registry.CreateModel(pb.CreateModelRequest(name="m"), timeout=10)

        def merge(worker: int) -> None:
            for i in range(keys_each):
                request = pb.UpdateModelMetadataRequest(name="m")
                request.merge.update({f"w{worker}-k{i}": i})
                registry.UpdateModelMetadata(request, timeout=60)

        with futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(merge, range(threads)))
        metadata = registry.GetModel(pb.GetModelRequest(name="m"), timeout=10).model.metadata
        assert len(metadata) == threads * keys_each
        assert all(metadata[f"w{w}-k{i}"] == i for w in range(threads) for i in range(keys_each))


def test_console_script_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [console_script("model-registry-server"), "--port", "0", "--database-url", f"sqlite:///{tmp_path}/r.db"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MODEL_REGISTRY_LOG_LEVEL": "INFO"},
    )
    try:
        lines = []
        timer = threading.Timer(30, server.kill)  # bound the wait for the serving line
        timer.start()
        for line in server.stderr:
            lines.append(line)
            match = re.search(r"registry serving on 127\.0\.0\.1:(\d+)", line)
            if match:
                break
        timer.cancel()
        assert match, "".join(lines)
        channel, registry = stub(f"127.0.0.1:{match.group(1)}")
        with channel:
            assert registry.CreateModel(pb.CreateModelRequest(name="m"), timeout=10).model.name == "m"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert "stopped" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "registry_server", "--help"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0 and "--database-url" in result.stdout


def test_sqlite_synchronous_is_full_unless_asked(tmp_path: Path) -> None:
    """Durability is the default: synchronous=FULL (2); NORMAL (1) only with --sqlite-synchronous."""
    url = f"sqlite:///{tmp_path}/registry.db"
    for flags, expected in (([], 2), (["--sqlite-synchronous", "normal"], 1)):
        args = parse_args(["--database-url", url, *flags])
        db = database.connect(args.database_url, sqlite_synchronous=args.sqlite_synchronous)
        with db.connection_context():
            assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == expected
        db.close_all()
    with pytest.raises(SystemExit):
        parse_args(["--sqlite-synchronous", "off"])


def test_a_taken_port_is_one_clear_error_line(tmp_path: Path) -> None:
    with ServerProcess(f"sqlite:///{tmp_path}/a.db") as first:
        port = first.target.rsplit(":", 1)[1]
        result = subprocess.run(
            [console_script("model-registry-server"), "--port", port, "--database-url", f"sqlite:///{tmp_path}/b.db"],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot start: cannot bind 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://registry:s3cret@127.0.0.1:1/registry",  # nothing listens on port 1
        "postgresql://postgres@127.0.0.1:5432/no_such_database_here?password=s3cret",
    ],
)
def test_an_unusable_database_is_one_line_naming_it_without_its_password(url: str) -> None:
    """It was a ~70-line traceback; with --workers too."""
    for workers in ("1", "2"):
        result = subprocess.run(
            [console_script("model-registry-server"), "--port", "0", "--workers", workers, "--database-url", url],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "cannot start" in lines[0] and "127.0.0.1" in lines[0] and "is the database running" in lines[0]
        assert "s3cret" not in result.stderr and "***" in lines[0]


def test_each_migration_is_logged_once(tmp_path: Path) -> None:
    with ServerProcess(f"sqlite:///{tmp_path}/registry.db") as server:
        pass
    applied = [line for line in server.lines if "0001_initial" in line]
    assert len(applied) == 1, applied


def test_a_signal_delivered_to_another_thread_still_runs_its_handler() -> None:
    """A CI run lost a SIGHUP: one worker of two never reloaded its tokens. The kernel may hand a
    process's signal to any thread (gRPC has many); Python runs the handler only when the main thread
    runs bytecode, and the server's main thread blocked in Event.wait() for good. Here the signal is
    sent to a thread other than the main one, as the kernel may do."""
    script = textwrap.dedent(
        """
        import linecache, signal, sys, threading, time
        from registry_server.main import wait_for_stop
        stop = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: stop.set())
        main = threading.main_thread().ident

        def blocked_in_wait():  # the main thread's innermost frame is at a lock's acquire() in wait()
            frame = sys._current_frames().get(main)
            if frame is None or frame.f_code.co_name != "wait":
                return False
            return "acquire(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)

        def other_thread():
            deadline = time.monotonic() + 10
            while not blocked_in_wait() and time.monotonic() < deadline:
                time.sleep(0.01)
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

        threading.Thread(target=other_thread, daemon=True).start()
        wait_for_stop(stop)
        print("handled")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() == "handled", done.stderr
