"""A private PostgreSQL cluster that a test starts and stops itself (initdb and pg_ctl on its own port
and data directory), so that database faults never touch the machine's shared server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def available() -> str:
    """Why a private cluster cannot be made here, or "" when it can."""
    if not _binary("initdb") or not _binary("pg_ctl"):
        return "initdb/pg_ctl not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run the cluster"
    return ""


class PrivateCluster:
    """initdb into a temporary directory, then start/stop/restart on a free port."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="registry-pg-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(_binary("initdb"), "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + list(command), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_binary("pg_ctl"), "-D", f"{self.dir}/data", "-o", options, "-l", f"{self.dir}/log", "-w", "start")

    def stop(self) -> None:
        self._run(_binary("pg_ctl"), "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop")

    def terminate_other_connections(self) -> None:
        """Drops every connection but this one: what a failover or a proxy restart does to clients."""
        import psycopg2

        with psycopg2.connect(self.url) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
        conn.close()

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
