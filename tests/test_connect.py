"""Connecting: default port, timeouts, and one clear line when the registry cannot be reached
(nothing listening, TLS on one side only, an untrusted certificate), with no gRPC log lines."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry_client import Registry, UnavailableError
from registry_client.cli import main
from registry_server.server import RegistryServer, TlsFiles, build_server
from registry_server.storage import LocalStorage

from .certs import CertificateAuthority
from .servers import ServerProcess, console_script

REFUSED = "cannot reach the registry at {} (is the server running? set --target or MODEL_REGISTRY_TARGET)"


@pytest.fixture
def closed_port() -> int:
    """A port on which nothing listens (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "given, dialled",
    [
        ("localhost", "localhost:50051"),
        ("registry.example.com", "registry.example.com:50051"),
        ("10.0.0.7", "10.0.0.7:50051"),
        ("[::1]", "[::1]:50051"),
        ("::1", "[::1]:50051"),
        ("dns:///registry.internal", "dns:///registry.internal:50051"),
        ("localhost:7000", "localhost:7000"),
        ("[::1]:7000", "[::1]:7000"),
        ("dns:///registry.internal:7000", "dns:///registry.internal:7000"),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "ipv4:10.0.0.1:50051,10.0.0.2:50051"),
        ("unix:///run/registry.sock", "unix:///run/registry.sock"),
    ],
)
def test_a_target_without_a_port_gets_50051(given: str, dialled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Registry(given) as r:
        assert r.target == dialled
    monkeypatch.setenv("MODEL_REGISTRY_TARGET", given)
    with Registry() as r:
        assert r.target == dialled


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "soon"])
def test_a_timeout_must_be_a_positive_number(timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--timeout", timeout, "model", "list"]) == 2
    assert "--timeout: expected a positive number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "30"])
def test_the_client_refuses_a_timeout_that_is_not_positive(timeout: object) -> None:
    with pytest.raises((ValueError, TypeError), match="timeout"):
        Registry("localhost", timeout=timeout)  # type: ignore[arg-type]


def test_a_refused_connection_is_one_clear_line(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{closed_port}"
    assert main(["--target", target, "model", "list"]) == 1
    assert capsys.readouterr() == ("", f"error: UNAVAILABLE: {REFUSED.format(target)}\n")
    with Registry(target, timeout=10) as r:
        with pytest.raises(UnavailableError) as caught:
            r.check_connection()
        assert (caught.value.code, caught.value.message) == (grpc.StatusCode.UNAVAILABLE, REFUSED.format(target))
        with pytest.raises(UnavailableError) as caught:  # after the channel's retries: the same words
            r.get_models()
        assert caught.value.message == REFUSED.format(target)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@pytest.fixture
def tls_server(database_url: str, ca: CertificateAuthority, tmp_path: Path) -> Iterator[RegistryServer]:
    cert = ca.issue("registry server", server=True)
    running = build_server(database_url, "127.0.0.1", 0, tls=TlsFiles(cert.cert, cert.key, ca.path),
                           storage=LocalStorage(tmp_path / "tls-files"))
    yield running
    running.stop(grace=None)


def test_tls_mismatches_get_a_hint(
    tls_server: RegistryServer, registry_server: RegistryServer, ca: CertificateAuthority, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tls, plain = f"127.0.0.1:{tls_server.port}", f"127.0.0.1:{registry_server.port}"
    me = ca.issue("me", server=False)
    stranger = CertificateAuthority(tmp_path, "stranger CA")
    cases = [
        (["--target", tls], "the server closed the connection at once: if it serves TLS, connect with --tls-ca"),
        (["--target", plain, "--tls-ca", ca.path], "the server does not speak TLS: drop --tls"),
        (["--target", tls, "--tls-ca", stranger.path, "--tls-cert", me.cert, "--tls-key", me.key],
         "the server's certificate is not signed by a CA this client trusts: give the CA that signed it with --tls-ca"),
        (["--target", tls, "--tls-ca", ca.path],
         "the server closed the connection during the TLS handshake: if it asks for a client certificate, "
         "give --tls-cert and --tls-key"),
    ]
    for argv, hint in cases:
        assert main([*argv, "model", "list"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"error: UNAVAILABLE: cannot reach the registry at {argv[1]}: ")
        assert hint in err and err.count("\n") == 1, err
    assert main(["--target", tls, "--tls-ca", ca.path, "--tls-cert", me.cert, "--tls-key", me.key, "model", "list"]) == 0


def test_no_grpc_log_line_reaches_the_terminal(tmp_path: Path, ca: CertificateAuthority) -> None:
    """gRPC core logs every failed TLS handshake on stderr by itself; the CLI prints its one line only."""
    cert = ca.issue("registry server", server=True)
    stranger = CertificateAuthority(tmp_path, "stranger CA")
    env = {key: value for key, value in os.environ.items() if key != "GRPC_VERBOSITY"}
    with ServerProcess(f"sqlite:///{tmp_path}/tls.db", "--tls-cert", cert.cert, "--tls-key", cert.key) as tls, \
            ServerProcess(f"sqlite:///{tmp_path}/plain.db") as plain:
        for argv in (["--target", tls.target], ["--target", tls.target, "--tls-ca", stranger.path],
                     ["--target", plain.target, "--tls-ca", ca.path]):
            done = subprocess.run([console_script("model-registry"), *argv, "--timeout", "10", "model", "list"],
                                  capture_output=True, text=True, env=env, timeout=60)
            assert done.returncode == 1
            assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
            assert done.stderr.startswith("error: UNAVAILABLE: cannot reach the registry at ")
