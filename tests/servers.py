"""Registry servers run as real processes through the console script, for tests that need several
of them, or need to kill one."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

SERVING = re.compile(r"registry serving on ([\d.]+):(\d+)")
HTTP_SERVING = re.compile(r"http serving on ([\d.]+):(\d+)")


def console_script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


class ServerProcess:
    """`model-registry-server` in a child process; its log is collected in `lines`."""

    def __init__(self, database_url: str, *args: str, port: int = 0, workers: int = 1, timeout: float = 30) -> None:
        command = [console_script("model-registry-server"), "--port", str(port), "--database-url", database_url]
        if not any(arg.startswith("--storage") for arg in args):
            # Checkpoint files in a directory of our own, not ./registry-files of whoever runs the tests.
            self._files = tempfile.TemporaryDirectory(prefix="registry-files-")
            command += ["--storage-dir", self._files.name]
        if workers > 1:
            command += ["--workers", str(workers)]
        self.process = subprocess.Popen(command + list(args), stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.http_target: str | None = None  # host:port of the HTTP API, logged before the gRPC line
        self._serving = threading.Semaphore(0)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        for _ in range(workers):
            if not self._serving.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self.kill()
                raise AssertionError("server did not start:\n" + "".join(self.lines))
        self.target = self._target

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            http = HTTP_SERVING.search(line)
            if http:
                self.http_target = f"{http.group(1)}:{http.group(2)}"
            match = SERVING.search(line)
            if match:
                self._target = f"{match.group(1)}:{match.group(2)}"
                self._serving.release()

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as in a crash or an OOM kill (of a single-process server)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.stop()


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """Waits until condition() is true, polling; fails the test after `timeout` seconds (generous:
    the machine may be loaded). Tests wait on conditions, never on fixed sleeps."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)
