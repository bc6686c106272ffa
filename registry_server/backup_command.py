"""`model-registry-server export` and `model-registry-server import`: backups, on the database and the
storage directly (with or without a server running). Every failure is one line on stderr and exit 1."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import peewee as pw

from . import backup
from . import db as database
from .errors import RegistryError
from .storage import LocalStorage, Storage, default_storage_dir, open_storage
from .store import RegistryStore


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="model-registry-server", description="Back up a registry, or restore one into an empty registry."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="write the whole registry, checkpoint files included, to one archive",
        description="Write the whole registry (records and checkpoint files) to one tar archive, from one "
        "consistent snapshot, without changing the database.",
    )
    export.add_argument("--output", "-o", required=True, metavar="FILE", help="the archive to write; - for stdout")
    export.add_argument("--gzip", action="store_true", help="compress the archive (implied by a FILE ending in .gz or .tgz)")
    export.add_argument(
        "--no-files", action="store_true", help="records only: the checkpoint files must then be copied by other means"
    )
    restore = commands.add_parser(
        "import",
        help="load an archive into an empty registry",
        description="Load an export into an empty registry (SQLite or PostgreSQL), checkpoint files into its "
        "storage: every row and every file's digest is checked first, then all of it is written, or nothing.",
    )
    restore.add_argument("--input", "-i", required=True, metavar="FILE", help="the archive to read; - for stdin")
    for command in (export, restore):
        command.add_argument(
            "--database-url",
            default=env("MODEL_REGISTRY_DATABASE_URL", database.DEFAULT_DATABASE_URL),
            help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (env MODEL_REGISTRY_DATABASE_URL; "
            f"default {database.DEFAULT_DATABASE_URL})",
        )
        command.add_argument(
            "--storage-dir",
            default=env("MODEL_REGISTRY_STORAGE_DIR"),
            help="the registry's directory of checkpoint files, as the server's flag (env MODEL_REGISTRY_STORAGE_DIR)",
        )
        command.add_argument(
            "--storage-url", default=env("MODEL_REGISTRY_STORAGE_URL"), help="or its fsspec URL, e.g. s3://bucket/prefix"
        )
        command.add_argument("--storage-options", default=env("MODEL_REGISTRY_STORAGE_OPTIONS"), metavar="JSON")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        return export(args) if args.command == "export" else restore(args)
    except RegistryError as error:
        return _fail(error.message)
    except pw.PeeweeException as error:
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return _fail(f"database {database.redacted(args.database_url)} cannot be used: {cause}")
    except (OSError, ValueError) as error:
        return _fail(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _summary(verb: str, counts: dict[str, int]) -> str:
    return (
        f"{verb} {counts['models']} models, {counts['model_versions']} model versions, {counts['checkpoints']} "
        f"checkpoints, {counts['events']} events, {counts['blobs']} files"
    )


# Export ------------------------------------------------------------------------------------------


def export(args: argparse.Namespace) -> int:
    db = database.connect_existing(args.database_url, read_only=True)
    try:
        problem = database.schema_problem(db)
        if problem:
            return _fail(f"database {database.redacted(args.database_url)} cannot be exported: {problem}")
        storage = _existing_storage(args)
        compress = args.gzip or args.output.endswith((".gz", ".tgz"))
        with _output(args.output) as out, db.connection_context():
            counts = backup.export_registry(
                RegistryStore(db), out, storage, files=not args.no_files, compress=compress
            )
    except BrokenPipeError:
        _silence_stdout()
        return _fail("the output was closed before the export was complete")
    finally:
        db.close()
    where = "stdout" if args.output == "-" else args.output
    summary = _summary("Exported", counts) + (f" ({counts['blob_bytes']} bytes)" if not args.no_files else "") + f" to {where}."
    print(summary, file=sys.stderr if args.output == "-" else sys.stdout)
    if args.no_files:
        print(_no_files_warning(storage), file=sys.stderr)
    return 0


def _existing_storage(args: argparse.Namespace) -> Storage:
    """The registry's storage, which an export must not create: a local directory must exist."""
    if args.storage_url:
        return open_storage(args.database_url, None, args.storage_url, args.storage_options)
    directory = args.storage_dir or default_storage_dir(args.database_url)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"no storage directory {directory}: give the registry's --storage-dir (or --storage-url), or --no-files"
        )
    return LocalStorage(directory)


@contextlib.contextmanager
def _output(name: str) -> Iterator[BinaryIO]:
    """stdout, or a file that appears only once it is complete (written beside it, then renamed)."""
    if name == "-":
        if sys.stdout.isatty():
            raise ValueError("an archive is not for a terminal: give --output FILE, or redirect stdout")
        yield sys.stdout.buffer
        return
    target = Path(name)
    if target.is_dir():
        raise IsADirectoryError(f"{name} is a directory")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no directory {target.parent} for {name}")
    file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (renamed or removed below)
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False
    )
    try:
        with file:
            yield file  # type: ignore[misc]
            file.flush()
            os.fsync(file.fileno())
        os.replace(file.name, target)
    except BaseException:
        Path(file.name).unlink(missing_ok=True)
        raise


def _silence_stdout() -> None:
    """After the reader of stdout went away: what is still buffered goes nowhere, rather than fail
    again (Python's "Exception ignored ... BrokenPipeError") when the interpreter exits."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _no_files_warning(storage: Storage) -> str:
    uri = storage.uri()
    if isinstance(storage, LocalStorage):
        command = f"rsync -a {storage.root}/blobs/ NEW-HOST:NEW-STORAGE-DIR/blobs/"
    elif uri.startswith("s3://"):
        command = f"aws s3 sync {uri}/blobs/ s3://NEW-BUCKET/NEW-PREFIX/blobs/"
    else:
        command = f"copy {uri}/blobs/ to the new storage's blobs/"
    return (
        "WARNING: this export holds the records only, NOT the checkpoint files: downloads fail on the new "
        f"registry until the files are copied there before the import, e.g. {command}"
    )


# Import ------------------------------------------------------------------------------------------


def restore(args: argparse.Namespace) -> int:
    sqlite = database.sqlite_path(args.database_url)
    created = [path for path in _paths_created(args, sqlite) if not os.path.exists(path)]
    ok = False
    try:
        with _input(args.input) as source:
            db = database.connect(args.database_url, max_connections=4)
            try:
                database.migrate(db)
                storage = open_storage(args.database_url, args.storage_dir, args.storage_url, args.storage_options)
                counts = backup.import_registry(RegistryStore(db), source, storage)
            finally:
                database.close_pool(db)
        ok = True
    finally:
        if not ok:  # a refused import leaves no database file or storage directory it made
            for path in created:
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else Path(path).unlink(missing_ok=True)
    print(_summary("Imported", counts) + ".")
    return 0


def _paths_created(args: argparse.Namespace, sqlite: str | None) -> list[str]:
    paths = [sqlite + suffix for suffix in ("", "-wal", "-shm", ".migrate.lock")] if sqlite else []
    if not args.storage_url:
        paths.append(args.storage_dir or default_storage_dir(args.database_url))
    return paths


@contextlib.contextmanager
def _input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    if not os.path.isfile(name):
        raise FileNotFoundError(f"no file {name}")
    with open(name, "rb") as file:
        yield file
