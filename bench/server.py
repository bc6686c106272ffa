"""The server under test: the `model-registry-server` console script in its own process (so that the
load generator never shares its GIL), timed from launch to health SERVING, and its resident set."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _console_script() -> str:
    beside = Path(sys.executable).parent / "model-registry-server"
    found = str(beside) if beside.exists() else shutil.which("model-registry-server")
    if not found:
        raise SystemExit("model-registry-server is not installed: run `make install`")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchServer:
    """One server process; `startup_s` is the time from exec to the first SERVING health answer."""

    def __init__(self, database_url: str, extra_args: list[str], log_path: Path, timeout: float = 60) -> None:
        port, self.http_port = _free_port(), _free_port()
        self.target = f"127.0.0.1:{port}"
        self._log = open(log_path, "a")
        command = [_console_script(), "--port", str(port), "--http-port", str(self.http_port),
                   "--database-url", database_url, "--log-level", "WARNING"]
        began = time.perf_counter()
        self.process = subprocess.Popen(command + extra_args, stdout=self._log, stderr=subprocess.STDOUT)
        self.startup_s = self._wait_serving(began, timeout)

    def _wait_serving(self, began: float, timeout: float) -> float:
        # gRPC waits a second before reconnecting after the first refused connection: that would be
        # measured as start-up, so the channel retries every 5 ms instead.
        options = [(f"grpc.{k}_reconnect_backoff_ms", 5) for k in ("initial", "min", "max")]
        with grpc.insecure_channel(self.target, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.perf_counter() - began < timeout:
                if self.process.poll() is not None:
                    raise SystemExit(f"the server exited with status {self.process.returncode}; see {self._log.name}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - began
                except grpc.RpcError:
                    pass
                time.sleep(0.005)
        self.stop()
        raise SystemExit(f"the server was not SERVING within {timeout}s; see {self._log.name}")

    def rss_mb(self) -> float:
        """Resident set of the server process, from /proc (Linux)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        """CPU time (user + system) the server has spent so far, its worker processes (`--workers`)
        included, from /proc (Linux)."""
        me, ticks = str(self.process.pid), 0
        for entry in os.listdir("/proc"):
            fields = _stat_fields(entry) if entry.isdigit() else None
            if fields and (entry == me or fields[1] == me):  # the server, or a process it started
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _stat_fields(pid: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...; utime is [11]), or None
    when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
