"""The `model-registry-server` command: flags, logging, signals, and worker processes."""

from __future__ import annotations

import argparse
import logging
import math
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import grpc
import peewee as pw
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import __version__, auth, logs, metrics, server, tracing
from . import db as database
from .events import WATCH_POLL_INTERVAL_S
from .files import DEFAULT_MAX_UPLOAD_BYTES
from .server import TlsFiles, build_server
from .storage import open_storage

log = logging.getLogger("registry_server")

STOP_MARGIN_S = 5.0  # after SIGTERM, grace plus this margin, then the kernel ends the process (SIGALRM)
SIGNAL_POLL_S = 0.2  # the main thread runs signal handlers delivered to other threads this often
WORKER_PROBE_TIMEOUT_S = 30.0
WORKER_PROBE_INTERVAL_S = 1.0
# A worker that exits before it ever answered its health probe failed to start: it is started again
# after a backoff, and after this many such failures in a row the server gives up.
MAX_START_FAILURES = 5
RESTART_BACKOFF_S = (0.5, 30.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="model-registry-server",
        description="Serve the model registry over gRPC and HTTP/JSON.",
        epilog="Backups: model-registry-server export --output FILE [...], model-registry-server import --input "
        "FILE [...] (see model-registry-server export --help).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--http-port",
        type=int,
        default=int(env("MODEL_REGISTRY_HTTP_PORT", "8080")),
        help="port of the HTTP/JSON API, the OpenAPI document and the web UI, on the same --host; 0 picks a free "
        "one (env MODEL_REGISTRY_HTTP_PORT; default: %(default)s)",
    )
    parser.add_argument("--no-http", action="store_true", help="serve gRPC only, no HTTP port")
    parser.add_argument(
        "--database-url",
        default=env("MODEL_REGISTRY_DATABASE_URL", database.DEFAULT_DATABASE_URL),
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (env MODEL_REGISTRY_DATABASE_URL; "
        f"default {database.DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--storage-dir",
        default=env("MODEL_REGISTRY_STORAGE_DIR"),
        help="directory of checkpoint files (env MODEL_REGISTRY_STORAGE_DIR; default: registry-files/ beside "
        "the SQLite file, ./registry-files for PostgreSQL)",
    )
    parser.add_argument(
        "--storage-url",
        default=env("MODEL_REGISTRY_STORAGE_URL"),
        help="fsspec URL of checkpoint files instead, e.g. s3://bucket/prefix (needs model-registry[s3]) "
        "(env MODEL_REGISTRY_STORAGE_URL)",
    )
    parser.add_argument(
        "--storage-options",
        default=env("MODEL_REGISTRY_STORAGE_OPTIONS"),
        metavar="JSON",
        help='options of the --storage-url filesystem, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\' '
        "(env MODEL_REGISTRY_STORAGE_OPTIONS)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env("MODEL_REGISTRY_WORKERS", "1")),
        help="server processes sharing the port, e.g. one per core (env MODEL_REGISTRY_WORKERS; default 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=server.DEFAULT_WORKERS,
        help="threads serving calls in each process, and database connections in its pool (default: %(default)s)",
    )
    parser.add_argument(
        "--watch-poll-interval",
        type=float,
        default=WATCH_POLL_INTERVAL_S,
        help="seconds between a watch stream's looks for events committed through other replicas; "
        "this process's own commits wake it at once (default: %(default)s)",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=database.SQLITE_SYNCHRONOUS,
        default=env("MODEL_REGISTRY_SQLITE_SYNCHRONOUS", "full"),
        help="full: every acknowledged write survives a power cut (one fsync per commit); normal: it survives "
        "a crash of the server but not of the machine, and writes are faster (env MODEL_REGISTRY_SQLITE_SYNCHRONOUS; "
        "default full)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds calls in flight get to finish on SIGTERM; the process is ended "
        f"{STOP_MARGIN_S:.0f}s after that whatever it is doing (default: %(default)s)",
    )
    parser.add_argument(
        "--worker-probe-timeout",
        type=float,
        default=WORKER_PROBE_TIMEOUT_S,
        help="with --workers: a worker whose own health probe has not answered for this many seconds is "
        "killed and replaced (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default=env("MODEL_REGISTRY_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING... (default: %(default)s)"
    )
    operating = parser.add_argument_group("operating", "metrics, traces and logs (README.md, Operating)")
    operating.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=env("MODEL_REGISTRY_LOG_FORMAT", "text"),
        help="text, or json: one object a line with time, level, logger, message (and trace_id, span_id "
        "while tracing) (env MODEL_REGISTRY_LOG_FORMAT; default text)",
    )
    operating.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (--host; 0 picks a free port), without "
        "authentication; off by default",
    )
    operating.add_argument(
        "--no-metrics", action="store_true", help="record no metrics at all (they cost ~1-2%% of a GetModel)"
    )
    operating.add_argument(
        "--tracing",
        action="store_true",
        help="OpenTelemetry spans of every call (needs model-registry[otel]); also on when OTEL_TRACES_EXPORTER "
        "or OTEL_EXPORTER_OTLP_ENDPOINT is set; configured by the standard OTEL_* variables",
    )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--auth-tokens",
        metavar="FILE",
        help="bearer tokens, one `TOKEN PRINCIPAL ROLE` a line (role viewer, editor or admin); read again on "
        "SIGHUP. Without it every caller may do everything, and only loopback addresses are served",
    )
    security.add_argument(
        "--insecure-allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback --host without --auth-tokens",
    )
    security.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (needs --tls-key)")
    security.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", metavar="PEM", help="mutual TLS: accept only clients with a certificate signed by this CA"
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-request-bytes",
        type=int,
        default=server.MAX_REQUEST_BYTES,
        help="largest request message; larger ones get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    limits.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=server.MAX_CONCURRENT_RPCS,
        help="unary calls in progress (running or queued) at once per process; more get RESOURCE_EXHAUSTED "
        "TOO_MANY_CALLS (default: %(default)s)",
    )
    streams = parser.add_argument_group(
        "streams", "each kind of stream runs on threads of its own, so that streams never take the capacity of unary calls"
    )
    for flag, default, what in (
        ("--max-watchers", server.MAX_WATCHERS, "WatchEvents streams"),
        ("--max-uploads", server.MAX_UPLOADS, "UploadCheckpointFiles streams"),
        ("--max-downloads", server.MAX_DOWNLOADS, "DownloadCheckpointFiles streams"),
    ):
        streams.add_argument(
            flag, type=int, default=default, help=f"{what} at once per process; more get RESOURCE_EXHAUSTED "
            "TOO_MANY_STREAMS (default: %(default)s)"
        )
    streams.add_argument(
        "--max-streams-per-caller",
        type=int,
        default=server.MAX_STREAMS_PER_CALLER,
        help="streams of each kind one principal may have open at once per process (default: %(default)s)",
    )
    streams.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=server.STREAM_IDLE_TIMEOUT_S,
        help="seconds a stream may wait on its peer (a download not read, an upload not sent) before it is "
        "ended DEADLINE_EXCEEDED (default: %(default)s)",
    )
    limits.add_argument(
        "--max-upload-bytes",
        type=int,
        default=int(env("MODEL_REGISTRY_MAX_UPLOAD_BYTES", str(DEFAULT_MAX_UPLOAD_BYTES))),
        help="bytes of checkpoint files one upload may carry; more get RESOURCE_EXHAUSTED UPLOAD_TOO_LARGE "
        "(env MODEL_REGISTRY_MAX_UPLOAD_BYTES; default: %(default)s, 100 GiB)",
    )
    args = parser.parse_args(argv)
    if args.max_upload_bytes < 1:
        parser.error("--max-upload-bytes must be at least 1")
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    if min(args.max_watchers, args.max_uploads, args.max_downloads, args.max_streams_per_caller) < 1:
        parser.error("--max-watchers, --max-uploads, --max-downloads and --max-streams-per-caller must be at least 1")
    if not 0 < args.watch_poll_interval <= 60:
        parser.error("--watch-poll-interval must be above 0 and at most 60 seconds")
    if not 0 < args.stream_idle_timeout <= 3600 or not 1 <= args.worker_probe_timeout <= 3600:
        parser.error("--stream-idle-timeout and --worker-probe-timeout must be positive and at most an hour")
    if args.grace < 0:
        parser.error("--grace must not be negative")
    if args.max_request_bytes < 1 or args.max_concurrent_rpcs < 1:
        parser.error("--max-request-bytes and --max-concurrent-rpcs must be at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error("--metrics-port must be a port number (0 picks a free one)")
    if args.metrics_port is not None and args.no_metrics:
        parser.error("--metrics-port and --no-metrics contradict each other")
    return args


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["export"], ["import"]):
        from .backup_command import main as backup_main

        return backup_main(argv)
    args = parse_args(argv)
    logs.setup(args.log_level, args.log_format)  # inherited by the workers
    if args.workers == 1:
        if not args.no_metrics:
            metrics.configure()
        exporter = _serve_metrics(args)
        if exporter is False:
            return 1
        try:
            return _serve(args, args.port, reuse_port=False)
        finally:
            if exporter is not None:
                exporter.shutdown()  # type: ignore[attr-defined]
    return _serve_workers(args)


def _serve_metrics(args: argparse.Namespace) -> object:
    """The --metrics-port server of this process (None without the flag; False when it cannot start)."""
    if args.metrics_port is None:
        return None
    try:
        metrics.check_exposure(args.host, args.auth_tokens is not None, explicit=True)
        httpd, port = metrics.serve(args.host, args.metrics_port)
    except (OSError, ValueError) as error:
        log.error("cannot start: cannot serve metrics on %s:%d: %s", args.host, args.metrics_port, error)
        return False
    log.info("metrics serving on %s:%d", args.host, port)
    return httpd


def _start_tracing(args: argparse.Namespace) -> bool:
    """Tracing on in this process when asked for; False when it cannot be (logged)."""
    if not tracing.wanted(args.tracing):
        return True
    try:
        tracing.configure()
    except ImportError:
        log.error("cannot start: tracing needs OpenTelemetry: pip install 'model-registry[otel]'")
        return False
    except ValueError as error:
        log.error("cannot start: %s", error)
        return False
    log.info("tracing on (OpenTelemetry)")
    return True


def _start_error(error: Exception, database_url: str) -> str:
    """One line on why the server cannot start: the database named (password redacted), the cause,
    and a hint; never a traceback."""
    if isinstance(error, pw.PeeweeException):
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"database {database.redacted(database_url)} cannot be used: {cause} "
            "(is the database running, does it exist, may this user connect? see --database-url)"
        )
    return str(error)


def _serve(
    args: argparse.Namespace,
    port: int,
    *,
    reuse_port: bool,
    worker: str = "",
    probe: tuple[str, int] | None = None,
    http_port: int | None = None,
) -> int:
    """Runs one server process until SIGTERM or SIGINT, then drains it and exits 0. A worker
    (`probe`: a private address and the pipe to its parent) also listens on that address and proves
    every second that it still answers its own health Check, by a byte down the pipe."""
    if not _start_tracing(args):
        return 1
    try:
        storage = open_storage(args.database_url, args.storage_dir, args.storage_url, args.storage_options)
        running = build_server(
            args.database_url,
            args.host,
            port,
            max_workers=args.threads,
            reuse_port=reuse_port,
            watch_poll_interval=args.watch_poll_interval,
            max_watchers=args.max_watchers,
            max_uploads=args.max_uploads,
            max_downloads=args.max_downloads,
            max_streams_per_caller=args.max_streams_per_caller,
            stream_idle_timeout=args.stream_idle_timeout,
            storage=storage,
            auth_tokens=args.auth_tokens,
            allow_unauthenticated=args.insecure_allow_unauthenticated,
            tls=_tls(args),
            max_request_bytes=args.max_request_bytes,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            sqlite_synchronous=args.sqlite_synchronous,
            private_address=probe[0] if probe else None,
            max_upload_bytes=args.max_upload_bytes,
            with_metrics=not args.no_metrics,
            http_port=None if args.no_http else (args.http_port if http_port is None else http_port),
        )
    except (OSError, ValueError, pw.PeeweeException) as error:
        log.error("cannot start%s: %s", worker, _start_error(error, args.database_url))
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: running.reload_tokens())
    if running.http_port is not None:  # before the gRPC line: whoever waits for that one finds both ports
        log.info("http serving on %s:%d%s (%s)", args.host, running.http_port, worker, "HTTPS" if args.tls_cert else "HTTP")
    log.info(
        "model registry serving on %s:%d%s (database %s, files %s, %s, %s)",
        args.host,
        running.port,
        worker,
        database.redacted(args.database_url),
        storage.uri(),
        "TLS" + (" with client certificates" if args.tls_client_ca else "") if args.tls_cert else "plaintext",
        "bearer tokens" if args.auth_tokens else "no authentication",
    )
    if probe is not None:
        threading.Thread(target=_prove_alive, args=(probe[0], probe[1], stop), name="probe", daemon=True).start()
    wait_for_stop(stop)
    # Whatever state the process is in (a wedged thread, a call that ignores cancellation), the
    # kernel ends it once the grace period and a margin are over: SIGALRM's default action needs no
    # Python thread, not even the GIL.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(math.ceil(args.grace + STOP_MARGIN_S))
    log.info("stopping%s: finishing calls in flight (up to %.0fs)", worker, args.grace)
    running.stop(args.grace)
    log.info("stopped%s", worker)
    return 0


def _prove_alive(address: str, heartbeat: int, stop: threading.Event) -> None:
    """Calls this process's own health Check through its private address every second, and writes a
    byte to the parent after each answer: a worker that stops answering stops beating, and its parent
    replaces it."""
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=WORKER_PROBE_TIMEOUT_S / 3)
                os.write(heartbeat, b".")
            except grpc.RpcError as error:
                log.warning("own health probe failed: %s", error.code())
            except BlockingIOError:
                pass  # the parent has not read the previous beats yet: it knows we are alive
            except OSError:
                return  # the parent is gone
            stop.wait(WORKER_PROBE_INTERVAL_S)


@dataclass
class _Worker:
    """A worker process as its parent sees it."""

    index: int
    pid: int
    heartbeat: int  # read end of the pipe the worker beats on
    started: float
    last_beat: float | None = None  # None until it first answered its health probe
    failures: list[int] = field(default_factory=list)


def _serve_workers(args: argparse.Namespace) -> int:
    """Forks `--workers` processes that share one port (SO_REUSEPORT), before any gRPC server or
    database connection exists in this process. Restarts a worker that dies (after a backoff when it
    died before it ever served) and kills and replaces one that stops answering its own health probe;
    gives up only when workers fail to start MAX_START_FAILURES times in a row. Forwards SIGTERM to
    every worker, and SIGKILLs those still alive after the grace period and a margin."""
    try:
        auth.check_exposure(args.host, args.auth_tokens is not None, args.insecure_allow_unauthenticated)
        db = database.connect(args.database_url)
        database.migrate(db)  # once, here, rather than racing in every worker
        database.close_pool(db)
    except (OSError, ValueError, pw.PeeweeException) as error:
        log.error("cannot start: %s", _start_error(error, args.database_url))
        return 1
    # Hold the port (port 0: pick one) until the workers have bound it too.
    holder = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((args.host, args.port))
    except OSError as error:
        log.error("cannot start: cannot bind %s:%d: %s", args.host, args.port, error)
        return 1
    port = holder.getsockname()[1]
    http_holder = None
    if not args.no_http:  # the HTTP port too, held the same way
        http_holder = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        http_holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            http_holder.bind((args.host, args.http_port))
        except OSError as error:
            log.error("cannot start: cannot bind HTTP %s:%d: %s", args.host, args.http_port, error)
            holder.close()
            http_holder.close()
            return 1
    http_port = http_holder.getsockname()[1] if http_holder is not None else None
    private = tempfile.mkdtemp(prefix="model-registry-workers-")  # mode 0700: the workers' probe sockets
    if not args.no_metrics:  # the workers' metric files, summed by any scrape (prometheus_client multiprocess)
        os.mkdir(os.path.join(private, "metrics"), 0o700)
        metrics.configure(multiprocess_dir=os.path.join(private, "metrics"))
    exporter = _serve_metrics(args)
    if exporter is False:
        holder.close()
        if http_holder is not None:
            http_holder.close()
        shutil.rmtree(private, ignore_errors=True)
        return 1

    stopping = threading.Event()
    workers: dict[int, _Worker] = {}  # by pid
    start_failures = 0
    wake_r, wake_w = os.pipe()  # signals interrupt the select below
    os.set_blocking(wake_w, False)

    def start(index: int) -> None:
        beat_r, beat_w = os.pipe()
        os.set_blocking(beat_w, False)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's server can reload its tokens
            for fd in (beat_r, wake_r, wake_w, *(w.heartbeat for w in workers.values())):
                os.close(fd)
            holder.close()
            if exporter is not None:
                exporter.socket.close()  # type: ignore[attr-defined]  # the parent's alone
            if http_holder is not None:
                http_holder.close()
            code = 1
            try:
                code = _serve(
                    args,
                    port,
                    reuse_port=True,
                    worker=f" (worker {index + 1}/{args.workers}, pid {os.getpid()})",
                    probe=(f"unix:{private}/worker-{os.getpid()}.sock", beat_w),
                    http_port=http_port,
                )
            finally:
                os._exit(code)
        os.close(beat_w)
        workers[pid] = _Worker(index, pid, beat_r, time.monotonic())

    def forward(signum: int, _frame: object) -> None:
        if signum != signal.SIGHUP:
            stopping.set()
        for pid in list(workers):
            _signal_worker(pid, signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)
        try:
            os.write(wake_w, b"!")
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reads the token file again
    for index in range(args.workers):
        start(index)
    holder.close()
    if http_holder is not None:
        http_holder.close()
    failed = False
    pending: list[tuple[float, int]] = []  # (when, index) of workers to start again after a backoff
    stop_deadline: float | None = None
    try:
        while workers or (pending and not stopping.is_set()):
            now = time.monotonic()
            if stopping.is_set():
                pending.clear()
                if stop_deadline is None:
                    stop_deadline = now + args.grace + STOP_MARGIN_S
                elif now > stop_deadline:
                    for pid in list(workers):
                        log.error("worker pid %d still running %.0fs after SIGTERM: killing it", pid, args.grace + STOP_MARGIN_S)
                        _signal_worker(pid, signal.SIGKILL)
            for when, index in [p for p in pending if p[0] <= now]:
                pending.remove((when, index))
                start(index)
            readable, _, _ = select.select([wake_r, *(w.heartbeat for w in workers.values())], [], [], 0.5)
            for fd in readable:
                chunk = os.read(fd, 4096)
                worker = next((w for w in workers.values() if w.heartbeat == fd), None)
                if worker is not None and chunk:
                    if worker.last_beat is None:
                        start_failures = 0
                    worker.last_beat = time.monotonic()
            for worker in list(workers.values()):
                beat = worker.last_beat if worker.last_beat is not None else worker.started
                if not stopping.is_set() and time.monotonic() - beat > args.worker_probe_timeout:
                    log.error(
                        "worker %d (pid %d) has not answered its health probe for %.0fs: killing it",
                        worker.index + 1, worker.pid, args.worker_probe_timeout,
                    )
                    _signal_worker(worker.pid, signal.SIGKILL)
                    worker.last_beat = time.monotonic()  # once; it is reaped below
            while workers:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    workers.clear()
                    break
                if pid == 0:
                    break
                worker = workers.pop(pid, None)
                if worker is None:
                    continue
                metrics.worker_exited(pid)
                os.close(worker.heartbeat)
                code = os.waitstatus_to_exitcode(status)
                if stopping.is_set():
                    failed = failed or code != 0
                    continue
                if worker.last_beat is None:
                    start_failures += 1
                    if start_failures >= MAX_START_FAILURES:
                        log.error("workers failed to start %d times in a row; stopping", start_failures)
                        failed = True
                        forward(signal.SIGTERM, None)
                        continue
                    delay = min(RESTART_BACKOFF_S[0] * 2 ** (start_failures - 1), RESTART_BACKOFF_S[1])
                    log.error(
                        "worker %d (pid %d) exited with status %d before it served; starting it again in %.1fs",
                        worker.index + 1, pid, code, delay,
                    )
                    pending.append((time.monotonic() + delay, worker.index))
                else:
                    log.warning("worker %d (pid %d) exited with status %d; starting it again", worker.index + 1, pid, code)
                    pending.append((time.monotonic(), worker.index))
    finally:
        if exporter is not None:
            exporter.shutdown()  # type: ignore[attr-defined]
        shutil.rmtree(private, ignore_errors=True)
    return 1 if failed else 0


def wait_for_stop(stop: threading.Event) -> None:
    """Blocks the main thread until `stop` is set. Python runs signal handlers in the main thread,
    between bytecodes: when the kernel hands a signal to one of gRPC's threads instead, a main thread
    blocked for good in wait() would never run the handler (a SIGHUP or SIGTERM lost, as a CI run
    showed). Waking up every SIGNAL_POLL_S runs a pending handler within that time."""
    while not stop.wait(SIGNAL_POLL_S):
        pass


def _signal_worker(pid: int, signum: int) -> None:
    """Sends a signal to a worker that may have exited already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
