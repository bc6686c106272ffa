"""The cost of metrics and tracing: GetModel calls/s of servers that differ only in those, run side by
side on one database and measured in interleaved rounds (so that a slow moment of the machine hits
every variant alike); the table gives each variant's median over the rounds and its cost against the
server with both off, in calls/s and in server CPU time per call (from /proc: the steadier figure on a
shared machine, where calls/s swing with the other processes). Tracing exports over OTLP/HTTP to a sink in this process that only answers 200.

    make bench-overhead            # or: .venv/bin/python -m bench.overhead --rounds 5 --duration 3
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

import grpc
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from .load import LoadGenerator
from .server import BenchServer

# name, server flags, environment
VARIANTS: list[tuple[str, list[str], dict[str, str]]] = [
    ("metrics off, tracing off", ["--no-metrics"], {}),
    ("metrics on", [], {}),
    ("tracing on, sampled 100%", ["--no-metrics", "--tracing"], {"OTEL_TRACES_SAMPLER": "always_on"}),
    (
        "tracing on, sampled 10%",
        ["--no-metrics", "--tracing"],
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    ),
    ("metrics on, tracing on 100%", ["--tracing"], {"OTEL_TRACES_SAMPLER": "always_on"}),
]


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that drops what it is sent."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def recording_cost_us(calls: int = 20000) -> dict[str, float]:
    """CPU µs one call spends in the recording itself, measured in this process: the metrics of a
    unary call (in flight, bytes, duration, count by code) and its span (with a context to continue,
    to a processor that drops it); medians of three runs."""
    import time

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from registry_server import metrics, tracing

    class _Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    metrics.configure()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    tracing.configure(provider)
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    sent = metrics.response_counter("GetModel", "grpc")
    assert sent is not None

    def metered() -> None:
        timer = metrics.start_call("GetModel", "grpc")
        assert timer is not None
        timer.received(12)
        sent(120)
        timer.end("OK", "")

    def traced() -> None:
        span = tracing.start_call("modelregistry.v1.ModelRegistryService", "GetModel", "grpc", carrier)
        assert span is not None
        span.end("OK", "")

    costs = {}
    for name, one in (("metrics", metered), ("tracing (one span)", traced)):
        runs = []
        for _ in range(3):
            began = time.process_time()
            for _ in range(calls):
                one()
            runs.append((time.process_time() - began) / calls * 1e6)
        costs[name] = statistics.median(runs)
    provider.shutdown()
    tracing.disable()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-overhead-")))
        url = f"sqlite:///{directory}/registry.db"
        sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        stack.callback(sink.shutdown)
        servers: list[BenchServer] = []
        for _name, flags, env in VARIANTS:
            saved = dict(os.environ)
            os.environ.update(env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{sink.server_port}/v1/traces")
            try:
                server = BenchServer(url, flags, directory / f"server-{len(servers)}.log")
            finally:
                os.environ.clear()
                os.environ.update(saved)
            stack.callback(server.stop)
            servers.append(server)
        with grpc.insecure_channel(servers[0].target) as channel:
            pb_grpc.ModelRegistryServiceStub(channel).CreateModel(pb.CreateModelRequest(name="bench"), timeout=30)
        load = LoadGenerator(args.clients)
        stack.callback(load.close)
        rates: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        p50s: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        cpu_us: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        for round_ in range(args.rounds):
            order = list(zip(VARIANTS, servers, strict=True))
            if round_ % 2:
                order.reverse()  # no variant always measured first
            for (name, _, _), server in order:
                cpu = server.cpu_s()
                result = load.measure(server.target, "GetModel", {"model": "bench"}, args.in_flight, args.duration, name)
                # CPU over every call of the measurement, warm-up included (its calls are not counted: a
                # slight overestimate, alike for every variant).
                cpu_us[name].append((server.cpu_s() - cpu) / max(result.calls, 1) * 1e6)
                rates[name].append(result.calls_per_s)
                p50s[name].append(result.p50_ms)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    base = statistics.median(rates[VARIANTS[0][0]])
    base_cpu = statistics.median(cpu_us[VARIANTS[0][0]])
    print(f"\nGetModel, {args.in_flight} in flight, {args.rounds} rounds of {args.duration:g} s, medians:\n")
    print("| server | calls/s | p50 ms | cost in calls/s | server CPU µs/call | cost in CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in VARIANTS:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpu_us[name])
        first = name == VARIANTS[0][0]
        cost = "" if first else f"{(1 - rate / base) * 100:+.1f}%"
        cpu_cost = "" if first else f"{(cpu / base_cpu - 1) * 100:+.1f}%"
        print(f"| {name} | {rate:.0f} | {statistics.median(p50s[name]):.2f} | {cost} | {cpu:.0f} | {cpu_cost} |")
    print("\nCPU of the recording alone, per call, in-process (beside the server CPU µs/call above):")
    for name, cost_us in recording_cost_us().items():
        print(f"- {name}: {cost_us:.1f} µs ({cost_us / base_cpu * 100:.1f}% of a GetModel's server CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
