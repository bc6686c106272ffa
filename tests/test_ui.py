"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against a real server
process (`model-registry-server --http-port 0`). Data is made over gRPC with the Python client, the
way a pipeline would; everything checked is what the browser shows. Waits are on conditions
(Playwright's expect), never on fixed sleeps."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from registry_client import Registry
from tests.servers import ServerProcess

CHROMIUM = os.environ.get("MODEL_REGISTRY_TEST_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):  # CI installs it (.ci/run): a missing browser there is a failure, not a skip
        raise RuntimeError(f"no Chromium at {CHROMIUM} in CI")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=20_000)  # the machine may be loaded

EDITOR = "e" * 32  # principal ci, editor
VIEWER = "v" * 32  # principal alice, viewer
OTHER = "o" * 32  # principal bob, editor


class Running(NamedTuple):
    server: ServerProcess
    grpc: str
    base: str


def start(directory: Path, *args: str) -> Running:
    server = ServerProcess(f"sqlite:///{directory}/registry.db", "--http-port", "0", *args)
    assert server.http_target, "the server logged no HTTP port:\n" + "".join(server.lines)
    return Running(server, server.target, f"http://{server.http_target}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("ui")
    tokens = directory / "tokens"
    tokens.write_text(f"{EDITOR} ci editor\n{VIEWER} alice viewer\n{OTHER} bob editor\n")
    tokens.chmod(0o600)
    running = start(directory, "--auth-tokens", str(tokens))
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture(scope="module")
def ci(registry: Running) -> Iterator[Registry]:
    client = Registry(registry.grpc, token=EDITOR)
    yield client
    client.close()


@pytest.fixture(scope="module")
def bob(registry: Running) -> Iterator[Registry]:
    client = Registry(registry.grpc, token=OTHER)
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (its own sessionStorage) at 1280x800; fails the test on a script
    error or a Content-Security-Policy violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" and "Content Security Policy" in m.text else None)
    yield opened
    context.close()
    assert not problems, problems


def sign_in(page: Page, token: str) -> None:
    page.click("#signin")
    page.fill("#token-input", token)
    page.press("#token-input", "Enter")
    expect(page.locator("#who")).to_contain_text("Signed in")


def assert_labelled(page: Page) -> None:
    """Every form control in the page has a name for assistive technology (a label or aria-label)."""
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('main input, main select, main textarea, main button')]
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map((el) => el.outerHTML)""")
    assert not unlabelled, unlabelled


def open_as(page: Page, registry: Running, token: str, where: str = "#/") -> None:
    page.goto(registry.base + "/")
    sign_in(page, token)
    page.goto(registry.base + "/" + where)


def test_models_table_sorts_filters_and_pages(registry: Running, ci: Registry, bob: Registry, page: Page) -> None:
    for i in range(30):
        ci.create_model(f"uilist-{i:02d}", description=f"model number {i}" + (" ocr" if i % 10 == 3 else ""),
                        labels=["vision"] if i % 7 == 0 else [])
    busy = ci.get_model("uilist-05")
    for batch in range(3):
        busy.register_version(checkpoint={"experiment_id": 1, "batch_number": batch, "metrics": {"loss": 1.0 / (batch + 1)}})
    busy.set_alias("production", 2)
    ci.get_model("uilist-29").archive()
    bob.create_model("uilist-bob", description="bob's")

    open_as(page, registry, VIEWER, "#/?name=uilist&pageSize=25")
    rows = page.locator("#models-table tbody tr")
    expect(rows).to_have_count(25)
    expect(page.locator("#models-status")).to_have_text("Models 1–25 of 31")
    expect(rows.first).to_have_attribute("data-model", "uilist-00")
    # Latest version and aliases of the visible models.
    row = page.locator('#models-table tr[data-model="uilist-05"]')
    expect(row.locator(".c-latest")).to_have_text("v3")
    expect(row.locator(".c-aliases")).to_have_text(re.compile(r"production → v2"))

    assert_labelled(page)
    page.click("#next-page")
    expect(rows).to_have_count(6)
    expect(page.locator("#models-status")).to_have_text("Models 26–31 of 31")
    expect(page.locator("#next-page")).to_be_disabled()
    page.go_back()  # the browser's history pages too
    expect(page.locator("#models-status")).to_have_text("Models 1–25 of 31")
    page.go_forward()
    expect(page.locator("#models-status")).to_have_text("Models 26–31 of 31")
    page.click("#prev-page")
    expect(page.locator("#models-status")).to_have_text("Models 1–25 of 31")
    expect(page.locator("#prev-page")).to_be_disabled()

    # Sorts: by number of versions, then descending by name.
    page.focus('button[data-sort="MODEL_SORT_BY_NUM_VERSIONS"]')
    page.keyboard.press("Enter")  # the keyboard works the sort as the mouse does
    expect(page.locator("th.c-num_versions")).to_have_attribute("aria-sort", "ascending")
    page.click('button[data-sort="MODEL_SORT_BY_NUM_VERSIONS"]')
    expect(page.locator("th.c-num_versions")).to_have_attribute("aria-sort", "descending")
    expect(rows.first).to_have_attribute("data-model", "uilist-05")
    page.select_option("#f-sort", "MODEL_SORT_BY_NAME")
    page.select_option("#f-order", "ORDER_BY_DESC")
    page.click("text=Apply")
    expect(rows.first).to_have_attribute("data-model", "uilist-bob")

    # Filters: labels, description, archived, owner.
    page.fill("#f-labels", "vision")
    page.click("text=Apply")
    expect(rows).to_have_count(5)  # 0, 7, 14, 21, 28
    page.fill("#f-labels", "")
    page.fill("#f-description", "OCR")
    page.click("text=Apply")
    expect(rows).to_have_count(3)  # 3, 13, 23
    page.fill("#f-description", "")
    page.select_option("#f-archived", "true")
    page.click("text=Apply")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-model", "uilist-29")
    page.select_option("#f-archived", "")
    page.fill("#f-owner", "bob")
    page.click("text=Apply")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-model", "uilist-bob")


def test_model_page_compares_versions_and_shows_alias_history(registry: Running, ci: Registry, bob: Registry, page: Page) -> None:
    model = ci.create_model("uicompare", description="compare me", metadata={"dataset": {"name": "mnist", "rows": 60000}})
    for batch, loss in ((100, 0.5), (200, 0.25), (300, 0.125)):
        model.register_version(checkpoint={"experiment_id": 7, "trial_id": 1, "batch_number": batch, "framework": "torch",
                                           "format": "pt", "metrics": {"loss": loss}, "hparams": {"lr": 0.1, "depth": batch // 100}})
    model.set_alias("production", 1)
    model.set_editors(["bob"])
    bob.get_model("uicompare").set_alias("production", 2)

    open_as(page, registry, VIEWER, "#/models/uicompare")
    expect(page.locator("#model-description")).to_have_text("compare me")
    expect(page.locator("#model-metadata")).to_contain_text("mnist")
    versions = page.locator("#versions-table tbody tr")
    expect(versions).to_have_count(3)
    expect(versions.first).to_have_attribute("data-version", "3")  # newest first
    expect(page.locator('#versions-table tr[data-version="2"]')).to_contain_text("production")
    expect(page.locator('#versions-table tr[data-version="2"]')).to_contain_text("0.25")
    history = page.locator("#alias-history li")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("bob")
    expect(history.first).to_contain_text("moved from v1 to v2")
    expect(history.last).to_contain_text("ci")
    expect(history.last).to_contain_text("set to v1")

    page.check("#pick-1")
    page.check("#pick-3")
    page.click("#compare")
    table = page.locator("#compare-table")
    expect(table.locator('tr[data-field="loss"]')).to_have_class("differs")
    expect(table.locator('tr[data-field="loss"]')).to_contain_text("0.5")
    expect(table.locator('tr[data-field="loss"]')).to_contain_text("0.125")
    expect(table.locator('tr[data-field="depth"]')).to_have_class("differs")
    expect(table.locator('tr[data-field="lr"]')).to_have_class("same")
    expect(table.locator('tr[data-field="framework"]')).to_have_class("same")
    page.check("#only-diffs")
    expect(table.locator('tr[data-field="lr"]')).to_be_hidden()


def test_version_page_lists_files_with_download_links_and_snippets(registry: Running, ci: Registry, page: Page, tmp_path: Path) -> None:
    files = tmp_path / "ckpt"
    (files / "config").mkdir(parents=True)
    (files / "model.pkl").write_bytes(bytes(range(256)) * 40)
    (files / "config" / "hparams.json").write_text('{"lr": 0.1}')
    checkpoint = ci.upload_checkpoint(files, experiment_id=3, trial_id=2, batch_number=50, framework="sklearn", format="pkl",
                                      metrics={"acc": 0.9})
    ci.create_model("uiversion").register_version(checkpoint.uuid, comment="first")

    open_as(page, registry, VIEWER, "#/models/uiversion/versions/1")
    expect(page.locator("#checkpoint-uuid")).to_have_text(checkpoint.uuid)
    expect(page.locator("#checkpoint-metrics")).to_contain_text("acc")
    row = page.locator('#files-table tr[data-path="model.pkl"]')
    expect(row).to_contain_text("10.0 KiB")
    link = row.locator("a.download")
    expect(link).to_have_attribute("href", f"/api/v1/checkpoints/{checkpoint.uuid}/files/model.pkl")
    with page.expect_download() as downloading:
        link.click()
    saved = tmp_path / "downloaded"
    downloading.value.save_as(saved)
    assert saved.read_bytes() == (files / "model.pkl").read_bytes()
    expect(page.locator("figure.snippet", has_text="Command line")).to_contain_text(f"model-registry checkpoint download {checkpoint.uuid}")
    expect(page.locator("figure.snippet", has_text="Python client")).to_contain_text('r.get_version("uiversion", version=1)')
    expect(page.locator("figure.snippet", has_text="curl")).to_contain_text(f"{registry.base}/api/v1/checkpoints/{checkpoint.uuid}/files/config/hparams.json")


def test_editor_edits_and_sees_refusals(registry: Running, ci: Registry, bob: Registry, page: Page) -> None:
    model = ci.create_model("uiedit", description="before")
    model.register_version(checkpoint={"experiment_id": 1})
    model.register_version(checkpoint={"experiment_id": 1})
    bob.create_model("uiedit-bobs", description="bob's own")

    open_as(page, registry, EDITOR, "#/models/uiedit")
    expect(page.locator("#alias-set")).to_be_visible()
    assert_labelled(page)
    page.click("#edit-description")
    page.fill("#edit-description-input", "after, edited in the browser")
    page.click("text=Save")
    expect(page.locator("#model-description")).to_have_text("after, edited in the browser")
    assert ci.get_model("uiedit").description == "after, edited in the browser"

    page.click("#edit-labels")
    page.fill("#edit-labels-input", "nlp, candidate")
    page.click("text=Save")
    expect(page.locator("#model-labels")).to_contain_text("candidate")

    page.click("#edit-notes")
    page.fill("#edit-notes-input", "# Trained\n\n- on **all** the data")
    page.click("text=Save")
    expect(page.locator("#model-notes strong")).to_have_text("all")

    page.fill("#meta-key", "owner_team")
    page.fill("#meta-value", '{"name": "vision"}')
    page.click("text=Set key")
    expect(page.locator("#model-metadata")).to_contain_text("owner_team")
    assert ci.get_model("uiedit").metadata["owner_team"] == {"name": "vision"}

    page.fill("#alias-name", "production")
    page.fill("#alias-version", "1")
    page.click("#alias-set")
    expect(page.locator('#model-aliases li[data-alias="production"]')).to_contain_text("production → v1")
    page.fill("#alias-name", "production")
    page.fill("#alias-version", "2")
    page.click("#alias-set")
    expect(page.locator('#model-aliases li[data-alias="production"]')).to_contain_text("production → v2")
    expect(page.locator("#alias-history li").first).to_contain_text("moved from v1 to v2")
    page.click('button[aria-label="Delete alias production"]')
    expect(page.locator('#model-aliases li[data-alias="production"]')).to_have_count(0)

    # A refusal: an alias that breaks the rules, then a model that is not ci's.
    page.fill("#alias-name", "123")
    page.fill("#alias-version", "1")
    page.click("#alias-set")
    expect(page.locator(".error")).to_contain_text("INVALID_ALIAS")

    page.click("#archive-toggle")
    expect(page.locator("#model-name")).to_contain_text("archived")
    page.click("#edit-description")
    page.fill("#edit-description-input", "refused")
    page.click("text=Save")
    expect(page.locator(".error")).to_contain_text("MODEL_ARCHIVED")
    page.click("text=Cancel")
    page.click("#archive-toggle")
    expect(page.locator("#model-name")).not_to_contain_text("archived")

    page.goto(registry.base + "/#/models/uiedit-bobs")
    expect(page.locator("#model-name")).to_have_text("uiedit-bobs")
    page.click("#edit-description")
    page.fill("#edit-description-input", "taken over")
    page.click("text=Save")
    refusal = page.locator(".error")
    expect(refusal).to_contain_text("PERMISSION_DENIED")
    expect(refusal).to_contain_text("NOT_MODEL_EDITOR")
    assert bob.get_model("uiedit-bobs").description == "bob's own"


def test_viewer_sees_no_edit_controls(registry: Running, ci: Registry, page: Page) -> None:
    ci.create_model("uiviewer", description="look, don't touch").register_version(checkpoint={"experiment_id": 1})
    page.goto(registry.base + "/#/models/uiviewer")
    expect(page.locator("#notice")).to_contain_text("needs a token")  # the server has tokens
    page.click("#signin")
    page.fill("#token-input", "not-a-token")
    page.press("#token-input", "Enter")
    expect(page.locator("#notice")).to_contain_text("That token was refused")
    expect(page.locator("#who")).to_have_text("Not signed in")
    expect(page.locator("#signout")).to_be_hidden()  # the refused token is not kept
    sign_in(page, VIEWER)
    expect(page.locator("#who")).to_have_text("Signed in: read only")
    expect(page.locator("#model-description")).to_have_text("look, don't touch")
    expect(page.locator("#versions-table tbody tr")).to_have_count(1)
    for control in ("#edit-description", "#edit-labels", "#edit-notes", "#archive-toggle", "#alias-set", "#meta-key"):
        expect(page.locator(control)).to_have_count(0)
    assert page.locator("main button", has_text="Delete").count() == 0


def test_hostile_strings_render_as_text(registry: Running, ci: Registry, page: Page) -> None:
    xss = '<img src=x onerror="window.__xss=1">'
    name = "ui<b onmouseover=window.__xss=1>bold&amp;"
    ci.create_model(
        name,
        description=xss,
        labels=["<script>window.__xss=1</script>"],
        notes=f"# {xss}\n\n<script>window.__xss=1</script>\n\n[click](javascript:window.__xss=1) and **{xss}**"
        "\n\nSee [the docs](https://example.com/docs).",
        metadata={"<svg onload=window.__xss=1>": {"k": xss}},
    ).register_version(checkpoint={"experiment_id": 1, "metrics": {xss: 1}})

    open_as(page, registry, VIEWER, "#/?name=ui%3Cb")
    row = page.locator("#models-table tbody tr").first
    expect(row.locator(".c-name a")).to_have_text(name)
    expect(row.locator(".c-description")).to_have_text(xss)
    expect(row.locator(".c-labels")).to_have_text("<script>window.__xss=1</script>")
    row.locator(".c-name a").click()
    expect(page.locator("#model-name")).to_have_text(name)
    expect(page.locator("#model-description")).to_have_text(xss)
    expect(page.locator("#model-notes h3")).to_have_text(xss)
    expect(page.locator("#model-notes")).to_contain_text("<script>window.__xss=1</script>")
    expect(page.locator("#model-notes")).to_contain_text("[click](javascript:window.__xss=1)")
    expect(page.locator("#model-metadata")).to_contain_text("<svg onload=window.__xss=1>")
    link = page.locator("#model-notes a")
    expect(link).to_have_count(1)  # the https link, not the javascript: one
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    page.locator("#versions-table a", has_text="v1").click()
    expect(page.locator("#checkpoint-metrics")).to_contain_text(xss)
    assert page.locator("main img, main script, main svg, main b, a[href^='javascript']").count() == 0
    assert page.evaluate("window.__xss") is None


MARKDOWN = (
    "# Title\n\nSome *em* and **strong** and `code <b>`.\nnext line\n\n- one\n- two [x](https://e.com/a)\n\n"
    "1. first\n2. second\n\n> quoted\n\n```\n<script>alert(1)</script>\n```\n\n---\n\n"
    "https://example.org/path. and [bad](javascript:alert(1)) and [rel](/api/v1/models) and snake_case_name"
)
LINK = 'rel="noopener noreferrer nofollow" target="_blank"'
RENDERED = (
    "<h3>Title</h3><p>Some <em>em</em> and <strong>strong</strong> and <code>code &lt;b&gt;</code>.<br>next line</p>"
    f'<ul><li>one</li><li>two <a href="https://e.com/a" {LINK}>x</a></li></ul><ol><li>first</li><li>second</li></ol>'
    "<blockquote><p>quoted</p></blockquote><pre><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre><hr>"
    f'<p><a href="https://example.org/path" {LINK}>https://example.org/path</a>. and [bad](javascript:alert(1)) and '
    "[rel](/api/v1/models) and snake_case_name</p>"
)


def test_markdown_renderer_builds_nodes_and_links_only_to_the_web(registry: Running, page: Page) -> None:
    page.goto(registry.base + "/")
    rendered = page.evaluate("async (source) => (await import('/ui/markdown.js')).render(source).innerHTML", MARKDOWN)
    assert rendered == RENDERED


def test_pages_refresh_live_on_changes_made_over_grpc(registry: Running, ci: Registry, page: Page) -> None:
    model = ci.create_model("uilive")
    model.register_version(checkpoint={"experiment_id": 1})
    model.register_version(checkpoint={"experiment_id": 1})
    model.set_alias("production", 1)

    open_as(page, registry, VIEWER, "#/models/uilive")
    expect(page.locator('#model-aliases li[data-alias="production"]')).to_contain_text("production → v1")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    model.set_alias("production", 2)
    expect(page.locator('#model-aliases li[data-alias="production"]')).to_contain_text("production → v2")
    expect(page.locator("#alias-history li").first).to_contain_text("moved from v1 to v2")
    model.register_version(checkpoint={"experiment_id": 1})
    expect(page.locator("#versions-table tbody tr").first).to_have_attribute("data-version", "3")

    # The events view follows the stream.
    page.goto(registry.base + "/#/events?models=uilive")
    expect(page.locator('#events-body tr[data-kind="ALIAS_SET"]')).to_have_count(2)
    expect(page.locator("#events-state")).to_contain_text("Live")
    model.delete_alias("production")
    expect(page.locator('#events-body tr[data-kind="ALIAS_DELETED"]')).to_have_count(1)


def test_server_without_tokens_needs_no_sign_in(browser: Browser, tmp_path: Path) -> None:
    running = start(tmp_path)
    try:
        with Registry(running.grpc) as client:
            client.create_model("open-model", description="anyone may edit")
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(running.base + "/#/models/open-model")
        expect(page.locator("#who")).to_have_text("No sign-in needed")
        page.click("#edit-description")
        page.fill("#edit-description-input", "edited without a token")
        page.click("text=Save")
        expect(page.locator("#model-description")).to_have_text("edited without a token")
        context.close()
    finally:
        running.server.stop()


def test_events_view_says_why_the_server_ended_the_stream(browser: Browser, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{EDITOR} ci editor\n{VIEWER} alice viewer\n")
    tokens.chmod(0o600)
    running = start(tmp_path, "--auth-tokens", str(tokens))
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        open_as(page, running, VIEWER, "#/events")
        expect(page.locator("#events-state")).to_contain_text("Live")
        tokens.write_text(f"{EDITOR} ci editor\n")  # alice's token revoked
        running.server.process.send_signal(signal.SIGHUP)
        expect(page.locator("main .error")).to_contain_text("TOKEN_REVOKED")
        expect(page.locator("#events-state")).to_have_text("Disconnected.")
        context.close()
    finally:
        running.server.stop()


def screenshots(directory: Path) -> list[Path]:
    """PNGs of each page of the UI on a small demo registry, for the README: `python -m tests.test_ui DIR`
    (what `make screenshots` runs)."""
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    saved = []
    with tempfile.TemporaryDirectory() as data:
        running = start(Path(data))
        try:
            with Registry(running.grpc) as client:
                mnist = client.create_model(
                    "mnist_cnn", description="a character recognition model", labels=["vision", "production"],
                    metadata={"dataset_url": "http://yann.lecun.com/exdb/mnist/", "owner": {"team": "vision", "oncall": "ana"}},
                    notes="# MNIST CNN\n\nTrained on the **full** training set.\n\n- 2 conv layers\n- dropout 0.25\n\nSee [the paper](https://example.com/paper).",
                )
                for batch, (loss, acc) in enumerate(((0.31, 0.91), (0.12, 0.96), (0.09, 0.975)), start=1):
                    mnist.register_version(checkpoint={
                        "experiment_id": 1, "trial_id": batch, "batch_number": batch * 1000, "framework": "torch-2.4", "format": "pt",
                        "metrics": {"test_loss": loss, "test_acc": acc}, "hparams": {"lr": 0.01 / batch, "epochs": 10 * batch, "dropout": 0.25},
                    }, comment=f"trial {batch}")
                mnist.set_alias("production", 2)
                mnist.set_alias("staging", 3)
                mnist.set_alias("production", 3)
                files = Path(data) / "ckpt"
                files.mkdir()
                (files / "model.pt").write_bytes(b"\0" * 120_000)
                (files / "config.json").write_text('{"layers": 2}')
                uploaded = client.upload_checkpoint(files, experiment_id=2, trial_id=1, batch_number=500, framework="sklearn", format="pkl",
                                                    metrics={"f1": 0.88})
                for name, description in (("fashion_mnist", "a clothing recognition model"), ("bert_ner", "named entities"),
                                          ("resnet50", "image classification"), ("whisper_small", "speech to text")):
                    model = client.create_model(name, description=description, labels=["nlp"] if "bert" in name else ["vision"])
                    model.register_version(uploaded.uuid if name == "fashion_mnist" else None,
                                           checkpoint=None if name == "fashion_mnist" else {"experiment_id": 3, "metrics": {"acc": 0.8}})
            with sync_playwright() as playwright:
                launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = launched.new_context(viewport={"width": 1280, "height": 800}).new_page()
                for name, where, ready in (
                    ("ui-models", "#/", "text=production → v3"),
                    ("ui-model", "#/models/mnist_cnn", "#alias-history li"),
                    ("ui-compare", "#/models/mnist_cnn/compare?v=1,2,3", "#compare-table"),
                    ("ui-version", "#/models/fashion_mnist/versions/1", "#files-table"),
                    ("ui-events", "#/events", "#events-body tr"),
                ):
                    page.goto(f"{running.base}/{where}")
                    page.wait_for_selector(ready)
                    page.wait_for_selector("body[data-painted]")
                    path = directory / f"{name}.png"
                    page.screenshot(path=str(path), full_page=name != "ui-events")
                    saved.append(path)
                launched.close()
        finally:
            running.server.stop()
    return saved


if __name__ == "__main__":
    import sys

    for made in screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(made)
