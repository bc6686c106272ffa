"""Checkpoint file throughput: upload and download MB/s through a real registry server, beside a plain
local file copy of the same file measured in the same run.

    python -m bench.files [--size-mb 256] [--repeat 3] [--server-args "--storage-url ..."]

The server runs as its own process (`model-registry-server`, SQLite and a storage directory in a
temporary directory), the client in this one, both on this machine over 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from registry_client import Registry

MiB = 1024 * 1024


def make_file(path: Path, size_mb: int) -> None:
    """Random bytes (nothing compresses or deduplicates them), written 1 MiB at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        for _ in range(size_mb):
            file.write(os.urandom(MiB))


def copy_and_fsync(source: Path, target: Path) -> None:
    """A plain copy that, like the registry, has the bytes on disk before it returns."""
    shutil.copyfile(source, target)
    with open(target, "rb+") as file:
        os.fsync(file.fileno())


def start_server(workdir: Path, extra_args: list[str]) -> tuple[subprocess.Popen[str], str]:
    beside = Path(sys.executable).parent / "model-registry-server"  # this environment's, not another on PATH
    server = str(beside) if beside.exists() else shutil.which("model-registry-server") or "model-registry-server"
    command = [server, "--port", "0", "--no-http", "--database-url", f"sqlite:///{workdir}/registry.db"]
    if not any(arg.startswith("--storage") for arg in extra_args):
        command += ["--storage-dir", str(workdir / "files")]
    process = subprocess.Popen(command + extra_args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"registry serving on ([\d.]+):(\d+)", line)
        if match:
            return process, f"{match.group(1)}:{match.group(2)}"
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("the registry server did not start")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="size of the checkpoint file (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each measurement (default: %(default)s)")
    parser.add_argument("--server-args", default="", help="more flags for model-registry-server, e.g. a --storage-url")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-files-") as temp:
        workdir = Path(temp)
        source = workdir / "checkpoint" / "weights.bin"
        make_file(source, args.size_mb)
        process, target = start_server(workdir, shlex.split(args.server_args))
        times: dict[str, list[float]] = {"file copy": [], "file copy + fsync": [], "upload": [], "download": []}
        try:
            with Registry(target) as registry:
                for round_ in range(args.repeat):
                    times["file copy"].append(timed(lambda: shutil.copyfile(source, workdir / f"copy{round_}")))
                    times["file copy + fsync"].append(timed(lambda: copy_and_fsync(source, workdir / f"synced{round_}")))
                    checkpoint = None

                    def upload() -> None:
                        nonlocal checkpoint
                        checkpoint = registry.upload_checkpoint(source.parent)

                    times["upload"].append(timed(upload))
                    assert checkpoint is not None
                    times["download"].append(timed(lambda: checkpoint.download(workdir / f"download{round_}")))
                    for name in (f"copy{round_}", f"synced{round_}"):
                        (workdir / name).unlink()
                    shutil.rmtree(workdir / f"download{round_}")
                    checkpoint.delete()
        finally:
            process.terminate()
            process.wait(30)

    print(f"{args.size_mb} MiB file, {args.repeat} rounds, MB/s (1 MB = 10^6 bytes): median (best)")
    size = args.size_mb * MiB
    baseline = statistics.median(times["file copy"])
    for name, seconds in times.items():
        median, best = statistics.median(seconds), min(seconds)
        print(
            f"  {name:<18} {size / median / 1e6:8.0f} ({size / best / 1e6:.0f})"
            f"   {baseline / median:6.2f}x of a file copy's speed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
