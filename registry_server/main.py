"""The `model-registry-server` command: flags, logging, signals."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .server import DEFAULT_WORKERS, build_server

log = logging.getLogger("registry_server")

DEFAULT_DATABASE_URL = "sqlite:///registry.db"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="model-registry-server", description="Serve the model registry over gRPC.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MODEL_REGISTRY_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (env MODEL_REGISTRY_DATABASE_URL; "
        f"default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--max-workers", type=int, default=DEFAULT_WORKERS, help="threads serving calls (default: %(default)s)"
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds calls in flight get to finish on SIGTERM (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("MODEL_REGISTRY_LOG_LEVEL", "INFO"), help="(default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        running = build_server(args.database_url, args.host, args.port, max_workers=args.max_workers)
    except (OSError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("model registry serving on %s:%d (database %s)", args.host, running.port, _redacted(args.database_url))
    stop.wait()
    log.info("stopping: finishing calls in flight (up to %.0fs)", args.grace)
    running.stop(args.grace)
    log.info("stopped")
    return 0


def _redacted(url: str) -> str:
    """The URL without its password, for the log."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


if __name__ == "__main__":
    sys.exit(main())
