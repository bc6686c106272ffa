"""Operating the server: Prometheus metrics (one process and --workers), OpenTelemetry spans that
continue the caller's trace, JSON logs without secrets, --version, GetServerInfo, readiness."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from registry_client import NotFoundError, PermissionDeniedError, Registry, UnauthenticatedError
from registry_client.cli import main as cli_main
from registry_server import __version__ as SERVER_VERSION
from registry_server import db as database
from registry_server import logs, metrics, tracing
from registry_server.health import HealthServicer
from registry_server.server import RegistryServer, build_server
from registry_server.storage import LocalStorage

from .conftest import TOKENS
from .servers import ServerProcess, console_script, wait_for

ADMIN, _, _ = TOKENS["admin"]
VIEWER, _, _ = TOKENS["viewer"]
LATEST_MIGRATION = max(
    name[:-3] for name in os.listdir(database.MIGRATIONS_DIR) if name[:4].isdigit() and name.endswith(".py")
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def scrape() -> Samples:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def secured(database_url: str, tokens_file: str, tmp_path: Path) -> Iterator[RegistryServer]:
    running = build_server(database_url, "127.0.0.1", 0, auth_tokens=tokens_file, storage=LocalStorage(tmp_path / "files"))
    try:
        yield running
    finally:
        running.stop(grace=None)


def test_a_scrape_counts_calls_by_method_code_and_reason(secured: RegistryServer) -> None:
    target = f"127.0.0.1:{secured.port}"
    before = scrape()
    with Registry(target, token=ADMIN, timeout=10) as admin, Registry(target, token=VIEWER, timeout=10) as viewer, \
            Registry(target, timeout=10) as anonymous:
        for _ in range(2):
            with pytest.raises(NotFoundError):
                admin.get_model("absent")
        admin.create_model("m")
        admin.get_model("m")
        with pytest.raises(PermissionDeniedError):
            viewer.create_model("n")
        with pytest.raises(UnauthenticatedError):
            anonymous.get_model("m")
    after = scrape()
    call = {"protocol": "grpc"}
    requests = "model_registry_requests_total"
    assert delta(before, after, requests, method="GetModel", code="NOT_FOUND", reason="MODEL_NOT_FOUND", **call) == 2
    assert delta(before, after, requests, method="GetModel", code="OK", reason="", **call) == 1
    assert delta(before, after, requests, method="CreateModel", code="OK", reason="", **call) == 1
    assert delta(before, after, requests, method="CreateModel", code="PERMISSION_DENIED", reason="ROLE_NOT_ALLOWED", **call) == 1
    assert delta(before, after, requests, method="GetModel", code="UNAUTHENTICATED", reason="MISSING_TOKEN", **call) == 1
    assert delta(before, after, "model_registry_auth_refusals_total", reason="ROLE_NOT_ALLOWED") == 1
    assert delta(before, after, "model_registry_auth_refusals_total", reason="MISSING_TOKEN") == 1
    # Admitted calls are timed and their bytes counted; refusals at admission are only counted.
    assert delta(before, after, "model_registry_request_duration_seconds_count", method="GetModel", **call) == 3
    assert delta(before, after, "model_registry_request_bytes_total", method="CreateModel", **call) >= 2 * len(b"\n\x01m")
    assert delta(before, after, "model_registry_response_bytes_total", method="GetModel", **call) > 0
    assert value(after, "model_registry_requests_in_flight", method="GetModel", **call) == 0
    assert delta(before, after, "model_registry_events_appended_total") == 1
    assert value(after, "model_registry_db_schema_version") == int(LATEST_MIGRATION[:4])
    assert value(after, "model_registry_build_info", version=SERVER_VERSION) == 1
    body = metrics.exposition()[0].decode()
    assert not any(token in body for token, _, _ in TOKENS.values())


def test_metrics_of_watchers_and_files(registry_server: RegistryServer, tmp_path: Path) -> None:
    target = f"127.0.0.1:{registry_server.port}"
    files = tmp_path / "up"
    files.mkdir()
    (files / "weights.bin").write_bytes(b"x" * 1000)
    before = scrape()
    with Registry(target, timeout=10) as r:
        checkpoint = r.upload_checkpoint(files)
        r.download_checkpoint(checkpoint.uuid, tmp_path / "down")
        events = r.watch()
        next(events)
        # The health thread samples the gauges every few seconds; sampled here too, so as not to wait.
        wait_for(lambda: (metrics.sample(registry_server.db, *registry_server.servicer.store.events.watch_state()),
                          value(scrape(), "model_registry_watchers") == 1)[1], what="one watcher")
        events.close()  # type: ignore[attr-defined]
    after = scrape()
    assert delta(before, after, "model_registry_checkpoint_upload_bytes_total") == 1000
    assert delta(before, after, "model_registry_checkpoint_download_bytes_total") == 1000
    assert value(after, "model_registry_checkpoint_uploads_in_progress") == 0
    assert value(after, "model_registry_db_pool_max_connections") > 0
    assert value(after, "model_registry_db_connection_wait_seconds_count") > 0


def _metrics_url(server: ServerProcess) -> str:
    wait_for(lambda: any("metrics serving on" in line for line in server.lines), what="the metrics line")
    line = next(line for line in server.lines if "metrics serving on" in line)
    return "http://" + line.rsplit("metrics serving on ", 1)[1].split()[0].strip('"}') + "/metrics"


def test_one_scrape_of_a_server_with_two_workers_sees_both(tmp_path: Path) -> None:
    with ServerProcess(f"sqlite:///{tmp_path}/r.db", "--metrics-port", "0", workers=2) as server:
        url = _metrics_url(server)
        calls: dict[int, int] = {}
        for _ in range(200):  # new connections until both workers answered (the kernel spreads them)
            with Registry(server.target, timeout=10) as r:
                pid = r.server_info().pid
                calls[pid] = calls.get(pid, 0) + 1
            if len(calls) == 2:
                break
        assert len(calls) == 2, calls
        with urllib.request.urlopen(url, timeout=10) as reply:
            found = samples(reply.read().decode())
        total = value(found, "model_registry_requests_total", method="GetServerInfo", protocol="grpc", code="OK", reason="")
        assert total == sum(calls.values())
        assert value(found, "model_registry_db_schema_version") == int(LATEST_MIGRATION[:4])
        assert server.stop() == 0


def test_metrics_beyond_loopback_need_an_explicit_port() -> None:
    metrics.check_exposure("127.0.0.1", has_tokens=True, explicit=False)
    metrics.check_exposure("0.0.0.0", has_tokens=False, explicit=False)
    with pytest.raises(ValueError, match="without authentication"):
        metrics.check_exposure("0.0.0.0", has_tokens=True, explicit=False)
    metrics.check_exposure("0.0.0.0", has_tokens=True, explicit=True)


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        yield exporter, provider
    finally:
        tracing.disable()


def test_a_span_per_call_continues_the_callers_trace(
    registry_server: RegistryServer, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    caller = provider.get_tracer("test")
    with Registry(f"127.0.0.1:{registry_server.port}", timeout=10) as r:
        with caller.start_as_current_span("caller") as parent:
            r.create_model("m")
            with pytest.raises(NotFoundError):
                r.get_model("absent")
        r.get_model("m")  # no current span: a trace of its own
    finished = {span.name.rsplit("/", 1)[-1]: span for span in exporter.get_finished_spans()}
    create = finished["CreateModel"]
    assert create.parent is not None and create.parent.span_id == parent.get_span_context().span_id
    assert create.context.trace_id == parent.get_span_context().trace_id
    assert create.attributes["rpc.grpc.status_code"] == "OK"
    transaction = finished["db.transaction"]
    assert transaction.parent is not None and transaction.parent.span_id == create.context.span_id
    missing = [s for s in exporter.get_finished_spans() if s.name.endswith("/GetModel")]
    assert len(missing) == 2
    refused = next(s for s in missing if s.attributes.get("rpc.grpc.status_code") == "NOT_FOUND")
    assert refused.attributes["modelregistry.error_reason"] == "MODEL_NOT_FOUND"
    assert refused.context.trace_id == parent.get_span_context().trace_id
    alone = next(s for s in missing if s is not refused)
    assert alone.parent is None and alone.context.trace_id != parent.get_span_context().trace_id


def test_json_log_lines_carry_the_trace_ids(
    secured: RegistryServer, spans: tuple[InMemorySpanExporter, TracerProvider], capsys: pytest.CaptureFixture[str]
) -> None:
    exporter, _ = spans
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.setup("INFO", "json")
    try:
        with Registry(f"127.0.0.1:{secured.port}", token=ADMIN, timeout=10) as r:
            r.create_model("m")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    audit = next(line for line in lines if line["logger"] == "registry_server.audit")
    assert {audit[k] for k in ("principal", "rpc", "object", "outcome")} == {"root", "CreateModel", "models/m", "OK"}
    span = next(s for s in exporter.get_finished_spans() if s.name.endswith("/CreateModel"))
    assert audit["trace_id"] == f"{span.context.trace_id:032x}"
    assert audit["span_id"] == f"{span.context.span_id:016x}"
    assert {"time", "level", "logger", "message"} <= set(audit)


def test_json_logs_parse_and_carry_no_secret(tmp_path: Path, tokens_file: str) -> None:
    with ServerProcess(
        f"sqlite:///{tmp_path}/r.db", "--log-format", "json", "--log-level", "DEBUG", "--auth-tokens", tokens_file,
        "--metrics-port", "0",
    ) as server:
        with Registry(server.target, token=ADMIN, timeout=10) as r:
            r.create_model("m")
            r.get_model("m")
        with Registry(server.target, token="not-" + ADMIN, timeout=10) as wrong, pytest.raises(UnauthenticatedError):
            wrong.create_model("n")
        with urllib.request.urlopen(_metrics_url(server), timeout=10) as reply:
            scraped = reply.read().decode()
        os.kill(server.process.pid, 1)  # SIGHUP: the tokens are read again, and logged as such
        wait_for(lambda: any("reloaded" in line for line in server.lines), what="the reload line")
        assert server.stop() == 0
    secret = "s3cr3t-pa55"
    failed = subprocess.run(
        [console_script("model-registry-server"), "--port", "0", "--log-format", "json",
         "--database-url", f"postgresql://u:{secret}@127.0.0.1:1/db?password={secret}&connect_timeout=2"],
        capture_output=True, text=True, timeout=60,
    )
    assert failed.returncode == 1
    lines = server.lines + failed.stderr.splitlines(keepends=True)
    records = [json.loads(line) for line in lines if line.strip()]
    assert any(r["logger"] == "registry_server.audit" and r["rpc"] == "CreateModel" for r in records)
    assert any("cannot be used" in r["message"] for r in records)
    for text in [*lines, scraped]:
        assert secret not in text
        assert not any(token in text for token, _, _ in TOKENS.values()), text


def test_version_of_both_commands() -> None:
    for command in ("model-registry-server", "model-registry"):
        done = subprocess.run([console_script(command), "--version"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0
        assert done.stdout.strip() == f"{command} {SERVER_VERSION}"


def test_server_info(registry_server: RegistryServer, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{registry_server.port}"
    with Registry(target, timeout=10) as r:
        info = r.server_info()
    assert info.version == SERVER_VERSION
    assert (info.schema_version, info.schema_migration) == (int(LATEST_MIGRATION[:4]), LATEST_MIGRATION)
    assert info.database_kind == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    assert info.pid == os.getpid() and info.uptime_seconds >= 0
    assert (info.caller, info.caller_role) == ("", "admin")  # no tokens: everyone may do everything
    assert cli_main(["--target", target, "--json", "info"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["schema_migration"] == LATEST_MIGRATION and shown["pid"] == os.getpid()


def test_server_info_names_the_caller_and_its_role(secured: RegistryServer) -> None:
    """What a user interface needs to show or hide edit controls, without trying an edit."""
    target = f"127.0.0.1:{secured.port}"
    for key in ("admin", "alice", "viewer"):
        token, principal, role = TOKENS[key]
        with Registry(target, timeout=10, token=token) as r:
            info = r.server_info()
        assert (info.caller, info.caller_role) == (principal, role)


def test_health_is_not_serving_until_the_server_is_ready(tmp_path: Path) -> None:
    fresh = HealthServicer()
    assert fresh.Check(health_pb2.HealthCheckRequest(), None).status == health_pb2.HealthCheckResponse.NOT_SERVING  # type: ignore[arg-type]
    running = build_server(f"sqlite:///{tmp_path}/r.db", storage=LocalStorage(tmp_path / "files"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            for service in ("", "modelregistry.v1.ModelRegistryService"):
                reply = check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop(grace=None)


def test_streams_are_traced_and_counted_to_their_end(
    registry_server: RegistryServer, spans: tuple[InMemorySpanExporter, TracerProvider], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter, _ = spans
    files = tmp_path / "up"
    files.mkdir()
    (files / "w.bin").write_bytes(b"y" * 10)
    before = scrape()
    with Registry(f"127.0.0.1:{registry_server.port}", timeout=10) as r:
        checkpoint = r.upload_checkpoint(files)
        r.download_checkpoint(checkpoint.uuid, tmp_path / "down")
        events = r.watch()
        next(events)
        events.close()  # type: ignore[attr-defined]
    names = lambda: {s.name.rsplit("/", 1)[-1] for s in exporter.get_finished_spans()}  # noqa: E731
    wait_for(lambda: {"UploadCheckpointFiles", "DownloadCheckpointFiles", "WatchEvents"} <= names(), what="stream spans")
    assert {"storage.place", "storage.open"} <= names()
    wait_for(lambda: value(scrape(), "model_registry_requests_in_flight", method="WatchEvents", protocol="grpc") == 0,
             what="the watch to end")
    after = scrape()
    for method in ("UploadCheckpointFiles", "DownloadCheckpointFiles"):
        assert delta(before, after, "model_registry_requests_total", method=method, protocol="grpc", code="OK", reason="") == 1
    assert delta(before, after, "model_registry_request_bytes_total", method="UploadCheckpointFiles", protocol="grpc") >= 10
    assert delta(before, after, "model_registry_response_bytes_total", method="DownloadCheckpointFiles", protocol="grpc") >= 10
    assert not [r for r in caplog.records if "detach" in r.getMessage()]


def test_the_overhead_bench_reports_every_variant(capsys: pytest.CaptureFixture[str]) -> None:
    """`make bench-overhead` in a tiny run, so that it cannot rot; no timing is asserted."""
    from bench import overhead

    assert overhead.main(["--rounds", "1", "--duration", "0.3", "--clients", "1", "--in-flight", "2"]) == 0
    printed = capsys.readouterr().out
    for name, _, _ in overhead.VARIANTS:
        assert f"| {name} |" in printed
    assert "- metrics:" in printed and "- tracing (one span):" in printed


def test_the_http_port_serves_metrics_and_counts_http_calls(tmp_path: Path, tokens_file: str) -> None:
    """/metrics on the HTTP port (issue 17): one scrape of the whole server, behind a token when the
    server has a token file; calls made over HTTP are counted with protocol="http", refusals with
    their reason."""
    with ServerProcess(f"sqlite:///{tmp_path}/r.db", "--auth-tokens", tokens_file, "--http-port", "0") as server:
        base = f"http://{server.http_target}"
        token = TOKENS["alice"][0]

        def get(path: str, bearer: str | None) -> tuple[int, bytes]:
            request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        assert get("/metrics", None)[0] == 401
        assert get("/api/v1/models/absent", token)[0] == 404
        assert get("/api/v1/models", None)[0] == 401
        status, body = get("/metrics", token)
        assert status == 200
        found = samples(body.decode())
        labels = {"method": "GetModel", "protocol": "http", "code": "NOT_FOUND", "reason": "MODEL_NOT_FOUND"}
        assert value(found, "model_registry_requests_total", **labels) == 1
        assert value(found, "model_registry_auth_refusals_total", reason="MISSING_TOKEN") >= 1
        assert server.stop() == 0
