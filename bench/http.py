"""GetModel, GetModelVersion and CreateModelVersion over HTTP/JSON (the gateway, keep-alive
connections) beside the same calls over gRPC, against one server in the same run, at 1 and 16 calls
in flight: `make bench-http` (or `python -m bench.http --duration 3`). Prints a table of calls/s and
the HTTP/gRPC ratio (target: at least 0.6)."""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from .load import WARMUP_S, LoadGenerator, Result, summarise
from .server import BenchServer

CALLS = ("GetModel", "GetModelVersion", "CreateModelVersion")


def _http_call(call: str, args: dict[str, Any]) -> tuple[str, str, bytes | None]:
    model = args["model"]
    if call == "GetModel":
        return "GET", f"/api/v1/models/{model}", None
    if call == "GetModelVersion":
        return "GET", f"/api/v1/models/{model}/versions:latest", None
    if call == "CreateModelVersion":
        return "POST", f"/api/v1/models/{model}/versions", json.dumps({"checkpointUuid": args["checkpoint"]}).encode()
    raise ValueError(call)


def run_http_job(job: tuple[int, str, dict[str, Any], int, float]) -> tuple[list[float], float]:
    """`tasks` threads, each with one keep-alive connection, calling back to back for `duration`."""
    port, call, args, tasks, duration = job
    method, path, body = _http_call(call, args)
    headers = {"Content-Type": "application/json"} if body else {}
    start = time.perf_counter()
    window_start, window_end = start + WARMUP_S, start + WARMUP_S + duration
    timings: list[tuple[float, float]] = []

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (began := time.perf_counter()) < window_end:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{call}: HTTP {response.status} {data[:200]!r}")
            timings.append((began, time.perf_counter()))
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    inside = [(b, e) for b, e in timings if b >= window_start and e <= window_end]
    return [e - b for b, e in inside], duration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per call and concurrency")
    parser.add_argument("--processes", type=int, default=2, help="client processes of the load generator")
    parser.add_argument("--repetitions", type=int, default=2, help="repetitions, interleaved; medians reported")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="registry-bench-http-") as directory:
        server = BenchServer(f"sqlite:///{directory}/registry.db", ["--storage-dir", f"{directory}/files"], Path(directory) / "server.log")
        load = LoadGenerator(args.processes)
        try:
            with grpc.insecure_channel(server.target) as channel:
                stub = pb_grpc.ModelRegistryServiceStub(channel)
                stub.CreateModel(pb.CreateModelRequest(name="bench"), timeout=30)
                checkpoint = stub.CreateCheckpoint(pb.CreateCheckpointRequest(), timeout=30).checkpoint.uuid
                stub.CreateModelVersion(pb.CreateModelVersionRequest(model_name="bench", checkpoint_uuid=checkpoint), timeout=30)
            call_args = {"model": "bench", "checkpoint": checkpoint}
            rows = []
            for call in CALLS:
                for in_flight in (1, 16):
                    grpc_runs, http_runs = [], []
                    for rep in range(args.repetitions):
                        grpc_runs.append(load.measure(server.target, call, call_args, in_flight, args.duration, f"g{rep}"))
                        procs = min(args.processes, in_flight)
                        shares = [in_flight // procs + (1 if i < in_flight % procs else 0) for i in range(procs)]
                        jobs = [(server.http_port, call, call_args, tasks, args.duration) for tasks in shares]
                        http_runs.append(summarise(load.pool.map(run_http_job, jobs)))
                    rows.append((call, in_flight, _median(grpc_runs), _median(http_runs)))
        finally:
            load.close()
            server.stop()
    print(f"{'call':<20}{'in flight':>10}{'gRPC/s':>10}{'HTTP/s':>10}{'HTTP p50 ms':>13}{'ratio':>8}")
    for call, in_flight, over_grpc, over_http in rows:
        ratio = over_http.calls_per_s / over_grpc.calls_per_s if over_grpc.calls_per_s else float("nan")
        print(f"{call:<20}{in_flight:>10}{over_grpc.calls_per_s:>10.0f}{over_http.calls_per_s:>10.0f}{over_http.p50_ms:>13.2f}{ratio:>8.2f}")
    return 0


def _median(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.calls_per_s)[len(results) // 2]


if __name__ == "__main__":
    raise SystemExit(main())
