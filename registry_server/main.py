"""The `model-registry-server` command: flags, logging, signals, and worker processes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from . import auth
from . import db as database
from .files import DEFAULT_MAX_UPLOAD_BYTES
from .server import DEFAULT_WORKERS, MAX_CONCURRENT_RPCS, MAX_REQUEST_BYTES, TlsFiles, build_server
from .servicer import WATCH_POLL_INTERVAL_S
from .storage import open_storage

log = logging.getLogger("registry_server")

DEFAULT_DATABASE_URL = "sqlite:///registry.db"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="model-registry-server", description="Serve the model registry over gRPC.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--database-url",
        default=env("MODEL_REGISTRY_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (env MODEL_REGISTRY_DATABASE_URL; "
        f"default {DEFAULT_DATABASE_URL})",
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
        default=DEFAULT_WORKERS,
        help="threads serving calls in each process, and database connections in its pool (default: %(default)s)",
    )
    parser.add_argument(
        "--max-watchers",
        type=int,
        default=None,
        help="WatchEvents streams served at once by each process; each holds a thread "
        "(default: half of --threads)",
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
        "--grace", type=float, default=10.0, help="seconds calls in flight get to finish on SIGTERM (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level", default=env("MODEL_REGISTRY_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING... (default: %(default)s)"
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
        default=MAX_REQUEST_BYTES,
        help="largest request message; larger ones get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    limits.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=MAX_CONCURRENT_RPCS,
        help="calls in progress at once per process; more get RESOURCE_EXHAUSTED (default: %(default)s)",
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
    if args.max_watchers is not None and not 1 <= args.max_watchers < args.threads:
        parser.error("--max-watchers must be at least 1 and below --threads")
    if not 0 < args.watch_poll_interval <= 60:
        parser.error("--watch-poll-interval must be above 0 and at most 60 seconds")
    if args.max_request_bytes < 1 or args.max_concurrent_rpcs < 1:
        parser.error("--max-request-bytes and --max-concurrent-rpcs must be at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    return args


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers == 1:
        return _serve(args, args.port, reuse_port=False)
    return _serve_workers(args)


def _serve(args: argparse.Namespace, port: int, *, reuse_port: bool, worker: str = "") -> int:
    """Runs one server process until SIGTERM or SIGINT, then drains it and exits 0."""
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
            storage=storage,
            auth_tokens=args.auth_tokens,
            allow_unauthenticated=args.insecure_allow_unauthenticated,
            tls=_tls(args),
            max_request_bytes=args.max_request_bytes,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            sqlite_synchronous=args.sqlite_synchronous,
            max_upload_bytes=args.max_upload_bytes,
        )
    except (OSError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: running.reload_tokens())
    log.info(
        "model registry serving on %s:%d%s (database %s, files %s, %s, %s)",
        args.host,
        running.port,
        worker,
        _redacted(args.database_url),
        storage.uri(),
        "TLS" + (" with client certificates" if args.tls_client_ca else "") if args.tls_cert else "plaintext",
        "bearer tokens" if args.auth_tokens else "no authentication",
    )
    stop.wait()
    log.info("stopping%s: finishing calls in flight (up to %.0fs)", worker, args.grace)
    running.stop(args.grace)
    log.info("stopped%s", worker)
    return 0


def _serve_workers(args: argparse.Namespace) -> int:
    """Forks `--workers` processes that share one port (SO_REUSEPORT), before any gRPC server or
    database connection exists; restarts a worker that dies; forwards SIGTERM to all and waits."""
    try:
        auth.check_exposure(args.host, args.auth_tokens is not None, args.insecure_allow_unauthenticated)
        db = database.connect(args.database_url)
        database.migrate(db)  # once, here, rather than racing in every worker
        db.close_all()
    except (OSError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 1
    # Hold the port (port 0: pick one) until the workers have bound it too.
    holder = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((args.host, args.port))
    except OSError as error:
        log.error("cannot bind %s:%d: %s", args.host, args.port, error)
        return 1
    port = holder.getsockname()[1]

    stopping = threading.Event()
    children: dict[int, int] = {}
    started: dict[int, float] = {}

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's server can reload its tokens
            holder.close()
            code = 1
            try:
                code = _serve(args, port, reuse_port=True, worker=f" (worker {index + 1}/{args.workers}, pid {os.getpid()})")
            finally:
                os._exit(code)
        children[pid] = index
        started[index] = time.monotonic()

    def forward(signum: int, _frame: object) -> None:
        if signum != signal.SIGHUP:
            stopping.set()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reads the token file again
    for index in range(args.workers):
        start(index)
    holder.close()
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        if not stopping.is_set() and time.monotonic() - started[index] < 5:
            log.error("worker %d could not start; stopping", index + 1)
            failed = True
            forward(signal.SIGTERM, None)
        elif not stopping.is_set():
            log.warning("worker %d (pid %d) exited with status %d; starting it again", index + 1, pid, status)
            start(index)
        elif os.waitstatus_to_exitcode(status) != 0:
            failed = True
    return 1 if failed else 0


def _redacted(url: str) -> str:
    """The URL without its password, for the log."""
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")))
    return url


if __name__ == "__main__":
    sys.exit(main())
