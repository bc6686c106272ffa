"""The HTTP/JSON API (gateway.py) with a plain HTTP client against real servers: every route, the
same answers and refusals as gRPC, auth, hostile input, streams, TLS, workers and SIGTERM."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_server import contract, openapi, transcode
from registry_server.server import RegistryServer, TlsFiles, build_server
from registry_server.storage import LocalStorage

from .certs import CertificateAuthority
from .conftest import TOKENS, write_tokens
from .servers import ServerProcess, wait_for

ROUTES = transcode.routes(contract.SERVICE)


class Http:
    """A plain HTTP/1.1 client of one server; remembers which routes it called."""

    def __init__(self, port: int, token: str | None = None, context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.token = token
        self.context = context
        self.called: set[tuple[str, str]] = set()

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        sent = dict(headers or {})
        token = token if token is not None else self.token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        for route in ROUTES:
            try:
                matched = route.method == method and route.match(path.split("?")[0]) is not None
            except UnicodeDecodeError:
                matched = False
            if matched:
                self.called.add((route.method, route.template))
                break
        connection = self.connection()
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None, expect: int = 200, **options: Any) -> Any:
        status, headers, data = self.request(method, path, body, **options)
        assert status == expect, (status, data)
        assert headers["content-type"] == "application/json"
        return json.loads(data)

    def refused(self, method: str, path: str, body: Any = None, **options: Any) -> tuple[int, str]:
        """The HTTP status and ErrorInfo reason of a refusal."""
        status, headers, data = self.request(method, path, body, **options)
        assert status >= 400, (status, data)
        assert headers["content-type"] == "application/json", data
        answer = json.loads(data)
        assert set(answer) <= {"code", "message", "details"} and isinstance(answer["code"], int)
        (detail,) = answer["details"]
        assert detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and detail["domain"] == "modelregistry.v1"
        return status, detail["reason"]


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[RegistryServer]:
    running = build_server(database_url, "127.0.0.1", 0, storage=LocalStorage(tmp_path / "files"), http_port=0)
    try:
        yield running
    finally:
        running.stop(grace=None)


@pytest.fixture
def api(served: RegistryServer) -> Http:
    assert served.http_port
    return Http(served.http_port)


@pytest.fixture
def sqlite_served(tmp_path: Path) -> Iterator[RegistryServer]:
    running = build_server(f"sqlite:///{tmp_path}/r.db", "127.0.0.1", 0, storage=LocalStorage(tmp_path / "files"),
                           http_port=0, max_request_bytes=64 * 1024)
    try:
        yield running
    finally:
        running.stop(grace=None)


@pytest.fixture
def sqlite_api(sqlite_served: RegistryServer) -> Http:
    return Http(sqlite_served.http_port or 0)


def upload(api: Http, uuid: str, path: str, data: bytes, **options: Any) -> tuple[int, dict[str, str], bytes]:
    sha = hashlib.sha256(data).hexdigest()
    return api.request("POST", f"/api/v1/checkpoints/{uuid}/files?path={quote(path)}&sha256={sha}", data,
                       {"Content-Type": "application/octet-stream"}, **options)


def test_the_seed_workflow_through_every_route(served: RegistryServer, api: Http) -> None:
    """Every route of the API, with the answers gRPC gives for the same calls."""
    body = {"name": "mnist", "description": "digits", "labels": ["vision", "small"], "metadata": {"team": "a"}}
    created = api.json("POST", "/api/v1/models", body)["model"]
    assert created["name"] == "mnist" and created["labels"] == ["vision", "small"]
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = pb_grpc.ModelRegistryServiceStub(channel)
        over_grpc = json_format.MessageToDict(stub.GetModel(pb.GetModelRequest(name="mnist"), timeout=10))
    assert api.json("GET", "/api/v1/models/mnist") == over_grpc
    api.json("POST", "/api/v1/models", {"name": "other", "labels": ["vision"]})
    listed = api.json("GET", "/api/v1/models?pageSize=1&labels=vision&labels=small&sortBy=MODEL_SORT_BY_NAME&order_by=ORDER_BY_DESC")
    assert [m["name"] for m in listed["models"]] == ["mnist"] and listed["totalSize"] == 1
    page = api.json("GET", "/api/v1/models?pageSize=1&archived=false")
    assert page["nextPageToken"] and page["totalSize"] == 2
    assert api.json("GET", f"/api/v1/models?pageSize=1&archived=false&pageToken={quote(page['nextPageToken'])}")["models"]
    assert api.json("GET", "/api/v1/labels")["labels"][0] == "vision"
    updated = api.json("PATCH", "/api/v1/models/mnist", {"model": {"description": "MNIST"}, "updateMask": "description"})
    assert updated["model"]["description"] == "MNIST"
    merged = api.json("POST", "/api/v1/models/mnist:updateMetadata", {"merge": {"owner": "b"}, "removeKeys": ["team"]})
    assert merged["model"]["metadata"] == {"owner": "b"}
    assert api.json("POST", "/api/v1/models/mnist:archive")["model"]["archived"] is True
    assert api.json("POST", "/api/v1/models/mnist:unarchive", {})["model"].get("archived") is None
    assert api.json("POST", "/api/v1/models/mnist:rename", {"newName": "digits"})["model"]["name"] == "digits"

    checkpoint = api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"experimentId": 3, "trialId": 4, "metrics": {"loss": 0.5}}})["checkpoint"]
    api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"experimentId": 3, "trialId": 5, "metrics": {"loss": 0.1}}})
    assert api.json("GET", f"/api/v1/checkpoints/{checkpoint['uuid']}")["checkpoint"] == checkpoint
    best = api.json("GET", "/api/v1/checkpoints?experimentId=3&sortByMetric=loss&smallerIsBetter=true")["checkpoints"]
    assert [c["trialId"] for c in best] == [5, 4]
    version = api.json("POST", "/api/v1/models/digits/versions", {"checkpointUuid": checkpoint["uuid"], "comment": "first"})["modelVersion"]
    assert version["version"] == 1
    api.json("POST", "/api/v1/models/digits/versions", {"checkpoint": {"experimentId": 9}, "aliases": ["staging"]})
    assert api.json("GET", "/api/v1/models/digits/versions/1")["modelVersion"]["comment"] == "first"
    assert api.json("GET", "/api/v1/models/digits/versions:latest")["modelVersion"]["version"] == 2
    assert api.json("GET", "/api/v1/models/digits/aliases/staging")["modelVersion"]["version"] == 2
    versions = api.json("GET", "/api/v1/models/digits/versions?pageSize=10&orderBy=ORDER_BY_ASC")["modelVersions"]
    assert [v["version"] for v in versions] == [1, 2]
    patched = api.json("PATCH", "/api/v1/models/digits/versions/1", {"modelVersion": {"comment": "best"}, "updateMask": "comment"})
    assert patched["modelVersion"]["comment"] == "best"
    assert api.json("PUT", "/api/v1/models/digits/aliases/production", {"version": 1})["modelVersion"]["aliases"] == ["production"]
    changes = api.json("GET", "/api/v1/models/digits/aliasChanges?alias=production")["changes"]
    assert len(changes) == 1 and changes[0]["alias"] == "production"
    assert api.json("DELETE", "/api/v1/models/digits/aliases/production") == {}

    files = api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"state": "CHECKPOINT_STATE_ACTIVE"}})["checkpoint"]
    status, _, data = upload(api, files["uuid"], "weights/w.bin", b"weights")
    assert status == 200 and json.loads(data)["checkpoint"]["state"] == "CHECKPOINT_STATE_COMPLETED"
    status, headers, data = api.request("GET", f"/api/v1/checkpoints/{files['uuid']}/files/weights/w.bin")
    assert (status, data) == (200, b"weights")
    watched = api.request("GET", "/api/v1/events?stopAtEnd=true&kinds=EVENT_KIND_MODEL_CREATED&modelNames=other")[2]
    assert [json.loads(line)["event"]["modelName"] for line in watched.splitlines()] == ["other"]

    assert api.json("DELETE", "/api/v1/models/digits/versions/1") == {}
    assert api.json("DELETE", f"/api/v1/checkpoints/{checkpoint['uuid']}") == {}
    assert api.json("DELETE", "/api/v1/models/digits") == {}
    assert api.refused("GET", "/api/v1/models/digits") == (404, "MODEL_NOT_FOUND")
    info = api.json("GET", "/api/v1/serverInfo")
    assert info["version"] and info["databaseKind"] in ("sqlite", "postgresql")
    every = {(r.method, r.template) for r in ROUTES}
    assert every - api.called == set(), "routes this test does not call"


def test_the_openapi_document_is_valid_and_names_every_route(api: Http) -> None:
    from openapi_spec_validator import validate

    document = api.json("GET", "/api/v1/openapi.json")
    validate(document)
    assert document == json.loads(openapi.render())
    paths = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert paths == {(r.method, re.sub(r"\{([\w.]+)=[^}]*\}", r"{\1}", r.template)) for r in ROUTES}
    assert "Returns one model by name" in document["paths"]["/api/v1/models/{name}"]["get"]["description"]


def test_refusals_map_to_http_statuses_with_their_reason(sqlite_api: Http) -> None:
    api = sqlite_api
    api.json("POST", "/api/v1/models", {"name": "m"})
    assert api.refused("GET", "/api/v1/models/absent") == (404, "MODEL_NOT_FOUND")
    assert api.refused("POST", "/api/v1/models", {"name": "m"}) == (409, "MODEL_ALREADY_EXISTS")
    assert api.refused("POST", "/api/v1/models", {"name": "a/b"}) == (400, "INVALID_NAME")
    api.json("POST", "/api/v1/models/m:archive")
    assert api.refused("POST", "/api/v1/models/m/versions", {"checkpoint": {}}) == (400, "MODEL_ARCHIVED")
    assert api.refused("GET", "/api/v1/models/m/versions/x") == (400, "MALFORMED_REQUEST")
    assert api.refused("GET", "/api/v1/models/m/versions/1?alias=a") == (400, "ALIAS_AND_VERSION")
    assert api.refused("GET", "/api/v1/nowhere") == (404, "ROUTE_NOT_FOUND")
    assert api.refused("PUT", "/api/v1/models") == (405, "METHOD_NOT_ALLOWED")
    assert api.request("PUT", "/api/v1/models")[1]["allow"] == "GET, POST"
    assert api.refused("GET", "/api/v1/checkpoints/not-a-uuid") == (400, "INVALID_UUID")
    status, _, data = api.request("GET", "/api/v1/models/absent")
    assert json.loads(data)["code"] == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize(
    "method, path, body, reason",
    [
        ("POST", "/api/v1/models", b"{", "MALFORMED_REQUEST"),  # not JSON
        ("POST", "/api/v1/models", b'{"name": "x", "colour": 1}', "MALFORMED_REQUEST"),  # unknown field
        ("POST", "/api/v1/models", b'{"name": 5}', "MALFORMED_REQUEST"),  # wrong type
        ("POST", "/api/v1/models", b'{"name": "\xff"}', "MALFORMED_REQUEST"),  # not UTF-8
        ("POST", "/api/v1/models", b"[1]", "MALFORMED_REQUEST"),  # not an object
        ("POST", "/api/v1/models", b"[" * 60000, "MALFORMED_REQUEST"),  # deeper than any parser
        ("POST", "/api/v1/models?name=x", b"{}", "MALFORMED_REQUEST"),  # the fields go in the body
        ("GET", "/api/v1/models?colour=red", None, "MALFORMED_REQUEST"),  # unknown parameter
        ("GET", "/api/v1/models?archived=maybe", None, "MALFORMED_REQUEST"),
        ("GET", "/api/v1/models?sortBy=SIDEWAYS", None, "MALFORMED_REQUEST"),
        ("GET", "/api/v1/models?pageSize=1&pageSize=2", None, "MALFORMED_REQUEST"),
        ("GET", "/api/v1/models?page_size=1&pageSize=2", None, "MALFORMED_REQUEST"),
        ("GET", "/api/v1/models?name=%ff", None, "MALFORMED_REQUEST"),  # not UTF-8
        ("GET", "/api/v1/models/%ff", None, "MALFORMED_REQUEST"),
        ("GET", "/api/v1/models", b'{"name": "x"}', "MALFORMED_REQUEST"),  # a GET takes no body
        ("GET", "/api/v1/models?name=a%00b", None, "INVALID_CHARACTER"),
        ("GET", "/api/v1/events?kinds=EVENT_KIND_NONSENSE", None, "MALFORMED_REQUEST"),
        ("GET", "/api/v1/events?afterSequence=-1", None, "INVALID_SEQUENCE"),
        ("POST", "/api/v1/models", b" " * (65 * 1024), "REQUEST_TOO_LARGE"),
    ],
)
def test_hostile_requests_get_4xx_with_a_reason(sqlite_api: Http, method: str, path: str, body: bytes | None, reason: str) -> None:
    status, found = sqlite_api.refused(method, path, body)
    assert found == reason
    assert status == (413 if reason == "REQUEST_TOO_LARGE" else 400)
    assert "models" not in sqlite_api.json("GET", "/api/v1/models")  # nothing was created


def test_a_chunked_body_beyond_the_limit_is_refused_while_it_streams(sqlite_served: RegistryServer) -> None:
    with socket.create_connection(("127.0.0.1", sqlite_served.http_port or 0), timeout=30) as raw:
        raw.sendall(b"POST /api/v1/models HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 8192
        try:
            for _ in range(9):  # 72 KiB, beyond the limit of 64 KiB
                raw.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed while we were still sending
        answer = b""
        try:
            while chunk := raw.recv(65536):  # until the server closes
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 413") and b"REQUEST_TOO_LARGE" in answer


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    path=st.lists(st.sampled_from(["api", "v1", "models", "m", "versions", "1", "aliases", "checkpoints", "files", "events",
                                   "labels", ":archive", "%2F", "..", "%00", "x:rename", "ui", "index.html", "**", "%ff"]), max_size=6),
    query=st.lists(st.tuples(st.sampled_from(["pageSize", "name", "labels", "archived", "x", "kinds", "stopAtEnd", "alias"]),
                             st.text(max_size=8)), max_size=3),
    body=st.one_of(st.none(), st.binary(max_size=64), st.dictionaries(st.sampled_from(["name", "model", "version", "x"]),
                                                                       st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=3).map(lambda d: json.dumps(d).encode())),
    header=st.sampled_from([{}, {"Authorization": "Bearer x"}, {"Range": "bytes=-"}, {"Accept": "text/event-stream"}, {"Last-Event-ID": "x"}]),
)
def test_arbitrary_http_requests_never_get_a_500(sqlite_api: Http, method: str, path: list[str], query: list[tuple[str, str]],
                                                  body: bytes | None, header: dict[str, str]) -> None:
    target = "/" + "/".join(path) + ("?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query) if query else "")
    if "events" in path and "stopAtEnd" not in dict(query):
        target += ("&" if query else "?") + "stopAtEnd=true"
    status, headers, data = sqlite_api.request(method, target, body, header)
    assert status < 500, (target, status, data)
    if status >= 400 and method != "HEAD":
        assert json.loads(data)["details"][0]["reason"]


def test_request_ids_make_creates_safe_to_retry_over_http(sqlite_api: Http) -> None:
    first = sqlite_api.json("POST", "/api/v1/models", {"name": "m", "requestId": "r-1"})
    assert sqlite_api.json("POST", "/api/v1/models", {"name": "m", "requestId": "r-1"}) == first
    assert sqlite_api.refused("POST", "/api/v1/models", {"name": "n", "requestId": "r-1"}) == (409, "REQUEST_ID_REUSED")
    version = {"checkpoint": {"uuid": "0c4a4b8e-6a2c-4c55-9d38-7f54d3b1e0a1"}, "request_id": "v-1"}
    once = sqlite_api.json("POST", "/api/v1/models/m/versions", version)
    assert sqlite_api.json("POST", "/api/v1/models/m/versions", version) == once
    assert sqlite_api.json("GET", "/api/v1/models/m/versions")["totalSize"] == 1


@pytest.fixture
def secured(database_url: str, tmp_path: Path) -> Iterator[RegistryServer]:
    running = build_server(database_url, "127.0.0.1", 0, auth_tokens=write_tokens(tmp_path / "tokens"), http_port=0,
                           storage=LocalStorage(tmp_path / "files"))
    try:
        yield running
    finally:
        running.stop(grace=None)


def test_tokens_roles_owners_and_audit_over_http(secured: RegistryServer, caplog: pytest.LogCaptureFixture) -> None:
    api = Http(secured.http_port or 0)
    token = {who: entry[0] for who, entry in TOKENS.items()}
    assert api.refused("GET", "/api/v1/models") == (401, "MISSING_TOKEN")
    assert api.refused("GET", "/api/v1/models", token="wrong") == (401, "INVALID_TOKEN")
    assert api.refused("GET", "/api/v1/models", headers={"Authorization": "Basic eDp5"}) == (401, "MISSING_TOKEN")
    assert api.json("GET", "/api/v1/models", token=token["viewer"]) == {}
    assert api.refused("POST", "/api/v1/models", {"name": "m"}, token=token["viewer"]) == (403, "ROLE_NOT_ALLOWED")
    with caplog.at_level(logging.INFO, logger="registry_server.audit"):
        assert api.json("POST", "/api/v1/models", {"name": "m"}, token=token["alice"])["model"]["owner"] == "alice"
        assert api.refused("DELETE", "/api/v1/models/m", token=token["bob"])[0] == 403
        assert api.json("DELETE", "/api/v1/models/m", token=token["admin"]) == {}
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "registry_server.audit"]
    assert {"principal": "alice", "rpc": "CreateModel", "object": "models/m", "outcome": "OK", "reason": ""} in audit
    assert any(a["principal"] == "bob" and a["rpc"] == "DeleteModel" and a["outcome"] == "PERMISSION_DENIED" for a in audit)
    assert any(a["principal"] == "root" and a["rpc"] == "DeleteModel" and a["outcome"] == "OK" for a in audit)
    assert token["alice"] not in caplog.text


def test_a_non_loopback_host_without_tokens_is_refused_for_http_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refusing to serve"):
        build_server(f"sqlite:///{tmp_path}/r.db", "0.0.0.0", 0, http_port=0)


def sse_events(stream: http.client.HTTPResponse, count: int) -> list[dict[str, str]]:
    """The next `count` SSE messages with an id (comments skipped)."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while len(events) < count:
        line = stream.readline().decode().rstrip("\n")
        if not line:
            if "id" in current:
                events.append(current)
            current = {}
            continue
        if not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return events


def test_server_sent_events_resume_from_last_event_id(sqlite_served: RegistryServer, sqlite_api: Http) -> None:
    for name in ("a", "b", "c"):
        sqlite_api.json("POST", "/api/v1/models", {"name": name})
    connection = sqlite_api.connection()
    connection.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream"})
    stream = connection.getresponse()
    assert stream.status == 200 and stream.getheader("content-type") == "text/event-stream"
    first = sse_events(stream, 2)
    assert [e["id"] for e in first] == ["1", "2"] and first[0]["event"] == "EVENT_KIND_MODEL_CREATED"
    assert json.loads(first[1]["data"])["event"]["modelName"] == "b"
    connection.close()  # the client goes away: its stream ends and gives its place back
    wait_for(lambda: sqlite_served.calls.active("watch") == 0, what="the watch to end after the disconnect")

    resumed = sqlite_api.connection()
    resumed.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream", "Last-Event-ID": first[-1]["id"]})
    stream = resumed.getresponse()
    sqlite_api.json("POST", "/api/v1/models", {"name": "d"})  # committed while the stream waits
    after = sse_events(stream, 2)
    assert [(e["id"], json.loads(e["data"])["event"]["modelName"]) for e in after] == [("3", "c"), ("4", "d")]
    resumed.close()
    wait_for(lambda: sqlite_served.calls.active("watch") == 0, what="the resumed watch to end")


def test_a_file_round_trip_with_ranges_and_etag(sqlite_api: Http) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    uuid = sqlite_api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"state": "CHECKPOINT_STATE_ACTIVE"}})["checkpoint"]["uuid"]
    status, _, answer = upload(sqlite_api, uuid, "dir/model weights.bin", data)
    assert status == 200 and json.loads(answer)["checkpoint"]["resources"] == {"dir/model weights.bin": str(len(data))}
    path = f"/api/v1/checkpoints/{uuid}/files/dir/model%20weights.bin"
    status, headers, body = sqlite_api.request("GET", path)
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    assert (status, body == data, headers["etag"], headers["content-length"]) == (200, True, etag, str(len(data)))
    assert headers["content-type"] == "application/octet-stream" and "attachment" in headers["content-disposition"]
    status, headers, body = sqlite_api.request("GET", path, headers={"Range": "bytes=1048570-1048590"})
    assert (status, body, headers["content-range"]) == (206, data[1048570:1048591], f"bytes 1048570-1048590/{len(data)}")
    assert sqlite_api.request("GET", path, headers={"Range": "bytes=-5"})[2] == data[-5:]
    assert sqlite_api.request("GET", path, headers={"Range": f"bytes={len(data) - 3}-"})[2] == data[-3:]
    assert sqlite_api.refused("GET", path, headers={"Range": f"bytes={len(data)}-"}) == (416, "RANGE_NOT_SATISFIABLE")
    assert sqlite_api.request("GET", path, headers={"If-None-Match": etag})[0] == 304
    status, headers, body = sqlite_api.request("HEAD", path)
    assert (status, body, headers["content-length"]) == (200, b"", str(len(data)))
    assert sqlite_api.refused("GET", f"/api/v1/checkpoints/{uuid}/files/absent") == (404, "CHECKPOINT_FILE_NOT_FOUND")


def test_an_upload_that_does_not_check_out_stores_nothing(sqlite_api: Http) -> None:
    uuid = sqlite_api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"state": "CHECKPOINT_STATE_ACTIVE"}})["checkpoint"]["uuid"]
    wrong = hashlib.sha256(b"other").hexdigest()
    assert sqlite_api.refused("POST", f"/api/v1/checkpoints/{uuid}/files?path=a&sha256={wrong}", b"bytes") == (400, "FILE_DIGEST_MISMATCH")
    assert sqlite_api.refused("POST", f"/api/v1/checkpoints/{uuid}/files?path=a", b"bytes") == (400, "INVALID_FILE_DIGEST")
    assert sqlite_api.refused("POST", f"/api/v1/checkpoints/{uuid}/files?sha256={wrong}", b"x") == (400, "INVALID_FILE_PATH")
    assert sqlite_api.refused("POST", f"/api/v1/checkpoints/{uuid}/files?path=../x&sha256={wrong}", b"x") == (400, "INVALID_FILE_PATH")
    assert sqlite_api.json("GET", f"/api/v1/checkpoints/{uuid}")["checkpoint"].get("resources") is None
    assert upload(sqlite_api, "5d1c2a61-0000-4000-8000-000000000000", "a", b"x")[0] == 404


def test_the_web_ui_is_served_confined_with_a_strict_policy(sqlite_api: Http) -> None:
    ui = Path(__file__).resolve().parent.parent / "registry_server" / "ui"
    if not (ui / "index.html").exists():
        assert sqlite_api.refused("GET", "/") == (404, "ROUTE_NOT_FOUND")
        return
    status, headers, body = sqlite_api.request("GET", "/")
    assert status == 200 and body == (ui / "index.html").read_bytes()
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-cache"
    assert sqlite_api.request("GET", "/", headers={"If-None-Match": headers["etag"]})[0] == 304
    script = next(ui.glob("*.js")).name
    status, headers, _ = sqlite_api.request("GET", f"/ui/{script}")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    for hostile in ("/ui/", "/ui/../pyproject.toml", "/ui/..%2f..%2fpyproject.toml", "/ui/%2e%2e/gateway.py",
                    "/ui/.hidden", "/ui/absent.js", "/ui//etc/passwd", "/ui/%ff", "/ui/a%00.js"):
        assert sqlite_api.refused("GET", hostile) == (404, "ROUTE_NOT_FOUND"), hostile
    assert sqlite_api.refused("POST", "/ui/app.js")[0] == 405


def test_https_with_the_grpc_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    cert = ca.issue("registry server", server=True)
    running = build_server(f"sqlite:///{tmp_path}/r.db", "127.0.0.1", 0, tls=TlsFiles(cert.cert, cert.key), http_port=0)
    try:
        api = Http(running.http_port or 0, context=ssl.create_default_context(cafile=ca.path))
        assert api.json("POST", "/api/v1/models", {"name": "m"})["model"]["name"] == "m"
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            Http(running.http_port or 0).request("GET", "/api/v1/models")  # plaintext is not served
    finally:
        running.stop(grace=None)


def test_mutual_tls_over_https(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    cert, me = ca.issue("registry server", server=True), ca.issue("me", server=False)
    running = build_server(f"sqlite:///{tmp_path}/r.db", "127.0.0.1", 0, tls=TlsFiles(cert.cert, cert.key, ca.path), http_port=0)
    try:
        anonymous = ssl.create_default_context(cafile=ca.path)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            Http(running.http_port or 0, context=anonymous).request("GET", "/api/v1/models")
        known = ssl.create_default_context(cafile=ca.path)
        known.load_cert_chain(me.cert, me.key)
        assert Http(running.http_port or 0, context=known).json("GET", "/api/v1/models") == {}
    finally:
        running.stop(grace=None)


def test_workers_serve_http_on_one_port_and_no_http_turns_it_off(tmp_path: Path) -> None:
    with ServerProcess(f"sqlite:///{tmp_path}/r.db", workers=2) as server:
        assert server.http_target
        port = int(server.http_target.split(":")[1])
        api = Http(port)
        api.json("POST", "/api/v1/models", {"name": "m"})
        for _ in range(20):  # new connections, spread by the kernel over both workers
            assert api.json("GET", "/api/v1/models/m")["model"]["name"] == "m"
        assert sum(f"http serving on 127.0.0.1:{port}" in line for line in server.lines) == 2
    with ServerProcess(f"sqlite:///{tmp_path}/r2.db", "--no-http") as server:
        assert server.http_target is None and not any("http serving" in line for line in server.lines)


def test_sigterm_ends_an_open_event_stream_within_the_grace(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/r.db", "--grace", "3")
    try:
        assert server.http_target
        api = Http(int(server.http_target.split(":")[1]))
        api.json("POST", "/api/v1/models", {"name": "m"})
        connection = api.connection()
        connection.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream"})
        stream = connection.getresponse()
        assert sse_events(stream, 1)[0]["id"] == "1"
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        rest = stream.read().decode()  # until the server ends the stream
        assert "event: error" in rest and "SERVER_STOPPING" in rest
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 3 + 5
    finally:
        server.kill()


def test_the_committed_openapi_document_is_current() -> None:
    """protos/openapi.json is what `make proto` writes (make check-proto fails otherwise, in CI)."""
    committed = Path(__file__).resolve().parent.parent / "protos" / "openapi.json"
    assert committed.read_bytes() == openapi.render(), "run make proto and commit protos/openapi.json"


def test_keep_alive_answers_are_not_held_back_by_nagle(sqlite_api: Http) -> None:
    """An answer goes out in two writes (head, body): without TCP_NODELAY the body waits for the
    client's delayed ACK, 40 ms a call. The median of calls on one connection stays far below that."""
    connection = sqlite_api.connection()
    took = []
    for _ in range(21):
        began = time.perf_counter()
        connection.request("GET", "/api/v1/labels")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"{}"
        took.append(time.perf_counter() - began)
    connection.close()
    assert sorted(took)[10] < 0.030, took


def test_streams_over_their_cap_get_429(tmp_path: Path) -> None:
    running = build_server(f"sqlite:///{tmp_path}/r.db", "127.0.0.1", 0, http_port=0, max_watchers=1)
    try:
        api = Http(running.http_port or 0)
        connection = api.connection()
        connection.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream"})
        stream = connection.getresponse()
        assert stream.status == 200 and stream.readline() == b": watching\n"
        assert api.refused("GET", "/api/v1/events") == (429, "TOO_MANY_STREAMS")
        connection.close()
        wait_for(lambda: running.calls.active("watch") == 0, what="the watch to end")
        assert api.request("GET", "/api/v1/events?stopAtEnd=true")[0] == 200
    finally:
        running.stop(grace=None)


def test_a_revoked_token_ends_its_event_stream_with_the_reason(secured: RegistryServer, tmp_path: Path) -> None:
    api = Http(secured.http_port or 0, token=TOKENS["viewer"][0])
    connection = api.connection()
    connection.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream", "Authorization": f"Bearer {TOKENS['viewer'][0]}"})
    stream = connection.getresponse()
    assert stream.status == 200 and stream.readline() == b": watching\n"
    write_tokens(tmp_path / "tokens", {k: v for k, v in TOKENS.items() if k != "viewer"})
    assert secured.reload_tokens()
    rest = stream.read().decode()  # the server ends the stream
    assert "event: error" in rest and "TOKEN_REVOKED" in rest
    assert api.refused("GET", "/api/v1/models") == (401, "INVALID_TOKEN")


def test_templates_bind_nested_fields_multi_segment_values_and_verbs() -> None:
    """What the grammar of google.api.http allows beyond the routes in use: `{model.name=models/*}`,
    `{path=**}`, a custom verb."""
    pattern, variables = transcode._compile("/v9/{model.name=models/*}/{rest=**}:touch")
    route = transcode.Route("UpdateModel", "POST", "t", "", pattern, variables, pb.UpdateModelRequest,
                            contract.SERVICE.methods_by_name["UpdateModel"])
    bound = route.match("/v9/models/m%20n/a/b%2Fc:touch")
    assert bound == {"model.name": "models/m n", "rest": "a/b/c"}
    assert route.match("/v9/other/m/a:touch") is None and route.match("/v9/models/m/a") is None
    request = transcode.request(route, {"model.name": "m"}, {"updateMask": ["description,labels"], "model.description": ["d"]}, b"")
    assert request.model.name == "m" and request.model.description == "d"
    assert list(request.update_mask.paths) == ["description", "labels"]


def test_an_upload_cut_mid_body_stores_nothing_and_fails_nothing(sqlite_served: RegistryServer, sqlite_api: Http,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    uuid = sqlite_api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"state": "CHECKPOINT_STATE_ACTIVE"}})["checkpoint"]["uuid"]
    sha = hashlib.sha256(b"x" * 1000).hexdigest()
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", sqlite_served.http_port or 0), timeout=30) as raw:
            raw.sendall(f"POST /api/v1/checkpoints/{uuid}/files?path=a&sha256={sha} HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 1000\r\n\r\n".encode() + b"x" * 10)
            wait_for(lambda: sqlite_served.calls.active("upload") == 1, what="the upload to start")
        wait_for(lambda: sqlite_served.calls.active("upload") == 0, what="the cut upload to end")
    assert sqlite_api.json("GET", f"/api/v1/checkpoints/{uuid}")["checkpoint"]["state"] == "CHECKPOINT_STATE_ACTIVE"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_file_gone_from_storage_is_a_clean_data_loss(sqlite_api: Http, tmp_path: Path) -> None:
    uuid = sqlite_api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"state": "CHECKPOINT_STATE_ACTIVE"}})["checkpoint"]["uuid"]
    assert upload(sqlite_api, uuid, "w.bin", b"weights")[0] == 200
    digest = hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "files" / "blobs" / digest[:2] / digest).unlink()
    assert sqlite_api.refused("GET", f"/api/v1/checkpoints/{uuid}/files/w.bin") == (500, "CHECKPOINT_FILE_MISSING")


def test_a_download_takes_path_or_paths_not_both(sqlite_served: RegistryServer, sqlite_api: Http) -> None:
    uuid = sqlite_api.json("POST", "/api/v1/checkpoints", {"checkpoint": {"state": "CHECKPOINT_STATE_ACTIVE"}})["checkpoint"]["uuid"]
    assert upload(sqlite_api, uuid, "a", b"a")[0] == 200
    with grpc.insecure_channel(f"127.0.0.1:{sqlite_served.port}") as channel:
        stub = pb_grpc.ModelRegistryServiceStub(channel)
        one = list(stub.DownloadCheckpointFiles(pb.DownloadCheckpointFilesRequest(checkpoint_uuid=uuid, path="a"), timeout=10))
        assert [m.WhichOneof("content") for m in one] == ["file", "chunk"] and one[1].chunk == b"a"
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.DownloadCheckpointFiles(pb.DownloadCheckpointFilesRequest(checkpoint_uuid=uuid, path="a", paths=["a"]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "path" in (refused.value.details() or "")
