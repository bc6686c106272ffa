"""Checkpoint files under faults and concurrency: a full disk, a SIGKILL while publishing, racing
uploads, downloads and registrations, garbage collection, hostile paths, caps, and the files of a
registry written by an earlier release (issues 10 and 11)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelregistry.v1 import checkpoint_pb2
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import DataLossError, EventKind, Registry
from registry_server import backup, validation
from registry_server import db as database
from registry_server.main import parse_args
from registry_server.server import RegistryServer, build_server
from registry_server.storage import LocalStorage
from registry_server.store import RegistryStore
from registry_server.tables import Checkpoint
from tests.conftest import POSTGRES_URL
from tests.servers import ServerProcess
from tests.test_files import files_under, make_tree, refusal, tree_of

KiB, MiB = 1024, 1024 * 1024
HOUR = 3600


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temporaries(storage_dir: str | Path) -> list[str]:
    """Files of uploads in progress (or left behind), wherever a release keeps them."""
    uploads = Path(storage_dir) / ".uploads"
    return files_under(uploads) if uploads.exists() else []


def count_temporaries(storage_dir: str | Path) -> int:
    """len(temporaries(storage_dir)), quickly enough to poll while thousands of files move."""
    count = 0
    try:
        entries = list(os.scandir(Path(storage_dir) / ".uploads"))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.is_dir():
            try:
                count += sum(1 for _ in os.scandir(entry.path))
            except FileNotFoundError:
                pass
        else:
            count += 1
    return count


def header(path: str, data: bytes) -> pb.UploadCheckpointFilesRequest:
    return pb.UploadCheckpointFilesRequest(file=checkpoint_pb2.CheckpointFile(path=path, size=len(data), sha256=sha(data)))


def upload_messages(checkpoint_uuid: str, files: dict[str, bytes]) -> list[pb.UploadCheckpointFilesRequest]:
    messages = [pb.UploadCheckpointFilesRequest(checkpoint_uuid=checkpoint_uuid)]
    for path, data in files.items():
        messages.append(header(path, data))
        messages += [pb.UploadCheckpointFilesRequest(chunk=data[i : i + MiB]) for i in range(0, len(data), MiB)]
    return messages


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@contextmanager
def server_on(database_url: str, storage_dir: str | Path, **options: Any) -> Iterator[RegistryServer]:
    running = build_server(database_url, storage=LocalStorage(storage_dir), **options)
    try:
        yield running
    finally:
        running.stop(grace=None)


@contextmanager
def paused_file_placement(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Pauses the first os.replace the server makes after this point (the first stored file moved to
    its final name, in every release) until `proceed` is set; `placing` says it got there."""
    placing, proceed = threading.Event(), threading.Event()
    real_replace = os.replace
    armed = [True]

    def replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if armed[0] and ".uploads" in str(source):
            armed[0] = False
            placing.set()
            proceed.wait(60)
        real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    try:
        yield placing, proceed
    finally:
        proceed.set()


# Item 10.5: a full disk ------------------------------------------------------------------------


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC. Needs root (the test machines run as root)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_frees_the_temporary_file_so_later_uploads_succeed(tiny_filesystem: Path, tmp_path: Path) -> None:
    with server_on(f"sqlite:///{tmp_path}/r.db", tiny_filesystem) as running, grpc.insecure_channel(
        f"127.0.0.1:{running.port}"
    ) as channel:
        stub = pb_grpc.ModelRegistryServiceStub(channel)
        checkpoint_uuid = stub.CreateCheckpoint(pb.CreateCheckpointRequest(), timeout=30).checkpoint.uuid
        too_big = os.urandom(2 * MiB)
        # Small chunks, as a client may send: the server's buffered writer holds some when the disk
        # fills, and its close tries (and fails) to write them again.
        messages = upload_messages(checkpoint_uuid, {"w": too_big})[:2]
        messages += [pb.UploadCheckpointFilesRequest(chunk=too_big[i : i + 1000]) for i in range(0, len(too_big), 1000)]
        code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(messages), timeout=60))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL")
        assert temporaries(tiny_filesystem) == []
        small = {"a.txt": b"fits"}
        stub.UploadCheckpointFiles(iter(upload_messages(checkpoint_uuid, small)), timeout=60)
        request = pb.DownloadCheckpointFilesRequest(checkpoint_uuid=checkpoint_uuid)
        assert [m.chunk for m in stub.DownloadCheckpointFiles(request, timeout=60) if m.HasField("chunk")] == [b"fits"]


def test_a_close_that_fails_still_removes_the_temporary_file(tmp_path: Path) -> None:
    """Where no tmpfs can be mounted: the close of the temporary file raises ENOSPC (as a buffered
    file does when its last flush finds the disk full), and the file goes anyway."""
    storage = LocalStorage(tmp_path)
    pending = storage.create("upload-1")
    pending.write(b"x" * 1000)
    real_close = pending.file.close

    def close() -> None:
        real_close()
        raise OSError(errno.ENOSPC, "No space left on device")

    pending.file.close = close
    pending.discard()
    assert temporaries(tmp_path) == []


# Item 10.5: a byte cap per upload ----------------------------------------------------------------


def test_an_upload_over_the_byte_cap_is_refused_and_leaves_nothing(database_url: str, tmp_path: Path) -> None:
    storage_dir = tmp_path / "files"
    with server_on(database_url, storage_dir, max_upload_bytes=MiB) as running, Registry(f"127.0.0.1:{running.port}") as registry:
        checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "one", {"a": b"a"}))
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ModelRegistryServiceStub(channel)
            files = {"b": os.urandom(MiB // 2), "c": os.urandom(MiB // 2 + 1)}  # the second header crosses the cap
            code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(upload_messages(checkpoint.uuid, files)), timeout=60))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPLOAD_TOO_LARGE")
        assert registry.get_checkpoint(checkpoint.uuid).resources == {"a": 1}
        assert temporaries(storage_dir) == []
        assert len(files_under(storage_dir)) == 1  # the blob of "a"
        exactly = {"b": os.urandom(MiB - 1)}  # with "a" stored the checkpoint holds more; the cap is per upload
        assert registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "two", exactly)).resources == {"a": 1, "b": MiB - 1}


def test_the_byte_cap_is_a_flag_and_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_args(["--max-upload-bytes", "1000"]).max_upload_bytes == 1000
    monkeypatch.setenv("MODEL_REGISTRY_MAX_UPLOAD_BYTES", "2000")
    assert parse_args([]).max_upload_bytes == 2000
    with pytest.raises(SystemExit):
        parse_args(["--max-upload-bytes", "0"])


# Item 10.5: temporary files left by a crash ------------------------------------------------------


def test_stale_temporary_files_are_swept_at_start_up_and_periodically(tmp_path: Path) -> None:
    storage_dir = tmp_path / "files"
    uploads = storage_dir / ".uploads"
    (uploads / "crashed-upload").mkdir(parents=True)
    left = [uploads / "crashed-upload" / "0", uploads / "flat-leftover"]  # this release's layout, and the last one's
    for path in left:
        path.write_bytes(b"x" * 1000)
    fresh = uploads / "fresh-upload"
    fresh.mkdir()
    (fresh / "0").write_bytes(b"y")
    two_hours_ago = time.time() - 2 * HOUR
    for path in left + [uploads / "crashed-upload"]:
        os.utime(path, (two_hours_ago, two_hours_ago))

    with server_on(f"sqlite:///{tmp_path}/r.db", storage_dir) as running:
        assert temporaries(storage_dir) == ["fresh-upload/0"]  # what may belong to a live upload stays
        for path in (fresh / "0", fresh):
            os.utime(path, (two_hours_ago, two_hours_ago))
        running.sweep_storage()
        assert temporaries(storage_dir) == []
        assert not (uploads / "crashed-upload").exists()


# Item 10.7: a crash while publishing ------------------------------------------------------------


def version_of_tree(count: int, round_: int) -> dict[str, bytes]:
    return {f"d{i % 7}/f{i:05d}.bin": f"round {round_} file {i} ".encode() + os.urandom(48) for i in range(count)}


@pytest.mark.large
def test_a_server_killed_while_publishing_keeps_every_recorded_file_intact(database_url: str, tmp_path: Path) -> None:
    """A re-upload of 2,000 files, SIGKILLed at random moments of its publishing (the temporary files
    moving to their final names): after each restart every file the registry lists downloads with its
    recorded digest, and all of them come from one upload (the old one or the new one, never a mix)."""
    count, kills = 2000, 5
    storage_dir = tmp_path / "files"
    args = ("--storage-dir", str(storage_dir))
    rng = random.Random(20261127)
    versions = [version_of_tree(count, r) for r in range(kills + 1)]
    checked = killed_while_publishing = kept_old = 0
    server = ServerProcess(database_url, *args)
    try:
        with Registry(server.target, timeout=60) as registry:
            checkpoint_uuid = registry.upload_checkpoint(make_tree(tmp_path / "v0", versions[0])).uuid
        for round_ in range(1, kills + 1):
            source = make_tree(tmp_path / f"v{round_}", versions[round_])
            outcome: list[Any] = []

            def reupload() -> None:
                try:
                    with Registry(server.target, timeout=60) as registry:
                        outcome.append(registry.upload_checkpoint_files(checkpoint_uuid, source))
                except Exception as error:  # the kill ends it
                    outcome.append(error)

            thread = threading.Thread(target=reupload)
            thread.start()
            # Kill once a random share of the temporary files has moved to final names (publishing).
            wait_for(lambda: count_temporaries(storage_dir) >= count or outcome, what="every file received")
            kill_below = int(count * rng.uniform(0.05, 0.95))
            deadline = time.monotonic() + 120
            while count_temporaries(storage_dir) > kill_below and not outcome and time.monotonic() < deadline:
                pass  # no sleep: the files move fast
            killed_while_publishing += not outcome  # the upload had not answered yet
            server.kill()
            thread.join(60)
            server = ServerProcess(database_url, *args)
            with Registry(server.target, timeout=60) as registry:
                out = registry.download_checkpoint(checkpoint_uuid, tmp_path / f"out{round_}")  # checks every digest
                downloaded = tree_of(out)
                resources = registry.get_checkpoint(checkpoint_uuid).resources
            assert downloaded in (versions[round_ - 1], versions[round_]), f"round {round_}: a mix of two uploads"
            assert resources == {path: len(data) for path, data in downloaded.items()}
            checked += len(downloaded)
            if downloaded != versions[round_]:
                kept_old += 1
                versions[round_] = versions[round_ - 1]  # the next round replaces what is stored
    finally:
        server.stop()
    print(
        f"files checked after {kills} kills: {checked}; {killed_while_publishing} kills before the upload answered; "
        f"{kept_old} restarts found the old files, {kills - kept_old} the new ones"
    )
    assert checked == count * kills


# Item 10.7: conflicting concurrent uploads -----------------------------------------------------


def test_a_path_conflict_between_concurrent_uploads_fails_the_loser_without_changing_anything(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str, tmp_path: Path
) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "first", {"x": b"original x"}))
    finish = threading.Event()

    def loser() -> Iterator[pb.UploadCheckpointFilesRequest]:
        yield from upload_messages(checkpoint.uuid, {"x": b"replaced x", "a/b": b"b"})
        finish.wait(60)

    call = stub.UploadCheckpointFiles.future(loser(), timeout=120)
    try:
        wait_for(lambda: len(temporaries(storage_dir)) == 2, what="the loser's files received")
        registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "winner", {"a": b"a file"}))
    finally:
        finish.set()
    code, reason = refusal(call.result)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FILE_PATH_CONFLICT")
    assert tree_of(registry.download_checkpoint(checkpoint.uuid, tmp_path / "out")) == {"x": b"original x", "a": b"a file"}
    assert registry.get_checkpoint(checkpoint.uuid).resources == {"x": 10, "a": 6}


def test_a_conflict_with_stored_files_is_a_failed_precondition(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, tmp_path: Path
) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "first", {"a/b": b"b"}))
    code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(upload_messages(checkpoint.uuid, {"a": b"a"})), timeout=60))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FILE_PATH_CONFLICT")


# Item 10.8: readers see snapshots ----------------------------------------------------------------


def test_downloads_during_reuploads_of_the_same_paths_always_verify(registry: Registry, tmp_path: Path) -> None:
    names = [f"w{i}.bin" for i in range(6)]
    versions = [{name: os.urandom(256 * KiB) for name in names} for _ in range(3)]
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "v0", versions[0]))
    sources = [make_tree(tmp_path / f"v{i}", v) for i, v in enumerate(versions)]
    done = threading.Event()
    failures: list[BaseException] = []

    def reupload() -> None:
        try:
            for round_ in range(1, 25):
                registry.upload_checkpoint_files(checkpoint.uuid, sources[round_ % 3])
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=reupload)
    writer.start()
    downloads = 0
    deadline = time.monotonic() + 180
    while (not done.is_set() or downloads < 3) and time.monotonic() < deadline:
        out = registry.download_checkpoint(checkpoint.uuid, tmp_path / f"out{downloads}")  # raises on a bad digest
        assert tree_of(out) in versions, "a download mixed files of two uploads"
        downloads += 1
    writer.join(60)
    assert failures == [] and downloads >= 3


def test_an_upload_is_an_event(registry: Registry, tmp_path: Path) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "s", {"a": b"a"}))
    kinds = [EventKind.CHECKPOINT_CREATED, EventKind.CHECKPOINT_FILES_UPLOADED]
    events = []
    for event in registry.watch(kinds=kinds):
        events.append((event.kind, event.checkpoint_uuid))
        if len(events) == 2:
            break
    assert events == [(EventKind.CHECKPOINT_CREATED, checkpoint.uuid), (EventKind.CHECKPOINT_FILES_UPLOADED, checkpoint.uuid)]


def test_a_registration_while_files_are_placed_freezes_them(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload is paused while moving its first file into place; a registration of the checkpoint
    then completes, and the version's files are the ones it was registered with, for good."""
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "v0", {"a": b"old"}))
    registry.create_model("m")
    outcome: list[Any] = []
    with paused_file_placement(monkeypatch) as (placing, proceed):

        def reupload() -> None:
            try:
                outcome.append(registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "v1", {"a": b"new", "b": b"b"})))
            except Exception as error:
                outcome.append(error)

        thread = threading.Thread(target=reupload)
        thread.start()
        assert placing.wait(60)
        registered: list[Any] = []
        registrar = threading.Thread(target=lambda: registered.append(registry.get_model("m").register_version(checkpoint.uuid)))
        registrar.start()
        registrar.join(15)  # on a release that publishes inside its transaction, SQLite makes this wait
        proceed.set()
        thread.join(60)
        registrar.join(60)
    version = registered[0]
    frozen = version.checkpoint.resources
    assert registry.get_model("m").get_version(version.version).checkpoint.resources == frozen
    assert tree_of(registry.download_checkpoint(checkpoint.uuid, tmp_path / "out")).keys() == frozen.keys()


def postgres_waiters(application: str, text: str) -> int:
    """Connections of `application` waiting on a lock in a statement containing `text`."""
    import psycopg2

    connection = psycopg2.connect(POSTGRES_URL)
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
            " AND query ILIKE %s",
            (application, f"%{text}%"),
        )
        return cursor.fetchone()[0]
    finally:
        connection.close()


def test_postgresql_registration_and_publishing_serialize_on_the_checkpoint(
    database_url: str, storage_dir: str, tmp_path: Path
) -> None:
    """The upload's transaction is held open at its very end (the test holds the event counter's row
    lock, which every writing transaction takes last); a registration of the same checkpoint must wait
    for it and then see the new files, never register the old ones while they are being replaced."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite serialises every writer at BEGIN: the interleaving cannot happen")
    import psycopg2

    schema = database_url.split("search_path%3D")[-1]
    url = f"{database_url}&application_name={schema}"  # tells this server's connections from others'
    with server_on(url, storage_dir) as running, Registry(f"127.0.0.1:{running.port}", timeout=120) as registry:
        checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "v0", {"a": b"old"}))
        registry.create_model("m")
        blocker = psycopg2.connect(POSTGRES_URL)
        try:
            blocker.cursor().execute(f"UPDATE {schema}.event_counter SET last_sequence = last_sequence WHERE id = 1")
            results: dict[str, Any] = {}

            def run(name: str, call: Callable[[], Any]) -> threading.Thread:
                def target() -> None:
                    try:
                        results[name] = call()
                    except Exception as error:
                        results[name] = error

                thread = threading.Thread(target=target)
                thread.start()
                return thread

            upload = run("upload", lambda: registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "v1", {"a": b"new", "b": b"b"})))
            wait_for(lambda: postgres_waiters(schema, "event_counter") == 1, what="the upload's transaction to reach its end")
            register = run("register", lambda: registry.get_model("m").register_version(checkpoint.uuid))
            wait_for(lambda: postgres_waiters(schema, "") == 2, what="the registration to wait")
        finally:
            blocker.rollback()
            blocker.close()
        upload.join(60)
        register.join(60)
        assert results["upload"].resources == {"a": 3, "b": 1}
        assert results["register"].checkpoint.resources == {"a": 3, "b": 1}
        assert tree_of(registry.download_checkpoint(checkpoint.uuid, tmp_path / "out")) == {"a": b"new", "b": b"b"}


# Item 10.6: no per-file work under the write lock -------------------------------------------------


def test_other_writers_complete_while_an_upload_places_its_files(
    registry: Registry, registry_target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload of 1,000 files is paused while it moves its first file into place: a model is
    created and another upload to the same checkpoint completes meanwhile (a release that moved
    files inside its transaction held SQLite's write lock, or the checkpoint's row lock, all along)."""
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "v0", {"first": b"1"}))
    many = {f"f{i:04d}": str(i).encode() for i in range(1000)}
    outcome: list[Any] = []
    with paused_file_placement(monkeypatch) as (placing, proceed), Registry(registry_target, timeout=10) as quick:
        thread = threading.Thread(
            target=lambda: outcome.append(registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "many", many)))
        )
        thread.start()
        assert placing.wait(120)
        other: list[Any] = []
        other_done = threading.Event()

        def upload_other() -> None:
            try:
                other.append(quick.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "other", {"other": b"o"})))
            finally:
                other_done.set()

        threading.Thread(target=upload_other, daemon=True).start()
        try:
            assert quick.create_model("meanwhile").name == "meanwhile"
            assert other_done.wait(60), "another upload could not complete while this one placed its files"
            assert set(other[0].resources) == {"first", "other"}
        finally:
            proceed.set()
            thread.join(120)
    assert set(outcome[0].resources) == {"first", "other", *many}


# Item 10.9 and garbage collection ---------------------------------------------------------------


def blobs(storage_dir: str | Path) -> list[str]:
    root = Path(storage_dir) / "blobs"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_identical_files_are_stored_once_and_deleted_with_their_last_checkpoint(
    registry: Registry, storage_dir: str, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "s", {"a": b"same bytes", "b": b"same bytes", "c": b"other"})
    first = registry.upload_checkpoint(source)
    second = registry.upload_checkpoint(source)
    assert blobs(storage_dir) == sorted([sha(b"same bytes"), sha(b"other")])
    assert first.storage_uri == Path(storage_dir).absolute().as_uri()
    first.delete()
    assert tree_of(second.download(tmp_path / "out")) == tree_of(source)
    second.delete()
    assert blobs(storage_dir) == []


def test_garbage_collection_keeps_what_uploads_hold_and_what_checkpoints_reference(
    registry_server: RegistryServer, registry: Registry, storage_dir: str, tmp_path: Path
) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "v0", {"a": b"v0"}))
    registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "v1", {"a": b"v1"}))
    files = registry_server.servicer.files
    # A blob an upload in flight placed but has not recorded yet (see files.py, "Garbage collection").
    held = b"placed, not yet recorded"
    with registry_server.db.connection_context():
        files.files_store.hold("upload-in-flight", {sha(held)})
    blob = Path(storage_dir) / "blobs" / sha(held)[:2] / sha(held)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(held)
    # A blob unreferenced since the re-upload goes only at the second sweep that finds it unreferenced,
    # so that a download that read the old record a moment before still finds it.
    registry_server.sweep_storage()
    assert sha(b"v0") in blobs(storage_dir)
    registry_server.sweep_storage()
    assert blobs(storage_dir) == sorted([sha(b"v1"), sha(held)])
    assert tree_of(checkpoint.download(tmp_path / "out")) == {"a": b"v1"}


def test_a_blob_left_in_the_trash_by_a_crash_is_still_read_and_then_restored(
    registry_server: RegistryServer, registry: Registry, storage_dir: str, tmp_path: Path
) -> None:
    """A collector that died between moving a blob aside and checking its references (the blob had
    just been recorded by an upload): readers still find it, and the next sweep puts it back."""
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "s", {"a": b"recorded"}))
    blob = Path(storage_dir) / "blobs" / sha(b"recorded")[:2] / sha(b"recorded")
    trash = Path(storage_dir) / ".trash"
    trash.mkdir(exist_ok=True)
    os.replace(blob, trash / f"{sha(b'recorded')}.crashed")
    assert tree_of(checkpoint.download(tmp_path / "out")) == {"a": b"recorded"}
    registry_server.sweep_storage()
    assert blob.read_bytes() == b"recorded" and files_under(trash) == []


# Issue 11.3 (storage half): confinement ----------------------------------------------------------


@pytest.mark.parametrize("digest", ["../../../etc/passwd", "/etc/passwd", "a" * 63, "A" * 64, "g" * 64, "a" * 64 + "/x", ""])
def test_storage_refuses_names_that_are_not_digests(tmp_path: Path, digest: str) -> None:
    storage = LocalStorage(tmp_path / "files")
    pending = storage.create("u")
    pending.write(b"x")
    pending.seal()
    for operation in (lambda: storage.open(digest), lambda: storage.place([(pending, digest)]), lambda: storage.move_to_trash(digest)):
        with pytest.raises(ValueError):
            operation()
    pending.discard()


def test_a_record_naming_a_file_outside_storage_is_never_imported(database_url: str, tmp_path: Path) -> None:
    """A backup (format 2, as an earlier release wrote them) whose checkpoint lists a file outside the
    checkpoint, with that file's true digest: refused at import, so never served either."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"the server's secret")
    storage_dir = tmp_path / "files"
    uuid = str(uuidlib.uuid4())
    relative = os.path.relpath(secret, storage_dir / uuid)
    for path in (relative, str(secret)):
        document = {
            "format": "model-registry-export", "format_version": 2, "last_event_sequence": 0,
            "checkpoints": [{
                "uuid": uuid, "experiment_id": 0, "trial_id": 0, "batch_number": 0, "experiment_config": {}, "hparams": {},
                "resources": {path: 19}, "metadata": {}, "framework": "", "format": "", "metrics": {},
                "state": 2, "storage_uri": "", "report_time": 1, "creation_time": 1,
                "file_digests": {path: sha(secret.read_bytes())},
            }],
            "models": [], "model_versions": [], "model_aliases": [], "alias_changes": [], "events": [],
        }
        db = database.connect(database_url)
        database.migrate(db)
        try:
            with db.connection_context():
                with pytest.raises(backup.Refused) as refused:
                    backup.import_registry(RegistryStore(db), io.BytesIO(json.dumps(document).encode()), LocalStorage(storage_dir))
                assert refused.value.message.startswith("checkpoint_files[0].path: file path must")
                assert not Checkpoint.select().exists()
        finally:
            db.close_all()


# Issue 11.14: paths no Windows client can write -------------------------------------------------

WINDOWS_HOSTILE = [
    "CON", "con", "Con.txt", "a/NUL", "aux.tar.gz", "com1", "LPT9.log", "COM¹", "conin$", "d/prn/x", "NUL ",
    "C:/x", "a:b", "*", "a?b", "a<b", "a>b", 'a"b', "a|b", "x.", "dir./x", "x /y", "trailing ",
]


@pytest.mark.parametrize("path", WINDOWS_HOSTILE)
def test_paths_no_windows_client_can_write_are_refused(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str, path: str
) -> None:
    checkpoint = registry.create_checkpoint()
    code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(upload_messages(checkpoint.uuid, {path: b"x"})), timeout=30))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE_PATH")
    assert files_under(storage_dir) == []


@pytest.mark.parametrize("path", ["console", "CONFIG/x", "nul_model.bin", "com10", "lpt", "a.b.c", "...x", "x y", "é/ü.bin"])
def test_names_close_to_reserved_ones_are_accepted(path: str) -> None:
    assert validation.file_path(path) == path


# Issue 11.2 (files half): caps that keep every response under the message limit -------------------


def test_the_paths_of_a_checkpoints_files_have_a_byte_budget(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, tmp_path: Path
) -> None:
    budget = validation.MAX_RESOURCE_PATH_BYTES
    long_name = "d" * 200 + "/" + "f" * 200  # 401 bytes, and 5 digits
    count = budget // (len(long_name) + 5) + 1  # one more than fits
    files = {f"{long_name}{i:05d}": b"" for i in range(count)}
    checkpoint = registry.create_checkpoint()
    code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(upload_messages(checkpoint.uuid, files)), timeout=120))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RESOURCES_TOO_LARGE")
    assert registry.get_checkpoint(checkpoint.uuid).resources == {}

    resources = {path: 1 for path in files}
    with pytest.raises(Exception) as refused:
        registry.create_checkpoint(resources=resources)
    assert getattr(refused.value, "reason", None) == "RESOURCES_TOO_LARGE"
    fitting = dict(list(resources.items())[: count - 1])
    assert len(registry.create_checkpoint(resources=fitting).resources) == count - 1


def test_the_largest_checkpoint_a_version_can_embed_fits_a_message(store: RegistryStore) -> None:
    """10,000 files with paths using the whole budget: the resources map stays under 1 MiB on the wire,
    which with the four JSON fields (256 KiB each) keeps a ModelVersion far below the 4 MiB limit."""
    from registry_server import convert

    per_path = validation.MAX_RESOURCE_PATH_BYTES // validation.MAX_RESOURCES
    resources = {f"{i:05d}" + "p" * (per_path - 5): 2**40 for i in range(validation.MAX_RESOURCES)}
    row = store.create_checkpoint({"resources": resources})
    assert convert.checkpoint(row).ByteSize() < MiB


# An earlier release's files ------------------------------------------------------------------


def test_files_of_an_earlier_release_are_adopted_at_start_up(database_url: str, tmp_path: Path) -> None:
    """Files at <root>/<uuid>/<path> with digests in the checkpoint row (schema 0005): the server moves
    each into content-addressed storage once its bytes match the record; one whose bytes do not (a
    crash of that release) stays missing, a link is never followed, and starting again changes nothing."""
    from playhouse.migrations import Runner

    storage_dir = tmp_path / "files"
    db = database.connect(database_url)
    with db.connection_context():
        Runner(db, database.MIGRATIONS_DIR).up(target="0005_model_name_search")
    good, bad = b"good bytes", b"bytes written by an interrupted upload"
    uuid = str(uuidlib.uuid4())
    files = {"w/good.bin": good, "bad.bin": bad, "link": b"", "gone.bin": b"lost"}
    digests = {"w/good.bin": sha(good), "bad.bin": sha(b"acknowledged bytes"), "link": sha(Path("/etc/hostname").read_bytes()), "gone.bin": sha(b"lost")}
    for path, data in files.items():
        if path != "link" and path != "gone.bin":
            make_tree(storage_dir / uuid, {path: data})
    (storage_dir / uuid / "link").symlink_to("/etc/hostname")
    make_tree(storage_dir / uuid, {"unrecorded.tmp": b"junk"})
    with db.connection_context():
        db.execute_sql(
            "INSERT INTO checkpoint (uuid, experiment_id, trial_id, batch_number, experiment_config, hparams, resources,"
            " metadata, framework, format, metrics, state, storage_uri, report_time, creation_time, file_digests)"
            " VALUES (%s, 0, 0, 0, '{}', '{}', %s, '{}', '', '', '{}', 2, %s, 1, 1, %s)".replace(
                "%s", "?" if database_url.startswith("sqlite") else "%s"
            ),
            (uuid, json.dumps({p: len(d) for p, d in files.items()}), (storage_dir / uuid).absolute().as_uri(), json.dumps(digests)),
        )
    db.close_all()

    for start in range(2):
        with server_on(database_url, storage_dir) as running, Registry(f"127.0.0.1:{running.port}") as registry:
            checkpoint = registry.get_checkpoint(uuid)
            assert checkpoint.storage_uri == storage_dir.absolute().as_uri()
            assert checkpoint.resources == {p: len(d) for p, d in files.items()}
            assert tree_of(registry.download_checkpoint(uuid, tmp_path / f"good{start}", paths=["w/good.bin"])) == {"w/good.bin": good}
            for path in ("bad.bin", "link", "gone.bin"):
                with pytest.raises(DataLossError) as lost:
                    registry.download_checkpoint(uuid, tmp_path / f"lost{start}", paths=[path])
                assert lost.value.reason == "CHECKPOINT_FILE_MISSING"
        assert not (storage_dir / uuid).exists()
        assert blobs(storage_dir) == [sha(good)]


def test_a_backup_carries_stored_files(database_url: str, registry: Registry, storage_dir: str, tmp_path: Path) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "s", {"a": b"a", "d/b": b"bb"}))
    db = database.connect(database_url)
    try:
        with db.connection_context():
            exported = io.BytesIO()
            backup.export_registry(RegistryStore(db), exported, LocalStorage(storage_dir))
    finally:
        db.close_all()
    with tarfile.open(fileobj=io.BytesIO(exported.getvalue())) as tar:
        document = json.load(tar.extractfile(backup.DOCUMENT))  # type: ignore[arg-type]
        assert sorted(tar.getnames()) == sorted([backup.DOCUMENT, f"blobs/{sha(b'a')}", f"blobs/{sha(b'bb')}"])
    assert sorted((f["checkpoint_uuid"], f["path"], f["size"], f["sha256"]) for f in document["checkpoint_files"]) == [
        (checkpoint.uuid, "a", 1, sha(b"a")), (checkpoint.uuid, "d/b", 2, sha(b"bb"))
    ]
    copy = database.connect(f"sqlite:///{tmp_path}/copy.db")
    database.migrate(copy)
    try:
        with copy.connection_context():
            backup.import_registry(RegistryStore(copy), io.BytesIO(exported.getvalue()), LocalStorage(tmp_path / "copy-files"))
            again = io.StringIO()
            backup.write_document(RegistryStore(copy), again)
    finally:
        copy.close_all()
        database.connect(database_url)  # bind the tables back for the fixtures' teardown
    assert json.loads(again.getvalue())["checkpoint_files"] == document["checkpoint_files"]
    assert blobs(tmp_path / "copy-files") == sorted([sha(b"a"), sha(b"bb")])
