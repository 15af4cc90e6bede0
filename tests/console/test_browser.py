"""The console in a real browser: Debian's Chromium, driven by Playwright, against the API on a
real uvicorn with a job the worker's code has run. An auditor signs in, sees the overdue request
first, opens a request and its chart, verifies a certificate in the browser (and sees a tampered
one fail), opens the lineage, and signs out; no request leaves the API's origin.

Screenshots go to a temporary folder, or to docs/console/ with LETHE_CONSOLE_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import SCREENSHOTS, World, set_progress

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Shots:
    """Screenshots: to a temporary folder, or (LETHE_CONSOLE_SCREENSHOTS=1) to docs/console/,
    reduced to a 128-colour palette there so that the README's images stay small."""

    def __init__(self, tmp: Path) -> None:
        self.keep = os.environ.get("LETHE_CONSOLE_SCREENSHOTS") == "1"
        self.folder = SCREENSHOTS if self.keep else tmp
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, page: Any, name: str, *, full_page: bool = False) -> None:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if self.keep:
            from PIL import Image

            with Image.open(path) as image:
                small = image.convert("RGB").quantize(colors=128)
            small.save(path, optimize=True)


@pytest.fixture()
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path / "shots")


def tampered(envelope: dict[str, Any]) -> dict[str, Any]:
    """The same envelope, its statement changed by one claim: the signature no longer holds."""
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["policy"]["verdict"] = "pass"
    statement["predicate"]["forgotten"]["this_job"]["count"] += 1
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return {**envelope, "payload": base64.b64encode(payload).decode()}


def test_an_auditor_walks_through_the_console(
    world: World, browser: Any, shots: Shots, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    seen: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # Sign in: any page sends a visitor without a session to the form.
    page.goto(f"{world.url}/console/requests")
    expect(page).to_have_url(f"{world.url}/console/sign-in")
    page.get_by_label("API key").fill(world.acme.auditor)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{world.url}/console/requests")
    assert world.acme.auditor not in page.url
    storage = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert world.acme.auditor not in storage
    assert "lethe_console" not in page.evaluate("() => document.cookie")  # HttpOnly

    # The overdue request comes first, and the clock counts it.
    rows = page.locator("#requests tbody tr")
    expect(rows.first).to_have_attribute("data-request-id", world.overdue_id)
    expect(rows.first.locator(".badge")).to_have_text("overdue")
    expect(page.locator("#overdue-count")).to_have_text("1")
    expect(page.locator("#due-soon-count")).to_have_text("1")
    expect(rows.first).to_contain_text("day(s) late")
    # Dates are shown in the viewer's zone, the UTC value on hover.
    first_time = rows.first.locator("time").first
    assert "UTC" in (first_time.get_attribute("title") or "")
    shots(page, "requests")

    # A filter by subject reference keeps only that person's request.
    page.get_by_label("Subject reference").fill("ticket-17")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-request-id", world.answered_id)

    # A request: its job, verdict, checks, and the chart of original vs unlearned vs retrained.
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Verdict and evidence")).to_be_visible()
    expect(page.locator("#job-state")).to_have_text("succeeded")
    chart = page.locator("svg.chart.evidence")
    expect(chart).to_be_visible()
    for series in ("original", "unlearned", "retrained"):
        assert chart.locator(f'g.bar[data-series="{series}"]').count() >= 3, series
    expect(page.locator("#checks")).to_contain_text("FA_gap")
    expect(page.locator("#events")).to_contain_text("forget_request.created")
    expect(page.locator("#receipts")).to_contain_text("model_weights")
    expect(page.locator("#events")).to_contain_text("erasure.receipt_issued")
    shots(page, "request", full_page=True)

    # Live progress: the pending request's job streams what the worker writes.
    page.goto(f"{world.url}/console/requests/{world.overdue_id}")
    expect(page.locator("#job-state")).to_have_text("queued")
    job_id = page.locator("#job").get_attribute("data-events").split("/")[3]
    set_progress(world, job_id, {"phase": "unlearning", "step": 3, "total": 10})
    expect(page.locator("#job-progress-text")).to_have_text("3 / 10", timeout=10_000)
    expect(page.locator("#job-phase")).to_have_text("unlearning")

    # A certificate, verified here with WebCrypto against the downloaded model file.
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(world.weights)
    page.goto(f"{world.url}/console/certificates")
    page.locator("#certificates a").first.click()
    expect(page.get_by_role("heading", name="Verify in your browser")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="download it").click()
    envelope = json.loads(Path(download.value.path()).read_text())
    page.set_input_files("#verify-model", str(model_file))
    page.get_by_role("button", name="Verify").click()
    verdict = page.locator("#verify-verdict")
    expect(verdict).to_have_text("Verified: the signature, the key and the file all check out.")
    expect(page.locator("#verify-result")).to_contain_text("Ed25519 signature by key")
    shots(page, "certificate", full_page=True)

    # A tampered certificate fails, and says why.
    forged = tmp_path / "tampered.json"
    forged.write_text(json.dumps(tampered(envelope)))
    page.set_input_files("#verify-cert", str(forged))
    page.get_by_role("button", name="Verify").click()
    expect(verdict).to_have_text("Verification failed.")
    expect(page.locator("#verify-result")).to_contain_text("does not match the payload")
    # The genuine certificate with another file fails on the digest.
    page.set_input_files("#verify-cert", [])
    other = tmp_path / "other.safetensors"
    other.write_bytes(world.weights[:-1] + bytes([world.weights[-1] ^ 1]))
    page.set_input_files("#verify-model", str(other))
    page.get_by_role("button", name="Verify").click()
    expect(verdict).to_have_text("Verification failed.")
    expect(page.locator("#verify-result")).to_contain_text("but the certificate is about")

    # The lineage, and which versions still hold a forgotten sample.
    page.goto(f"{world.url}/console/models")
    page.locator("#models a").first.click()
    graph = page.locator("svg.chart.lineage")
    expect(graph).to_be_visible()
    expect(graph.locator("g.node")).to_have_count(2)
    page.get_by_label("Sample ID").fill(str(world.forgotten_sample))
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#exposure tbody tr")).to_have_count(2)
    # The original trained on it but was purged; the new version forgot it: nothing holds it.
    expect(page.locator("#exposure tbody tr.exposed")).to_have_count(0)
    expect(page.locator('#exposure tr[data-version="1"]')).to_contain_text("bytes were destroyed")
    expect(page.locator('#exposure tr[data-version="2"]')).to_contain_text("no (forgotten)")
    expect(page.locator("#exposure-summary")).to_contain_text("erased from the manifest")
    expect(graph.locator('g.node[data-status="purged"]')).to_have_count(1)
    shots(page, "lineage", full_page=True)

    # The audit log: the chain verifies.
    page.goto(f"{world.url}/console/audit")
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator("#chain-result")).to_contain_text("The chain is intact")
    shots(page, "audit")

    # Another tenant's request answers exactly like a missing one.
    theirs = page.goto(f"{world.url}/console/requests/{world.other_request_id}")
    assert theirs is not None and theirs.status == 404
    their_text = page.locator("main").inner_text()
    missing = page.goto(f"{world.url}/console/requests/{'0' * 8}-0000-0000-0000-{'0' * 12}")
    assert missing is not None and missing.status == 404
    assert page.locator("main").inner_text() == their_text

    # Keyboard: the skip link is the first stop and lands on the content.
    page.goto(f"{world.url}/console/requests")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    # Sign out: the session ends and pages go back to the form.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto(f"{world.url}/console/requests")
    expect(page).to_have_url(f"{world.url}/console/sign-in")

    # At a phone's width the requests table scrolls inside its box, not the page.
    phone = browser.new_context(viewport={"width": 390, "height": 800})
    small = phone.new_page()
    small.on("request", lambda r: seen.append(r.url))
    small.goto(f"{world.url}/console/sign-in")
    small.get_by_label("API key").fill(world.acme.auditor)
    small.get_by_role("button", name="Sign in").click()
    width = small.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    shots(small, "requests-phone")
    phone.close()
    context.close()

    # The browser logs the two deliberate not-found pages; nothing else may fail (a CSP refusal,
    # a script error, a missing asset would all show up here).
    not_found = "the server responded with a status of 404"
    assert [p for p in problems if not_found not in p] == [], problems
    assert len(problems) == 2, problems
    foreign = [u for u in seen if not u.startswith(world.url + "/") and not u.startswith("data:")]
    assert foreign == [], foreign
    assert any(u.endswith("/console/static/console.js") for u in seen)


def test_screenshots_are_small() -> None:
    if not SCREENSHOTS.exists():
        pytest.skip("no screenshots committed yet")
    for png in SCREENSHOTS.glob("*.png"):
        assert png.stat().st_size < 400_000, png
