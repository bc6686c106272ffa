"""Runs the whole benchmark against one server process and prints/writes the results.

Order: start on an empty database (start-up, idle memory) -> load the small data set -> scale runs at
the small size -> throughput of every call beside the health Check baseline -> load up to the large
size -> scale runs at the large size -> memory after the load -> restart on the loaded database."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from .data import FILTER_MATCHES, Loader
from .load import LoadGenerator, Result
from .server import BenchServer

RESULTS_DIR = Path(__file__).parent / "results"
# The calls of the table; "GetModelVersion" is the latest, ":number" and ":alias" the others.
READS = ("GetModel", "GetModelVersion", "GetModelVersion:number", "GetModelVersion:alias", "GetCheckpoint",
         "ListModels", "ListModelVersions")
WRITES = ("CreateModel", "CreateModelVersion", "SetModelAlias", "UpdateModelMetadata")
IN_FLIGHT = (1, 16)
# Targets of the issue, on the SQLite default with one server process.
TARGETS = {
    **{(call, n): target for call in READS[:5] for n, target in ((1, 0.7), (16, 0.5))},
    **{(call, n): target for call in WRITES for n, target in ((1, 0.5), (16, 0.3))},
    **{(call, n): target for call in READS[5:] for n, target in ((1, 0.35), (16, 0.2))},
}
# Server CPU time per call, as a multiple of the no-op's (reads, writes).
MAX_CPU_RATIO = {**{call: 2.0 for call in READS}, **{call: 4.0 for call in WRITES}}
# `--workers 2` against one process, reads at 16 in flight: calls/s should grow with the cores the
# server can have; with fewer than 4 cores the load generator holds one and there is nothing to gain.
WORKER_CALLS = ("GetModel", "GetModelVersion")
MIN_WORKERS_GAIN, WORKERS_GAIN_CORES = 1.3, 4
MAX_SCALE_RATIO = 1.5
MAX_RSS_IDLE_MB, MAX_RSS_LOADED_MB = 80, 150
MAX_STARTUP_S = 1.5
# The server needs a core of its own: more client processes than the other cores only steal it.
DEFAULT_CLIENTS = max(1, min(4, (os.cpu_count() or 2) - 1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--database-url", default="", help="postgresql://... to bench on PostgreSQL (a fresh "
                        "schema is made and dropped); default: a new SQLite file in a temporary directory")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, short windows")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (default 3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 1.0)")
    parser.add_argument("--small-models", type=int, default=None, help="models of the small size (default 1,000)")
    parser.add_argument("--large-models", type=int, default=None, help="models of the large size (default 100,000)")
    parser.add_argument("--large-versions", type=int, default=None, help="versions loaded (default 100,000)")
    parser.add_argument("--deep-versions", type=int, default=None, help="versions of the deep model (default 10,000)")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS,
                        help="client processes of the load generator; default one per core but the server's "
                        "(%(default)s here)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="a flag passed to model-registry-server, e.g. --server-arg=--threads=8 (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON results "
                        "(default bench/results/bench-<database>-<time>.json)")
    args = parser.parse_args(argv)
    quick = {"duration": 0.3, "small_models": 100, "large_models": 1000, "large_versions": 1000, "deep_versions": 200}
    full = {"duration": 1.0, "small_models": 1000, "large_models": 100_000, "large_versions": 100_000,
            "deep_versions": 10_000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.small_models < FILTER_MATCHES + 10 or args.large_models < args.small_models:
        parser.error(f"--small-models must be at least {FILTER_MATCHES + 10} and at most --large-models")
    if args.large_versions < args.deep_versions + 10 or args.large_versions - args.deep_versions > args.large_models:
        parser.error("--large-versions must exceed --deep-versions and fit one per large model")
    if args.reps < 1 or args.clients < 1 or args.duration <= 0:
        parser.error("--reps, --clients and --duration must be positive")
    return args


class Database:
    """A fresh database for the run: a SQLite file in a temporary directory, or a new PostgreSQL schema."""

    def __init__(self, url: str, stack: ExitStack) -> None:
        self.kind = "postgresql" if url else "sqlite"
        if not url:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-bench-"))
            self.url = f"sqlite:///{directory}/registry.db"
            return
        import psycopg2

        schema = "bench_" + uuid.uuid4().hex[:12]
        admin = psycopg2.connect(url)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE SCHEMA {schema}")
        stack.callback(admin.close)
        stack.callback(admin.cursor().execute, f"DROP SCHEMA {schema} CASCADE")
        self.url = f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, server: BenchServer, load: LoadGenerator) -> None:
        self.args = args
        self.server = server
        self.load = load
        self.channel = grpc.insecure_channel(server.target)
        self.stub = pb_grpc.ModelRegistryServiceStub(self.channel)

    def measure(self, call: str, call_args: dict[str, Any], in_flight: int, tag: str,
                server: BenchServer | None = None) -> Result:
        """One measurement, with the server's CPU time per completed call."""
        server = server or self.server
        cpu = server.cpu_s()
        result = self.load.measure(server.target, call, call_args, in_flight, self.args.duration, tag)
        if result.completed:
            result.server_cpu_us = (server.cpu_s() - cpu) / result.completed * 1e6
        return result

    def throughput(self, call_args: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Every call beside the baseline, at each number in flight; repetitions interleave the calls
        so that a slow moment of the machine hits all of them alike."""
        runs: dict[tuple[str, int], list[tuple[Result, Result]]] = {}
        for rep in range(self.args.reps):
            for in_flight in IN_FLIGHT:
                for call in READS + WRITES:
                    baseline = self.measure("Check", {}, in_flight, f"b{rep}")
                    result = self.measure(call, {**call_args[call], "prefix": f"w-{rep}-{in_flight}"}, in_flight, f"r{rep}")
                    runs.setdefault((call, in_flight), []).append((baseline, result))
                    _progress(f"rep {rep + 1} {call} x{in_flight}: {result.calls_per_s:.0f}/s "
                              f"(baseline {baseline.calls_per_s:.0f}/s)")
        rows = []
        for (call, in_flight), pairs in runs.items():
            row = {
                "call": call,
                "in_flight": in_flight,
                "calls_per_s": _median([r.calls_per_s for _, r in pairs]),
                "p50_ms": _median([r.p50_ms for _, r in pairs]),
                "p99_ms": _median([r.p99_ms for _, r in pairs]),
                "baseline_calls_per_s": _median([b.calls_per_s for b, _ in pairs]),
                "baseline_p50_ms": _median([b.p50_ms for b, _ in pairs]),
                "baseline_p99_ms": _median([b.p99_ms for b, _ in pairs]),
                # Ratios per repetition (baseline of the same repetition), then their median.
                "ratio_calls_per_s": _median([r.calls_per_s / b.calls_per_s for b, r in pairs if b.calls_per_s]),
                "ratio_p50": _median([r.p50_ms / b.p50_ms for b, r in pairs]),
                "ratio_p99": _median([r.p99_ms / b.p99_ms for b, r in pairs]),
                "target_ratio_calls_per_s": TARGETS.get((call, in_flight)),
                "server_cpu_us": _median([r.server_cpu_us for _, r in pairs]),
                "baseline_server_cpu_us": _median([b.server_cpu_us for b, _ in pairs]),
                "ratio_server_cpu": _median([r.server_cpu_us / b.server_cpu_us for b, r in pairs if b.server_cpu_us > 0]),
                "target_ratio_server_cpu": MAX_CPU_RATIO[call],
                "repetitions": [{"baseline": vars(b), "call": vars(r)} for b, r in pairs],
            }
            rows.append(row)
        return rows

    def latency(self, call: str, call_args: dict[str, Any], tag: str) -> dict[str, Any]:
        """One call at one in flight, each repetition just after a baseline Check; medians."""
        pairs = [(self.measure("Check", {}, 1, f"b{tag}{rep}"), self.measure(call, call_args, 1, f"{tag}{rep}"))
                 for rep in range(self.args.reps)]
        return {"p50_ms": _median([r.p50_ms for _, r in pairs]), "p99_ms": _median([r.p99_ms for _, r in pairs]),
                "calls_per_s": _median([r.calls_per_s for _, r in pairs]),
                "baseline_p50_ms": _median([b.p50_ms for b, _ in pairs]),
                "p50_over_baseline": _median([r.p50_ms / b.p50_ms for b, r in pairs])}

    def workers(self, other: BenchServer, call_args: dict[str, Any]) -> list[dict[str, Any]]:
        """Reads at 16 in flight against `other` (`--workers 2`) and this one process, interleaved."""
        rows = []
        for call in WORKER_CALLS:
            pairs = [(self.measure(call, call_args, 16, f"o{rep}"), self.measure(call, call_args, 16, f"w{rep}", other))
                     for rep in range(self.args.reps)]
            rows.append({
                "call": call, "in_flight": 16,
                "one_process_calls_per_s": _median([one.calls_per_s for one, _ in pairs]),
                "workers_calls_per_s": _median([two.calls_per_s for _, two in pairs]),
                "ratio": _median([two.calls_per_s / one.calls_per_s for one, two in pairs if one.calls_per_s]),
            })
            _progress(f"{call} x16: --workers 2 {rows[-1]['ratio']:.2f}x one process")
        return rows

    def deep_token(self, position: int) -> str:
        """The page token after `position` models in name order, walked to through the API."""
        token, walked = "", 0
        while walked < position:
            size = min(1000, position - walked)
            reply = self.stub.ListModels(pb.ListModelsRequest(page_size=size, page_token=token), timeout=60)
            token, walked = reply.next_page_token, walked + len(reply.models)
        return token

    def scale_point(self, models: int) -> dict[str, Any]:
        total = self.stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=60).total_size
        assert total == models, f"expected {models} models, the server counts {total}"
        matches = self.stub.ListModels(pb.ListModelsRequest(name="findme"), timeout=60).total_size
        assert matches == FILTER_MATCHES, f"the name filter matches {matches}"
        return {
            "ListModels first page": self.latency("ListModels", {}, "first"),
            "ListModels deep page": self.latency("ListModels", {"page_token": self.deep_token(models - 100)}, "deep"),
            "ListModels name filter": self.latency("ListModels", {"name": "findme"}, "filter"),
            # Two characters: shorter than a trigram, so no trigram index can narrow it.
            "ListModels short name filter": self.latency("ListModels", {"name": "fi"}, "short"),
            # Matches nearly every model: a page of 50 should not cost more because more rows match.
            "ListModels name filter matching all": self.latency("ListModels", {"name": "model"}, "all"),
            "ListModels description filter matching all": self.latency(
                "ListModels", {"description": "benchmark"}, "description"
            ),
        }


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _sizes(n: int, prefix: str, start: int = 0) -> Iterator[str]:
    return (f"{prefix}-{i:06d}" for i in range(start, n))


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"targets": {"read_write_ratio": {f"{c} x{n}": t for (c, n), t in TARGETS.items()},
                                           "scale_ratio": MAX_SCALE_RATIO, "rss_idle_mb": MAX_RSS_IDLE_MB,
                                           "rss_loaded_mb": MAX_RSS_LOADED_MB, "startup_s": MAX_STARTUP_S}}
    with ExitStack() as stack:
        db = Database(args.database_url, stack)
        log_dir = Path(tempfile.mkdtemp(prefix="registry-bench-log-"))
        stack.callback(shutil.rmtree, log_dir, True)
        load = LoadGenerator(args.clients)
        stack.callback(load.close)

        _progress("starting the server on an empty database")
        server = BenchServer(db.url, args.server_arg, log_dir / "server.log")
        stack.callback(server.stop)
        startup_empty = server.startup_s
        time.sleep(0.5)
        rss_idle = server.rss_mb()

        loader = Loader(db.url)
        stack.callback(loader.close)
        checkpoint = loader.checkpoint()
        named = ["shallow-versions", "deep-versions", "write-target", "listed-versions"]
        named += [f"findme-{i:02d}" for i in range(FILTER_MATCHES)]
        loader.models(named)
        loader.models(_sizes(args.small_models - len(named), "model"))
        loader.versions(loader.model_ids("shallow-versions", 1), 10, checkpoint)
        loader.versions(loader.model_ids("listed-versions", 1), 60, checkpoint)
        loader.versions(loader.model_ids("write-target", 1), 10, checkpoint)
        loader.alias("shallow-versions", "production", 3)
        bench = Bench(args, server, load)

        _progress(f"scale runs at {args.small_models} models")
        small = bench.scale_point(args.small_models)

        _progress("throughput beside the baseline")
        model_args = {"model": "shallow-versions", "alias": "production", "checkpoint": checkpoint}
        write_args = {"model": "write-target", "checkpoint": checkpoint, "alias": "canary"}
        throughput = bench.throughput({
            **{call: model_args for call in READS}, "ListModels": {}, "ListModelVersions": {"model": "listed-versions"},
            **{call: write_args for call in WRITES},
        })
        loader.delete_models("w-")

        _progress("--workers 2 beside one process")
        workers_server = BenchServer(db.url, [*args.server_arg, "--workers", "2"], log_dir / "workers.log")
        workers = bench.workers(workers_server, model_args)
        workers_server.stop()

        _progress(f"loading {args.large_models} models and {args.large_versions} versions")
        began = time.perf_counter()
        loader.models(_sizes(args.large_models - len(named), "model", args.small_models - len(named)))
        loader.versions(loader.model_ids("deep-versions", 1), args.deep_versions, checkpoint)
        loader.versions(loader.model_ids("model-", args.large_versions - args.deep_versions), 1, checkpoint)
        load_s = time.perf_counter() - began

        _progress(f"scale runs at {args.large_models} models")
        large = bench.scale_point(args.large_models)
        shallow = bench.latency("GetModelVersion", {"model": "shallow-versions"}, "shallow")
        deep = bench.latency("GetModelVersion", {"model": "deep-versions"}, "deep")
        rss_loaded = server.rss_mb()
        bench.channel.close()
        server.stop()

        _progress("restarting on the loaded database")
        again = BenchServer(db.url, args.server_arg, log_dir / "server.log")
        startup_loaded = again.startup_s
        again.stop()

    cases = [(f"{name}: {args.large_models} vs {args.small_models} models", small[name], large[name]) for name in small]
    cases.append((f"GetModelVersion latest: {args.deep_versions} vs 10 versions", shallow, deep))
    # The small and the large size are measured minutes apart on a machine that may be shared; the
    # ratio of each size's p50 to the baseline Check measured just before it divides that out.
    scale = [{"case": case, "small": lo, "large": hi, "ratio_p50": hi["p50_ms"] / lo["p50_ms"],
              "ratio_p50_over_baseline": hi["p50_over_baseline"] / lo["p50_over_baseline"]}
             for case, lo, hi in cases]
    results.update({
        "throughput": throughput,
        "workers": workers,
        "scale": scale,
        "memory": {"rss_idle_mb": rss_idle, "rss_loaded_mb": rss_loaded},
        "startup": {"empty_s": startup_empty, "loaded_s": startup_loaded},
        "bulk_load_s": load_s,
    })
    return results


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "grpcio": grpc.__version__}


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def table(results: dict[str, Any]) -> str:
    lines = ["", f"Model registry benchmark, {results['date']} on {results['machine']['cpu']} "
                 f"({results['machine']['cores']} cores), database {results['database']}", ""]
    lines.append(f"{'call':<22}{'in flight':>10}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
                 f"{'x calls/s':>11}{'x p50':>8}{'x p99':>8}  {'target':<12}{'cpu µs':>8}{'x cpu':>7}  target")
    baseline_rows = {}
    for row in results["throughput"]:
        baseline_rows.setdefault(row["in_flight"], row)
    for in_flight, row in sorted(baseline_rows.items()):
        lines.append(f"{'health Check (base)':<22}{in_flight:>10}{row['baseline_calls_per_s']:>10.0f}"
                     f"{row['baseline_p50_ms']:>9.2f}{row['baseline_p99_ms']:>9.2f}{1:>11.2f}{1:>8.2f}{1:>8.2f}"
                     f"  {'':<12}{row['baseline_server_cpu_us']:>8.0f}{1:>7.2f}")
    for row in sorted(results["throughput"], key=lambda r: (r["in_flight"], (READS + WRITES).index(r["call"]))):
        target = row["target_ratio_calls_per_s"]
        verdict = f">= {target} {_mark(row['ratio_calls_per_s'] >= target)}" if target else ""
        cpu_target = row["target_ratio_server_cpu"]
        lines.append(f"{row['call']:<22}{row['in_flight']:>10}{row['calls_per_s']:>10.0f}{row['p50_ms']:>9.2f}"
                     f"{row['p99_ms']:>9.2f}{row['ratio_calls_per_s']:>11.2f}{row['ratio_p50']:>8.2f}"
                     f"{row['ratio_p99']:>8.2f}  {verdict:<12}{row['server_cpu_us']:>8.0f}{row['ratio_server_cpu']:>7.2f}"
                     f"  <= {cpu_target} {_mark(row['ratio_server_cpu'] <= cpu_target)}")
    cores = results["machine"]["cores"] or 1
    lines += ["", f"{'--workers 2 vs one process':<30}{'one proc/s':>11}{'workers/s':>11}{'ratio':>7}  target"]
    for row in results["workers"]:
        verdict = (f">= {MIN_WORKERS_GAIN} {_mark(row['ratio'] >= MIN_WORKERS_GAIN)}" if cores >= WORKERS_GAIN_CORES
                   else f"n/a ({cores} cores: the load generator holds one; >= {MIN_WORKERS_GAIN} with {WORKERS_GAIN_CORES}+)")
        lines.append(f"{row['call'] + ' x16':<30}{row['one_process_calls_per_s']:>11.0f}{row['workers_calls_per_s']:>11.0f}"
                     f"{row['ratio']:>7.2f}  {verdict}")
    lines += ["", f"{'scale (p50 at 1 in flight)':<58}{'small ms':>9}{'large ms':>9}{'ratio':>7}{'/base':>7}"
                  f"  target (raw, /base)"]
    for row in results["scale"]:
        raw, adjusted = row["ratio_p50"], row["ratio_p50_over_baseline"]
        lines.append(f"{row['case']:<58}{row['small']['p50_ms']:>9.2f}{row['large']['p50_ms']:>9.2f}"
                     f"{raw:>7.2f}{adjusted:>7.2f}  <= {MAX_SCALE_RATIO} {_mark(raw <= MAX_SCALE_RATIO)}, "
                     f"{_mark(adjusted <= MAX_SCALE_RATIO)}")
    memory, startup = results["memory"], results["startup"]
    lines += [
        "",
        f"server RSS idle            {memory['rss_idle_mb']:7.1f} MB   <= {MAX_RSS_IDLE_MB} "
        f"{_mark(memory['rss_idle_mb'] <= MAX_RSS_IDLE_MB)}",
        f"server RSS after the load  {memory['rss_loaded_mb']:7.1f} MB   <= {MAX_RSS_LOADED_MB} "
        f"{_mark(memory['rss_loaded_mb'] <= MAX_RSS_LOADED_MB)}",
        f"start-up, empty database   {startup['empty_s']:7.2f} s    < {MAX_STARTUP_S} "
        f"{_mark(startup['empty_s'] < MAX_STARTUP_S)}",
        f"start-up, loaded database  {startup['loaded_s']:7.2f} s    < {MAX_STARTUP_S} "
        f"{_mark(startup['loaded_s'] < MAX_STARTUP_S)}",
        f"bulk load (not a target)   {results['bulk_load_s']:7.1f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "database": "postgresql" if args.database_url else "sqlite",
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "database_url"},
    }
    results.update(run(args))
    results["wall_s"] = time.perf_counter() - began
    print(table(results))
    path = args.json or RESULTS_DIR / f"bench-{results['database']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {path}  (whole run {results['wall_s']:.0f} s)")
    return 0
