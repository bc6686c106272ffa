"""TLS and mutual TLS with certificates made here: handshakes that succeed, and those that must fail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_client import Registry
from registry_client.cli import main as cli
from registry_client.errors import UnavailableError
from registry_server.server import RegistryServer, TlsFiles, build_server

from .certs import CertificateAuthority, Issued
from .conftest import TOKENS
from .servers import ServerProcess


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@pytest.fixture
def stranger_ca(tmp_path: Path) -> CertificateAuthority:
    """A CA nobody here trusts."""
    return CertificateAuthority(tmp_path, "stranger CA")


@pytest.fixture
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("registry server", server=True)


def serve(database_url: str, tls: TlsFiles, **options: object) -> RegistryServer:
    return build_server(database_url, "127.0.0.1", 0, tls=tls, **options)


@pytest.fixture
def tls_server(database_url: str, server_cert: Issued) -> Iterator[RegistryServer]:
    running = serve(database_url, TlsFiles(server_cert.cert, server_cert.key))
    yield running
    running.stop(grace=None)


@pytest.fixture
def mtls_server(database_url: str, server_cert: Issued, ca: CertificateAuthority) -> Iterator[RegistryServer]:
    running = serve(database_url, TlsFiles(server_cert.cert, server_cert.key, ca.path))
    yield running
    running.stop(grace=None)


def target(server: RegistryServer) -> str:
    return f"127.0.0.1:{server.port}"


def test_tls_handshake_with_the_servers_ca(tls_server: RegistryServer, ca: CertificateAuthority) -> None:
    with Registry(target(tls_server), tls_ca=ca.path, timeout=10) as registry:
        assert registry.create_model("m").name == "m"
    # The certificate names localhost too.
    with Registry(f"localhost:{tls_server.port}", tls_ca=ca.path, timeout=10) as registry:
        assert [m.name for m in registry.get_models()] == ["m"]


def test_tls_refuses_plaintext_and_untrusted_cas(
    tls_server: RegistryServer, stranger_ca: CertificateAuthority
) -> None:
    with Registry(target(tls_server), timeout=5) as plaintext, pytest.raises(UnavailableError):
        plaintext.create_model("m")
    with Registry(target(tls_server), tls_ca=stranger_ca.path, timeout=5) as wrong, pytest.raises(UnavailableError):
        wrong.create_model("m")


def test_mutual_tls_accepts_only_clients_with_a_certificate_of_its_ca(
    mtls_server: RegistryServer, ca: CertificateAuthority, stranger_ca: CertificateAuthority
) -> None:
    mine = ca.issue("client", server=False)
    with Registry(target(mtls_server), tls_ca=ca.path, tls_cert=mine.cert, tls_key=mine.key, timeout=10) as registry:
        assert registry.create_model("m").name == "m"
    with Registry(target(mtls_server), tls_ca=ca.path, timeout=5) as anonymous, pytest.raises(UnavailableError):
        anonymous.create_model("n")
    forged = stranger_ca.issue("forged client", server=False)
    with Registry(
        target(mtls_server), tls_ca=ca.path, tls_cert=forged.cert, tls_key=forged.key, timeout=5
    ) as impostor, pytest.raises(UnavailableError):
        impostor.create_model("n")


def test_server_process_and_cli_with_mutual_tls_and_a_token(
    tmp_path: Path, ca: CertificateAuthority, server_cert: Issued, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(" ".join(TOKENS["alice"]) + "\n")
    client_cert = ca.issue("cli", server=False)
    flags = ["--auth-tokens", str(tokens), "--tls-cert", server_cert.cert, "--tls-key", server_cert.key,
             "--tls-client-ca", ca.path]
    with ServerProcess(f"sqlite:///{tmp_path}/registry.db", *flags) as server:
        assert "TLS with client certificates, bearer tokens" in "".join(server.lines)
        connection = ["--target", server.target, "--tls-ca", ca.path, "--tls-cert", client_cert.cert,
                      "--tls-key", client_cert.key]
        monkeypatch.setenv("MODEL_REGISTRY_TOKEN", TOKENS["alice"][0])
        assert cli([*connection, "model", "create", "m"]) == 0
        capsys.readouterr()
        assert cli([*connection, "--json", "model", "describe", "m"]) == 0
        assert json.loads(capsys.readouterr().out)["model"]["owner"] == "alice"
        monkeypatch.delenv("MODEL_REGISTRY_TOKEN")
        assert cli([*connection, "model", "create", "n"]) == 1
        assert "UNAUTHENTICATED MISSING_TOKEN" in capsys.readouterr().err
        assert cli([*connection, "--token", TOKENS["alice"][0], "model", "create", "n"]) == 0
        assert cli(["--target", server.target, "--tls-ca", ca.path, "--token", TOKENS["alice"][0],
                    "model", "create", "o"]) == 1  # no client certificate: no handshake
        assert server.stop() == 0
