"""The load generator: client processes (spawned, so that no gRPC state crosses a fork) that keep a
fixed number of calls in flight and record every call's latency. Measured on this machine, blocking
calls and futures cost the client about half what grpc.aio does, so the generator uses those."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

WARMUP_S = 0.2


def _request(call: str, seq: str, args: dict[str, Any]) -> tuple[str, Any]:
    """(stub, method) and the request of one call; `seq` makes every write unique."""
    if call == "Check":
        return "health", health_pb2.HealthCheckRequest()
    if call == "GetModel":
        return "registry", pb.GetModelRequest(name=args["model"])
    if call == "GetModelVersion":  # the latest
        return "registry", pb.GetModelVersionRequest(model_name=args["model"])
    if call == "GetModelVersion:number":
        return "registry", pb.GetModelVersionRequest(model_name=args["model"], version=1)
    if call == "GetModelVersion:alias":
        return "registry", pb.GetModelVersionRequest(model_name=args["model"], alias=args["alias"])
    if call == "GetCheckpoint":
        return "registry", pb.GetCheckpointRequest(uuid=args["checkpoint"])
    if call == "ListModelVersions":
        return "registry", pb.ListModelVersionsRequest(model_name=args["model"], page_size=50)
    if call == "ListModels":
        return "registry", pb.ListModelsRequest(
            page_size=args.get("page_size", 50), page_token=args.get("page_token", ""), name=args.get("name", ""),
            description=args.get("description", ""),
        )
    if call == "CreateModel":
        return "registry", pb.CreateModelRequest(name=f"{args['prefix']}-{seq}", description="bench")
    if call == "CreateModelVersion":
        return "registry", pb.CreateModelVersionRequest(
            model_name=args["model"], checkpoint_uuid=args["checkpoint"], request_id=f"{args['prefix']}-{seq}"
        )
    if call == "SetModelAlias":  # moves the alias between the model's versions 1..10
        return "registry", pb.SetModelAliasRequest(
            model_name=args["model"], alias=args["alias"], version=1 + sum(map(ord, seq)) % 10
        )
    if call == "UpdateModelMetadata":
        merge = struct_pb2.Struct()
        merge.update({"bench": seq})
        return "registry", pb.UpdateModelMetadataRequest(name=args["model"], merge=merge)
    raise ValueError(f"unknown call {call}")


@dataclass
class Job:
    """What one client process does: `tasks` calls in flight for `duration` seconds after a warm-up."""

    target: str
    call: str
    args: dict[str, Any]
    tasks: int
    duration: float
    worker: str


def run_job(job: Job) -> tuple[list[float], float, int]:
    """Blocking calls at one in flight (the cheapest client there is); otherwise a window of futures,
    each timed by its completion callback, refilled as the oldest completes."""
    with grpc.insecure_channel(job.target) as channel:
        stubs = {"health": health_pb2_grpc.HealthStub(channel), "registry": pb_grpc.ModelRegistryServiceStub(channel)}
        stub_name, _ = _request(job.call, "0", job.args)
        method: Any = getattr(stubs[stub_name], job.call.partition(":")[0])
        counter = iter(range(10**9))
        timings: list[tuple[float, float]] = []
        start = time.perf_counter()
        window_start, window_end = start + WARMUP_S, start + WARMUP_S + job.duration

        def request() -> Any:
            return _request(job.call, f"{job.worker}.{next(counter)}", job.args)[1]

        if job.tasks == 1:
            while True:
                message = request()
                began = time.perf_counter()
                if began >= window_end:
                    break
                method(message, timeout=30)
                timings.append((began, time.perf_counter()))
        else:
            in_flight: deque[grpc.Future] = deque()

            def issue() -> None:
                message = request()
                began = time.perf_counter()
                future = method.future(message, timeout=30)
                future.add_done_callback(lambda _, began=began: timings.append((began, time.perf_counter())))
                in_flight.append(future)

            for _ in range(job.tasks):
                issue()
            while in_flight:
                in_flight.popleft().result()  # raises if the call failed
                if time.perf_counter() < window_end:
                    issue()
        inside = [(began, end) for began, end in timings if began >= window_start and end <= window_end]
        if inside:
            return [end - began for began, end in inside], job.duration, len(timings)
        # On a loaded machine a short window may see no call complete in it: measure over the calls
        # that did complete (there is at least one: the loop waits for every call it issued).
        began_first, ended_last = min(b for b, _ in timings), max(e for _, e in timings)
        return [end - began for began, end in timings], ended_last - began_first, len(timings)


@dataclass
class Result:
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int  # completed inside the measured window
    completed: int = 0  # completed in all, warm-up included: what the server's CPU time was spent on
    server_cpu_us: float = float("nan")  # server CPU time per completed call (set by the caller)


def summarise(parts: list[tuple[list[float], float, int]]) -> Result:
    latencies = sorted(x for lats, _, _ in parts for x in lats)
    window = max(w for _, w, _ in parts)
    completed = sum(n for _, _, n in parts)
    if not latencies:
        return Result(0.0, float("nan"), float("nan"), 0, completed)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(len(latencies) / window, statistics.median(latencies) * 1e3, p99 * 1e3, len(latencies), completed)


class LoadGenerator:
    """A pool of client processes; `measure` spreads the calls in flight over them."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.pool = multiprocessing.get_context("spawn").Pool(processes)

    def measure(self, target: str, call: str, args: dict[str, Any], in_flight: int, duration: float, tag: str) -> Result:
        procs = min(self.processes, in_flight)
        shares = [in_flight // procs + (1 if i < in_flight % procs else 0) for i in range(procs)]
        jobs = [Job(target, call, args, tasks, duration, f"{tag}.{i}") for i, tasks in enumerate(shares)]
        return summarise(self.pool.map(run_job, jobs))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
