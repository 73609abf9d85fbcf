"""The page at / in real headless Chromium (Debian's package), against the four real services.

Screenshots go to test-artifacts/web/ (git-ignored). Without /usr/bin/chromium (scripts/test
installs it with apt-get when it can) these tests skip, saying so.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imgpipe.testing.processes import ServiceProcesses
from tests.images import image_bytes

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (scripts/install-browser installs it as root)",
    ),
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
DONE_TIMEOUT_MS = 60_000
TOKEN = "page-test-token"


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for this module only.

    Playwright's sync API keeps an event loop running while it is open; closing it with the
    module leaves the asyncio tests that follow a thread without a running loop.
    """
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (own storage); fails the test on any uncaught script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
    finally:
        context.close()
    assert not errors, f"script errors on the page: {errors}"


def _running(system: ServiceProcesses, **env: str) -> Iterator[str]:
    system.env.update(env)
    try:
        with ThreadPoolExecutor(1) as thread:  # Playwright's sync API runs a loop in this one
            thread.submit(system.start_all_sync).result()
        yield system.upload_url
    finally:
        system.stop_all()


@pytest.fixture(scope="module")
def imgpipe_url(module_system: ServiceProcesses) -> Iterator[str]:
    """The four services, shared by this module's tests; yields the upload service's URL."""
    yield from _running(module_system)


@pytest.fixture
def secured_url(system_env: ServiceProcesses) -> Iterator[str]:
    """The four services with UPLOAD_API_TOKENS set (token: TOKEN)."""
    yield from _running(system_env, UPLOAD_API_TOKENS=f"other-token,{TOKEN}")


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {"photo.jpg": image_bytes(900, 600, ".jpg"), "logo.png": image_bytes(320, 320, ".png"),
             "notes.txt": b"these are notes, not an image",
             "broken.jpg": image_bytes(900, 600, ".jpg")[:700]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def _wait_until(page: Page, expression: str, timeout: float = 20) -> None:
    """Poll ``expression`` from here: the page's CSP forbids the eval that
    ``wait_for_function`` needs once it has to wait."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {expression}"
        page.wait_for_timeout(100)


def open_page(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("#preset option[value=thumbnail]")).to_have_count(1)
    expect(page.locator("#pipeline-status")).to_contain_text("resize:w=256,h=256/format:jpeg")


def test_upload_reaches_done_with_previews_and_provenance(
    page: Page, imgpipe_url: str, images: dict[str, Path]
) -> None:
    open_page(page, imgpipe_url)
    page.fill("#pipeline", "resize:w=300/format:png")
    expect(page.locator("#pipeline-status")).to_have_text("✓ resize:w=300/format:png")
    page.set_input_files("#files", [images["photo.jpg"], images["logo.png"]])
    jobs = page.locator("#jobs > li.job")
    expect(jobs).to_have_count(2)
    for job in (jobs.nth(0), jobs.nth(1)):
        expect(job).to_have_attribute("data-status", re.compile("queued|processing|done"))
        expect(job).to_have_attribute("data-status", "done", timeout=DONE_TIMEOUT_MS)

    photo = page.locator("li.job", has_text="photo.jpg")
    output = photo.locator("figure.output img")
    expect(output).to_be_visible()
    assert output.evaluate("img => img.complete && img.naturalWidth") == 300
    expect(photo.locator("figure.output figcaption")).to_contain_text("PNG · 300×200")
    expect(photo.locator("figure.input figcaption")).to_contain_text("JPEG · 900×600")
    assert photo.locator("figure.input img").evaluate("img => img.naturalWidth") == 900
    download = photo.locator("a.download")
    expect(download).to_have_attribute("href", re.compile(r"^/jobs/[0-9a-f]{32}/outputs/0$"))
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename.endswith(".png")
    assert Path(info.value.path()).read_bytes().startswith(b"\x89PNG")
    shot(page, "done")

    photo.locator("details.provenance summary").click()
    body = photo.locator(".prov-body")
    expect(body.locator("a.prov-json")).to_have_attribute(
        "href", re.compile(r"^/jobs/[0-9a-f]{32}/provenance$"))
    expect(body).to_contain_text("resize:w=300/format:png")
    activities = body.locator(".prov-activity")
    expect(activities.first).to_contain_text("upload of photo.jpg")
    expect(activities.nth(1)).to_contain_text("Used: JPEG 900×600")
    expect(activities.nth(1)).to_contain_text("Made: PNG 300×200")
    expect(activities.nth(1)).to_contain_text("libvips")
    shot(page, "provenance")

    page.reload()  # the list survives a reload
    expect(page.locator("#jobs > li.job[data-status=done]")).to_have_count(2, timeout=DONE_TIMEOUT_MS)


def test_pipeline_is_validated_as_you_type(page: Page, imgpipe_url: str) -> None:
    open_page(page, imgpipe_url)
    field = page.locator("#pipeline")
    status = page.locator("#pipeline-status")
    field.fill("resize:w=abc")
    expect(status).to_contain_text("✗")
    expect(status).to_contain_text("resize")
    expect(field).to_have_attribute("aria-invalid", "true")
    shot(page, "pipeline-error")
    field.fill("  resize:w=120/format:webp ")
    expect(status).to_have_text("✓ resize:w=120/format:webp")
    expect(field).to_have_attribute("aria-invalid", "false")
    field.fill("")
    page.select_option("#preset", "dither")
    expect(status).to_contain_text("dither")


def test_refusals_are_shown_with_their_reason(
    page: Page, imgpipe_url: str, images: dict[str, Path]
) -> None:
    open_page(page, imgpipe_url)
    page.set_input_files("#files", images["notes.txt"])
    job = page.locator("li.job", has_text="notes.txt")
    expect(job).to_have_attribute("data-status", "failed")
    expect(job.locator(".job-detail")).to_contain_text("unsupported_format")

    page.set_input_files("#files", images["broken.jpg"])  # accepted, then fails in processing
    broken = page.locator("li.job", has_text="broken.jpg")
    expect(broken).to_have_attribute("data-status", "failed", timeout=DONE_TIMEOUT_MS)
    expect(broken.locator(".job-detail")).to_contain_text("corrupt_image")

    page.fill("#pipeline", "frobnicate")
    page.set_input_files("#files", images["logo.png"])
    expect(page.locator("#pipeline-status")).to_contain_text("Cannot upload yet")
    expect(page.locator("li.job", has_text="logo.png")).to_have_count(0)
    expect(page.locator("#pipeline")).to_be_focused()
    shot(page, "refused")


def test_keyboard_reaches_every_control(page: Page, imgpipe_url: str) -> None:
    open_page(page, imgpipe_url)
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert {"preset", "pipeline", "files", "clear-jobs"} <= set(reached), reached
    for control in ("preset", "pipeline", "files"):
        label = page.locator(f"label[for={control}]")
        expect(label).to_have_count(1)


def test_phone_width(page: Page, imgpipe_url: str, images: dict[str, Path]) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    open_page(page, imgpipe_url)
    page.fill("#pipeline", "resize:w=200/format:webp")
    expect(page.locator("#pipeline-status")).to_contain_text("✓")
    page.set_input_files("#files", images["photo.jpg"])
    job = page.locator("li.job", has_text="photo.jpg").first
    expect(job).to_have_attribute("data-status", "done", timeout=DONE_TIMEOUT_MS)
    expect(job.locator("figure.output img")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    shot(page, "phone")


def test_api_tokens(page: Page, secured_url: str, images: dict[str, Path]) -> None:
    page.goto(secured_url + "/")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    expect(page.locator("#token-status")).to_contain_text("token")
    page.fill("#token", TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#token-form")).to_be_hidden()
    expect(page.locator("#preset option[value=thumbnail]")).to_have_count(1)
    page.fill("#pipeline", "resize:w=300/format:png")
    expect(page.locator("#pipeline-status")).to_have_text("✓ resize:w=300/format:png")
    page.set_input_files("#files", images["photo.jpg"])
    job = page.locator("li.job", has_text="photo.jpg")
    expect(job).to_have_attribute("data-status", "done", timeout=DONE_TIMEOUT_MS)
    output = job.locator("figure.output img")
    page.wait_for_function("img => img.complete && img.naturalWidth === 300",
                           arg=output.element_handle())
    assert output.get_attribute("src").startswith("blob:")
    with page.expect_download() as info:
        job.locator("a.download").click()
    assert info.value.suggested_filename == "photo-0.png"
    job.locator("details.provenance summary").click()
    expect(job.locator(".prov-activity").first).to_contain_text("upload of photo.jpg")
    shot(page, "token")
    assert page.request.get(secured_url + "/api").status == 200
    assert page.request.get(secured_url + "/presets").status == 401


@pytest.fixture
def signing_url(system_env: ServiceProcesses, tmp_path: Path) -> Iterator[str]:
    """The four services with imageproc signing outputs and upload trusting the chain's CA."""
    from imgpipe.credentials.chain import make_chain

    files = make_chain(tmp_path / "chain", purpose="trial")
    yield from _running(system_env, C2PA_SIGN="on", C2PA_CERT_CHAIN=str(files.chain),
                        C2PA_PRIVATE_KEY=str(files.key), C2PA_TRUST_ANCHORS=str(files.ca))


def test_content_credentials_panel(page: Page, signing_url: str,
                                   images: dict[str, Path]) -> None:
    open_page(page, signing_url)
    page.fill("#pipeline", "resize:w=200/format:webp")
    page.set_input_files("#files", [images["photo.jpg"]])
    job = page.locator("#jobs > li.job").first
    expect(job).to_have_attribute("data-status", "done", timeout=DONE_TIMEOUT_MS)
    job.locator("details.credentials summary").click()
    body = job.locator(".cred-body")
    expect(body.locator(".cred-verdict")).to_contain_text("Trusted")
    expect(body).to_contain_text("imgpipe TRIAL signer")
    expect(body.locator(".cred-actions")).to_contain_text("c2pa.resized resize:w=200")
    expect(body.locator(".cred-actions")).to_contain_text("c2pa.transcoded format:webp")
    expect(body.locator(".cred-ingredients")).to_contain_text("parentOf: photo.jpg sha256:")
    shot(page, "credentials")


def test_live_events_lineage_graph_and_verify(
    page: Page, imgpipe_url: str, images: dict[str, Path]
) -> None:
    """The page follows GET /events (status changes arrive without polling), reconnects after
    a cut, draws the lineage as inline SVG whose nodes open their records, and verifies."""
    open_page(page, imgpipe_url)
    expect(page.locator("#live-status")).to_have_attribute("data-live", "on")
    page.fill("#pipeline", "resize:w=120/format:png")
    lone = images["logo.png"].with_name("lone.png")  # content no other test uploads
    lone.write_bytes(image_bytes(333, 222, ".png"))
    page.set_input_files("#files", lone)
    job = page.locator("li.job", has_text="lone.png")
    expect(job).to_have_attribute("data-status", "done", timeout=DONE_TIMEOUT_MS)
    # the job's records arrive on the stream (a poll may have shown "done" a moment earlier)
    _wait_until(page, "LIVE.records >= 2 && !!LIVE.lastId")

    page.evaluate("LIVE.controller.abort()")  # the stream is cut in the middle
    expect(page.locator("#live-status")).to_have_attribute("data-live", "off")
    expect(page.locator("#live-status")).to_have_attribute("data-live", "on", timeout=20_000)
    before = page.evaluate("LIVE.records")
    page.set_input_files("#files", images["photo.jpg"])
    photo = page.locator("li.job", has_text="photo.jpg")
    expect(photo).to_have_attribute("data-status", "done", timeout=DONE_TIMEOUT_MS)
    assert page.evaluate("LIVE.reconnects") >= 1
    _wait_until(page, f"LIVE.records > {before}")

    job.locator("details.provenance summary").click()
    graph = job.locator("svg.lineage-graph")
    expect(graph).to_be_visible()
    expect(graph.locator("g.node-image")).to_have_count(2)
    expect(graph.locator("g.node-step")).to_have_count(1)
    expect(graph.locator("g.node-upload")).to_have_count(1)
    expect(graph.locator("path.edge")).to_have_count(3)
    expect(graph.locator("g.node-step")).to_contain_text("resize:w=120/format:png")
    thumbs = graph.locator("g.node-image image")
    expect(thumbs).to_have_count(2)
    assert all(re.match(r"^/jobs/[0-9a-f]{32}/(input|outputs/0)$", thumbs.nth(i).get_attribute("href") or "")
               for i in range(2))
    graph.locator("g.node-step").click()
    expect(job.locator(".record-panel pre.record")).to_contain_text("resize:w=120/format:png")
    graph.locator("g.node-image").first.focus()
    page.keyboard.press("Enter")
    expect(job.locator(".record-panel h4")).to_contain_text("Image sha256:")
    shot(page, "lineage")

    job.locator("button.verify").click()
    expect(job.locator(".verdict")).to_have_attribute("data-verified", "true", timeout=30_000)
    expect(job.locator(".verify-steps li[data-outcome=verified]")).to_have_count(1)
    shot(page, "verified")

    page.locator("#status-panel summary").click()
    table = page.locator(".status-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text(".uploaded")
    expect(page.locator("#jobs-per-second")).to_be_visible()
    expect(page.locator("#status-body")).to_contain_text("Replay is for operators")
    shot(page, "operations")


@pytest.fixture
def operator_url(system_env: ServiceProcesses) -> Iterator[str]:
    """The four services with API tokens, TOKEN being the operator "ops"'s."""
    yield from _running(system_env, UPLOAD_API_TOKENS=f"other-token,ops:{TOKEN}",
                        UPLOAD_OPERATORS="ops", AMQP_RETRY_DELAYS="0.2")


def test_operator_sees_dead_letters_with_reasons_and_replays_them(
    page: Page, operator_url: str, images: dict[str, Path]
) -> None:
    page.goto(operator_url + "/")
    page.fill("#token", TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#preset option[value=thumbnail]")).to_have_count(1)
    page.set_input_files("#files", images["broken.jpg"])
    broken = page.locator("li.job", has_text="broken.jpg")
    expect(broken).to_have_attribute("data-status", "failed", timeout=DONE_TIMEOUT_MS)
    page.locator("#status-panel summary").click()
    row = page.locator(".status-table tbody tr").first
    expect(row.locator("td[data-field=dead]")).to_have_text("1", timeout=30_000)
    expect(page.locator(".dead-letters li").first).to_contain_text("job ")
    shot(page, "dead-letters")
    page.locator("button.replay").first.click()
    expect(page.locator("#status-note")).to_contain_text("Replayed 1 message(s)")
    assert page.request.post(operator_url + f"/dead-letters/{'x' * 8}/replay",
                             headers={"Authorization": f"Bearer {TOKEN}"}).status == 404
    assert page.request.post(operator_url + "/dead-letters/x/replay",
                             headers={"Authorization": "Bearer other-token"}).status == 403
