"""Checkpoint files through the registry: upload and download, refusals that leave nothing visible,
path confinement, S3 through fsspec against a local moto server, concurrency, loading."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import pty
import struct
import subprocess
import termios
import threading
import time
import tracemalloc
import uuid as uuidlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelregistry.v1 import checkpoint_pb2
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import (
    CheckpointState,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    Registry,
)
from registry_client.cli import main
from registry_client.errors import from_rpc_error
from registry_client.loading import load_checkpoint_dir
from registry_server.server import build_server
from registry_server.storage import FsspecStorage, open_storage
from tests.servers import ServerProcess, console_script

MiB = 1024 * 1024


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def tree_of(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path (temporary .part files would show up here too)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def files_under(root: str | Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def sample_tree() -> dict[str, bytes]:
    return {
        "model.pkl": pickle.dumps({"weights": [1.5, 2.5], "bias": -1}),
        "config/hparams.json": b'{"lr": 0.01}',
        "data/deep/er/blob.bin": os.urandom(3 * MiB + 17),  # several chunks, the last one short
        "empty.txt": b"",
    }


def upload_messages(checkpoint_uuid: str, path: str, data: bytes, *, digest_of: bytes | None = None) -> list[Any]:
    header = checkpoint_pb2.CheckpointFile(
        path=path, size=len(data), sha256=hashlib.sha256(data if digest_of is None else digest_of).hexdigest()
    )
    chunks = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    return [pb.UploadCheckpointFilesRequest(checkpoint_uuid=checkpoint_uuid), pb.UploadCheckpointFilesRequest(file=header)] + [
        pb.UploadCheckpointFilesRequest(chunk=c) for c in chunks
    ]


def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        error = from_rpc_error(err)
        return error.code, error.reason
    return grpc.StatusCode.OK, ""


def test_round_trip_of_a_directory_tree(registry: Registry, tmp_path: Path, storage_dir: str) -> None:
    files = sample_tree()
    source = make_tree(tmp_path / "source", files)
    checkpoint = registry.upload_checkpoint(
        source, experiment_id=1, trial_id=2, batch_number=100, metrics={"loss": 0.1}, framework="sklearn", format="pkl"
    )
    assert checkpoint.state == CheckpointState.COMPLETED  # created ACTIVE, completed by the upload
    assert checkpoint.resources == {name: len(data) for name, data in files.items()}
    assert checkpoint.storage_uri == Path(storage_dir).as_uri()  # the storage root: files are blobs by digest
    assert registry.get_checkpoint(checkpoint.uuid).resources == checkpoint.resources

    # The seed's workflow: the latest version's checkpoint, downloaded and loaded.
    model = registry.create_model("m")
    model.register_version(checkpoint.uuid)
    latest = model.get_version().checkpoint
    directory = latest.download(tmp_path / "out")
    assert directory == tmp_path / "out"
    assert tree_of(directory) == files
    assert latest.load(tmp_path / "loaded") == {"weights": [1.5, 2.5], "bias": -1}

    subset = latest.download(tmp_path / "subset", paths=["config/hparams.json", "empty.txt"])
    assert tree_of(subset) == {"config/hparams.json": b'{"lr": 0.01}', "empty.txt": b""}


def test_download_defaults_to_checkpoints_uuid(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "s", {"a.txt": b"a"}))
    monkeypatch.chdir(tmp_path)
    assert checkpoint.download() == Path("checkpoints", checkpoint.uuid)
    assert tree_of(tmp_path / "checkpoints" / checkpoint.uuid) == {"a.txt": b"a"}


def test_a_second_upload_adds_and_replaces_files(registry: Registry, tmp_path: Path) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "one", {"a.txt": b"old", "b.txt": b"b"}))
    updated = registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "two", {"a.txt": b"newer", "c/d.txt": b"d"}))
    assert updated.resources == {"a.txt": 5, "b.txt": 1, "c/d.txt": 1}
    assert tree_of(checkpoint.download(tmp_path / "out")) == {"a.txt": b"newer", "b.txt": b"b", "c/d.txt": b"d"}


@pytest.mark.large
def test_a_file_of_300_mb_streams_through(database_url: str, tmp_path: Path) -> None:
    """Made on the fly in 1 MiB blocks; neither the client (Python allocations traced) nor the server
    process (peak resident memory) ever holds it whole."""
    size = 300 * MiB
    source = tmp_path / "source"
    (source / "weights").mkdir(parents=True)
    digest = hashlib.sha256()
    with open(source / "weights" / "big.bin", "wb") as file:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            file.write(block)
    (source / "meta.json").write_bytes(b"{}")

    with ServerProcess(database_url, "--storage-dir", str(tmp_path / "files")) as server:
        with Registry(server.target) as registry:
            tracemalloc.start()
            try:
                checkpoint = registry.upload_checkpoint(source)
                out = checkpoint.download(tmp_path / "out")
                client_peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            server_peak_kb = int(next(
                line.split()[1] for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            ))
    assert checkpoint.resources == {"weights/big.bin": size, "meta.json": 2}
    downloaded = hashlib.sha256()
    with open(out / "weights" / "big.bin", "rb") as file:
        while block := file.read(MiB):
            downloaded.update(block)
    assert downloaded.hexdigest() == digest.hexdigest()
    assert client_peak < 32 * MiB, client_peak
    assert server_peak_kb * 1024 < 200 * MiB, server_peak_kb


def test_a_corrupted_chunk_is_refused_and_nothing_is_visible(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str, tmp_path: Path
) -> None:
    checkpoint = registry.create_checkpoint()
    good = os.urandom(2 * MiB + 5)
    corrupted = good[:MiB + 7] + bytes([good[MiB + 7] ^ 1]) + good[MiB + 8:]
    # A good first file and a corrupted second one: the call stores neither.
    messages = upload_messages(checkpoint.uuid, "first.bin", b"fine") + upload_messages(
        checkpoint.uuid, "w.bin", corrupted, digest_of=good
    )[1:]
    code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(messages), timeout=30))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FILE_DIGEST_MISMATCH")
    assert registry.get_checkpoint(checkpoint.uuid).resources == {}
    assert files_under(storage_dir) == []  # not even a temporary file
    with pytest.raises(NotFoundError) as missing:
        checkpoint.download(tmp_path / "out", paths=["w.bin"])
    assert missing.value.reason == "CHECKPOINT_FILE_NOT_FOUND"

    # The client uploads again, and this time it lands.
    stub.UploadCheckpointFiles(iter(upload_messages(checkpoint.uuid, "w.bin", good)), timeout=30)
    assert tree_of(checkpoint.download(tmp_path / "again")) == {"w.bin": good}


def test_a_truncated_stream_is_refused_and_nothing_is_visible(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str
) -> None:
    checkpoint = registry.create_checkpoint()
    messages = upload_messages(checkpoint.uuid, "w.bin", os.urandom(3 * MiB))[:-1]  # the last chunk never comes
    code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(messages), timeout=30))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FILE_SIZE_MISMATCH")
    assert registry.get_checkpoint(checkpoint.uuid).resources == {}
    assert files_under(storage_dir) == []


def test_an_interrupted_upload_leaves_nothing_behind(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str
) -> None:
    checkpoint = registry.create_checkpoint()
    release = threading.Event()

    def requests() -> Iterator[Any]:
        yield from upload_messages(checkpoint.uuid, "w.bin", os.urandom(4 * MiB))[:4]  # 2 of 4 chunks
        release.wait(30)  # the client goes away here

    call = stub.UploadCheckpointFiles.future(requests(), timeout=60)
    deadline = time.monotonic() + 30
    while not files_under(storage_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(files_under(storage_dir)) == 1  # the temporary file of w.bin, being written
    call.cancel()
    release.set()
    while files_under(storage_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files_under(storage_dir) == []
    assert registry.get_checkpoint(checkpoint.uuid).resources == {}


BAD_PATHS = ["../escape", "a/../../escape", "/etc/passwd", "a//b", "./a", "a/./b", "a/", "", "a\\b", "a\x00b", "a\nb", " a"]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_paths_outside_the_checkpoint_are_refused(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str, path: str
) -> None:
    checkpoint = registry.create_checkpoint()
    code, reason = refusal(lambda: stub.UploadCheckpointFiles(iter(upload_messages(checkpoint.uuid, path, b"x")), timeout=30))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE_PATH")
    request = pb.DownloadCheckpointFilesRequest(checkpoint_uuid=checkpoint.uuid, paths=[path])
    # NUL is refused in every string of every request before the request is read (INVALID_CHARACTER).
    expected = "INVALID_CHARACTER" if "\x00" in path else "INVALID_FILE_PATH"
    assert refusal(lambda: list(stub.DownloadCheckpointFiles(request, timeout=30))) == (
        grpc.StatusCode.INVALID_ARGUMENT, expected
    )
    assert files_under(storage_dir) == []


def test_a_local_link_is_refused_before_anything_is_created(registry: Registry, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "source", {"a.txt": b"a"})
    (source / "link").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        registry.upload_checkpoint(source)
    assert registry.get_checkpoints() == []


def test_a_refused_upload_deletes_the_checkpoint_it_created(registry: Registry, tmp_path: Path) -> None:
    # A name this filesystem allows but the registry does not (a backslash).
    with pytest.raises(InvalidArgumentError) as refused:
        registry.upload_checkpoint(make_tree(tmp_path / "source", {"ok.txt": b"1", "a\\b": b"2"}))
    assert refused.value.reason == "INVALID_FILE_PATH"
    assert registry.get_checkpoints() == []


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([], "CHECKPOINT_UUID_REQUIRED"),
        ([pb.UploadCheckpointFilesRequest(chunk=b"x")], "CHECKPOINT_UUID_REQUIRED"),
        ([pb.UploadCheckpointFilesRequest(checkpoint_uuid="{uuid}"), pb.UploadCheckpointFilesRequest(chunk=b"x")], "CHUNK_BEFORE_FILE"),
        (["{uuid}", pb.UploadCheckpointFilesRequest(checkpoint_uuid="again")], "UNEXPECTED_UPLOAD_MESSAGE"),
        (["{uuid}", checkpoint_pb2.CheckpointFile(path="a", size=1, sha256="x" * 64)], "INVALID_FILE_DIGEST"),
        (["{uuid}", checkpoint_pb2.CheckpointFile(path="a", size=-1, sha256="0" * 64)], "INVALID_FILE_SIZE"),
        (["{uuid}", checkpoint_pb2.CheckpointFile(path="a", size=1, sha256="0" * 64), b"xy"], "FILE_SIZE_MISMATCH"),
        (["{uuid}", checkpoint_pb2.CheckpointFile(path="a", size=MiB + 1, sha256="0" * 64), b"x" * (MiB + 1)], "CHUNK_TOO_LARGE"),
        (["{uuid}", checkpoint_pb2.CheckpointFile(path="a", size=0, sha256=hashlib.sha256(b"").hexdigest()),
          checkpoint_pb2.CheckpointFile(path="a/b", size=0, sha256=hashlib.sha256(b"").hexdigest())], "FILE_PATH_CONFLICT"),
        (["{uuid}", checkpoint_pb2.CheckpointFile(path="a", size=0, sha256=hashlib.sha256(b"").hexdigest()),
          checkpoint_pb2.CheckpointFile(path="a", size=0, sha256=hashlib.sha256(b"").hexdigest())], "DUPLICATE_FILE_PATH"),
    ],
)
def test_malformed_upload_streams_are_invalid_arguments(
    registry: Registry, stub: pb_grpc.ModelRegistryServiceStub, storage_dir: str, messages: list[Any], reason: str
) -> None:
    checkpoint_uuid = registry.create_checkpoint().uuid

    def message(item: Any) -> pb.UploadCheckpointFilesRequest:
        if item == "{uuid}":
            return pb.UploadCheckpointFilesRequest(checkpoint_uuid=checkpoint_uuid)
        if isinstance(item, checkpoint_pb2.CheckpointFile):
            return pb.UploadCheckpointFilesRequest(file=item)
        if isinstance(item, bytes):
            return pb.UploadCheckpointFilesRequest(chunk=item)
        if item.checkpoint_uuid == "{uuid}":
            return pb.UploadCheckpointFilesRequest(checkpoint_uuid=checkpoint_uuid)
        return item

    stream = [message(m) for m in messages]
    assert refusal(lambda: stub.UploadCheckpointFiles(iter(stream), timeout=30)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert files_under(storage_dir) == []


def test_unknown_checkpoints_and_files_are_not_found(registry: Registry, stub: pb_grpc.ModelRegistryServiceStub) -> None:
    absent = str(uuidlib.uuid4())
    assert refusal(lambda: stub.UploadCheckpointFiles(iter(upload_messages(absent, "a", b"a")), timeout=30)) == (
        grpc.StatusCode.NOT_FOUND, "CHECKPOINT_NOT_FOUND"
    )
    request = pb.DownloadCheckpointFilesRequest(checkpoint_uuid=absent)
    assert refusal(lambda: list(stub.DownloadCheckpointFiles(request, timeout=30))) == (
        grpc.StatusCode.NOT_FOUND, "CHECKPOINT_NOT_FOUND"
    )


def test_files_of_a_checkpoint_in_use_are_kept_and_deleted_with_it(
    registry: Registry, tmp_path: Path, storage_dir: str
) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "source", {"a.txt": b"a"}))
    version = registry.create_model("m").register_version(checkpoint.uuid)
    with pytest.raises(FailedPreconditionError) as in_use:
        registry.upload_checkpoint_files(checkpoint.uuid, make_tree(tmp_path / "other", {"a.txt": b"changed"}))
    assert in_use.value.reason == "CHECKPOINT_IN_USE"
    with pytest.raises(FailedPreconditionError) as in_use:
        checkpoint.delete()
    assert in_use.value.reason == "CHECKPOINT_IN_USE"
    assert tree_of(checkpoint.download(tmp_path / "out")) == {"a.txt": b"a"}

    version.delete()
    checkpoint.delete()
    assert files_under(storage_dir) == []
    with pytest.raises(NotFoundError):
        registry.get_checkpoint(checkpoint.uuid)


def test_concurrent_uploads_of_different_checkpoints(registry: Registry, tmp_path: Path) -> None:
    trees = [{"w.bin": os.urandom(2 * MiB + i), f"n{i}.txt": str(i).encode()} for i in range(6)]

    def round_trip(i: int) -> dict[str, bytes]:
        checkpoint = registry.upload_checkpoint(make_tree(tmp_path / f"in{i}", trees[i]), trial_id=i)
        return tree_of(checkpoint.download(tmp_path / f"out{i}"))

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(round_trip, range(6))) == trees
    assert len(registry.get_checkpoints()) == 6


# S3 through fsspec, against a moto server on 127.0.0.1


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_round_trip(database_url: str, s3_endpoint: str, tmp_path: Path) -> None:
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing", "client_kwargs": {"region_name": "eu-west-1"}}
    bucket = "ckpt-" + uuidlib.uuid4().hex[:12]
    storage = FsspecStorage(f"s3://{bucket}/registry", options)
    storage.fs.mkdir(bucket)
    running = build_server(database_url, storage=storage)

    def keys() -> list[str]:
        storage.fs.invalidate_cache()
        return sorted(storage.fs.find(bucket))

    try:
        with Registry(f"127.0.0.1:{running.port}") as registry:
            files = {"model.pkl": pickle.dumps([1, 2, 3]), "shards/big.bin": os.urandom(10 * MiB + 3)}  # two parts
            checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "source", files))
            assert checkpoint.storage_uri == f"s3://{bucket}/registry"
            digests = sorted(hashlib.sha256(data).hexdigest() for data in files.values())
            assert keys() == [f"{bucket}/registry/blobs/{digest[:2]}/{digest}" for digest in digests]
            assert tree_of(checkpoint.download(tmp_path / "out")) == files
            assert checkpoint.load(tmp_path / "loaded") == [1, 2, 3]

            # A corrupted upload leaves no object behind, not even a temporary one.
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.ModelRegistryServiceStub(channel)
                bad = upload_messages(checkpoint.uuid, "extra.bin", b"y" * 100, digest_of=b"z" * 100)
                assert refusal(lambda: stub.UploadCheckpointFiles(iter(bad), timeout=30))[1] == "FILE_DIGEST_MISMATCH"
            assert len(keys()) == 2

            checkpoint.delete()
            assert keys() == []
    finally:
        running.stop(grace=None)


def test_a_missing_filesystem_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gcsfs"):
        open_storage(f"sqlite:///{tmp_path}/r.db", storage_url="gs://bucket/prefix")


def test_default_storage_dir_is_beside_the_sqlite_file(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/sub/registry.db")
    assert storage.uri() == (tmp_path / "sub" / "registry-files").as_uri()


# Loading


def test_load_names_the_missing_framework(tmp_path: Path) -> None:
    make_tree(tmp_path, {"model.pt": b"not really torch"})
    with pytest.raises(ModuleNotFoundError, match="pip install torch") as missing:
        load_checkpoint_dir(tmp_path)
    assert missing.value.name == "torch"


def test_load_names_the_package_a_pickle_needs(tmp_path: Path) -> None:
    # What pickle.dumps(sklearn.linear_model.LinearRegression()) starts with, without scikit-learn here.
    make_tree(tmp_path, {"model.pkl": b"csklearn.linear_model\nLinearRegression\n)\x81."})
    with pytest.raises(ModuleNotFoundError, match="pip install scikit-learn") as missing:
        load_checkpoint_dir(tmp_path)
    assert missing.value.name == "sklearn"


def test_load_picks_the_file_of_the_checkpoint_format(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a.pkl": pickle.dumps("a"), "b.pickle": pickle.dumps("b"), "notes.txt": b""})
    with pytest.raises(ValueError, match="several loadable files"):
        load_checkpoint_dir(tmp_path)
    assert load_checkpoint_dir(tmp_path, format="pickle") == "b"
    assert load_checkpoint_dir(tmp_path, file="a.pkl") == "a"


# Command line


def test_cli_upload_and_download_are_quiet_off_a_terminal(
    registry_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sample_tree()
    source = make_tree(tmp_path / "source", files)
    status = main(["--target", registry_target, "checkpoint", "upload", str(source), "--trial-id", "3", "--json"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    uploaded = json.loads(out)
    assert uploaded["trial_id"] == 3 and uploaded["state"] == "COMPLETED"
    assert {k: int(v) for k, v in uploaded["resources"].items()} == {name: len(data) for name, data in files.items()}

    status = main(["--target", registry_target, "checkpoint", "download", uploaded["uuid"], str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert (status, out, err) == (0, f"{tmp_path / 'out'}\n", "")
    assert tree_of(tmp_path / "out") == files

    status = main(["--target", registry_target, "checkpoint", "download", uploaded["uuid"], str(tmp_path / "one"), "--path", "empty.txt"])
    assert status == 0 and tree_of(tmp_path / "one") == {"empty.txt": b""}
    status = main(["--target", registry_target, "checkpoint", "download", uploaded["uuid"], str(tmp_path / "x"), "--path", "../x"])
    assert status == 1 and "INVALID_FILE_PATH" in capsys.readouterr().err


def test_cli_shows_progress_on_a_terminal(registry_target: str, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "source", {"w.bin": os.urandom(3 * MiB)})
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real terminal's size
    shown = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        upload = subprocess.run(
            [console_script("model-registry"), "--target", registry_target, "checkpoint", "upload", str(source), "--json"],
            stdout=subprocess.PIPE, stderr=follower, timeout=60,
        )
        checkpoint_uuid = json.loads(upload.stdout)["uuid"]
        download = subprocess.run(
            [console_script("model-registry"), "--target", registry_target, "checkpoint", "download", checkpoint_uuid, str(tmp_path / "out")],
            stdout=subprocess.PIPE, stderr=follower, timeout=60,
        )
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    assert (upload.returncode, download.returncode) == (0, 0)
    text = shown.decode(errors="replace")
    # tqdm's bar: percentage, bytes done/total, elapsed<left, and the rate.
    assert "upload: 100%" in text and "download: 100%" in text, text
    assert "3.00M/3.00M" in text and "B/s]" in text, text


def test_a_file_lost_from_storage_is_data_loss_not_unknown(
    registry: Registry, tmp_path: Path, storage_dir: str
) -> None:
    checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "source", {"a.txt": b"a"}))
    digest = hashlib.sha256(b"a").hexdigest()
    (Path(storage_dir) / "blobs" / digest[:2] / digest).unlink()  # an operator's mistake, or a lost disk
    with pytest.raises(DataLossError) as lost:  # permanent: retrying (UNAVAILABLE) would not help
        checkpoint.download(tmp_path / "out")
    assert lost.value.reason == "CHECKPOINT_FILE_MISSING"
    assert lost.value.metadata["path"] == "a.txt"
    assert tree_of(tmp_path / "out") == {}  # no partial file left where the file should be


def test_fsspec_file_url_round_trip(registry_target: str, database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "fsspec-root"
    storage = open_storage(database_url, storage_url=root.as_uri())
    running = build_server(database_url, storage=storage)
    try:
        with Registry(f"127.0.0.1:{running.port}") as registry, grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            files = {"a/b.bin": os.urandom(MiB + 1), "c.txt": b"c"}
            checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "source", files))
            assert checkpoint.storage_uri == root.as_uri()
            stub = pb_grpc.ModelRegistryServiceStub(channel)
            truncated = upload_messages(checkpoint.uuid, "d.bin", os.urandom(2 * MiB))[:-1]
            assert refusal(lambda: stub.UploadCheckpointFiles(iter(truncated), timeout=30))[1] == "FILE_SIZE_MISMATCH"
            digests = (hashlib.sha256(data).hexdigest() for data in files.values())
            assert files_under(root) == sorted(f"blobs/{digest[:2]}/{digest}" for digest in digests)
            assert tree_of(checkpoint.download(tmp_path / "out")) == files
            checkpoint.delete()
            assert files_under(root) == []
    finally:
        running.stop(grace=None)
