"""Console sign-in, sessions and page rules over plain HTTP (the browser test drives the rest):
the cookie's flags, CSRF on every form, sign-out that ends the session on the server, the API's
role and tenant rules, and the security headers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date, timedelta

import httpx
import pytest

from tests.console.conftest import World


@pytest.fixture()
def browserless(world: World) -> Iterator[Callable[[], httpx.Client]]:
    """HTTP clients with their own cookie jars, closed after the test."""
    opened: list[httpx.Client] = []

    def new() -> httpx.Client:
        opened.append(httpx.Client(base_url=world.url, follow_redirects=False))
        return opened[-1]

    yield new
    for c in opened:
        c.close()


def signed_in(world: World, key: str, new: Callable[[], httpx.Client]) -> httpx.Client:
    client = new()
    form = client.get("/console/sign-in")
    assert form.status_code == 200
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    res = client.post("/console/sign-in", data={"api_key": key, "nonce": nonce.group(1)})
    assert res.status_code == 303, res.text
    assert res.headers["location"] == "/console/requests"
    return client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_key(
    world: World, browserless: Callable[[], httpx.Client]
) -> None:
    client = signed_in(world, world.acme.auditor, browserless)
    cookie = next(h for h in client.cookies.jar if h.name == "lethe_console")
    assert cookie.path == "/console"
    assert cookie.expires is not None
    page = client.get("/console/requests")
    assert page.status_code == 200
    assert world.acme.auditor not in page.text
    assert world.acme.auditor.split("_")[2] not in client.cookies["lethe_console"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"


def test_set_cookie_flags(world: World, browserless: Callable[[], httpx.Client]) -> None:
    client = browserless()
    form = client.get("/console/sign-in")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    res = client.post(
        "/console/sign-in",
        data={"api_key": world.acme.member, "nonce": nonce.group(1)},
        follow_redirects=False,
    )
    header = next(
        v for k, v in res.headers.multi_items() if k == "set-cookie" and "lethe_console=" in v
    )
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "max-age=" in lowered
    # LETHE_ENVIRONMENT=test serves plain HTTP; production sets Secure (see _cookie_secure).
    assert "path=/console" in lowered


def test_a_wrong_key_or_a_forged_form_does_not_sign_in(
    world: World, browserless: Callable[[], httpx.Client]
) -> None:
    client = browserless()
    form = client.get("/console/sign-in")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    bad = client.post(
        "/console/sign-in", data={"api_key": "lethe_0000000000000000_x", "nonce": nonce.group(1)}
    )
    assert bad.status_code == 401
    assert "not valid" in bad.text
    # A cross-site form: no matching pre-session cookie.
    forged = browserless().post(
        "/console/sign-in", data={"api_key": world.acme.admin, "nonce": nonce.group(1)}
    )
    assert forged.status_code == 403
    assert "lethe_console=" not in forged.headers.get("set-cookie", "")


def test_pages_need_a_session(world: World, browserless: Callable[[], httpx.Client]) -> None:
    res = browserless().get("/console/requests")
    assert res.status_code == 303
    assert res.headers["location"] == "/console/sign-in"
    forger = browserless()
    forger.cookies.set("lethe_console", "eyJzaWQiOiJ4In0.AAAA", path="/console")
    forged = forger.get("/console/requests")
    assert forged.status_code == 303


def test_the_audit_log_follows_the_api_roles(
    world: World, browserless: Callable[[], httpx.Client]
) -> None:
    member = signed_in(world, world.acme.member, browserless)
    assert member.get("/console/audit").status_code == 403
    request = member.get(f"/console/requests/{world.answered_id}")
    assert request.status_code == 200
    assert "needs the auditor or admin role" in request.text
    auditor = signed_in(world, world.acme.auditor, browserless)
    page = auditor.get("/console/audit", params={"verify": "1"})
    assert page.status_code == 200
    assert "The chain is intact" in page.text
    assert "console.signed_in" in page.text


def test_sign_out_ends_the_session_on_the_server(
    world: World, browserless: Callable[[], httpx.Client]
) -> None:
    client = signed_in(world, world.acme.auditor, browserless)
    stolen = client.cookies["lethe_console"]
    page = client.get("/console/requests")
    # A sign-out without the session's form token is refused.
    assert client.post("/console/sign-out", data={"csrf": "nope"}).status_code == 403
    out = client.post("/console/sign-out", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert client.get("/console/requests").status_code == 303
    thief = browserless()
    thief.cookies.set("lethe_console", stolen, path="/console")
    replay = thief.get("/console/requests")
    assert replay.status_code == 303


def test_another_tenants_request_is_the_same_not_found_page(
    world: World, browserless: Callable[[], httpx.Client]
) -> None:
    client = signed_in(world, world.acme.auditor, browserless)
    theirs = client.get(f"/console/requests/{world.other_request_id}")
    missing = client.get("/console/requests/00000000-0000-0000-0000-000000000000")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text == missing.text
    own = client.get(f"/console/requests/{world.answered_id}")
    assert own.status_code == 200


def test_filters_narrow_the_list_and_bad_ones_get_a_page(
    world: World, browserless: Callable[[], httpx.Client]
) -> None:
    client = signed_in(world, world.acme.auditor, browserless)

    def listed(**params: str) -> list[str]:
        page = client.get("/console/requests", params=params)
        assert page.status_code == 200, page.text
        return re.findall(r'data-request-id="([^"]+)"', page.text)

    everything = listed()
    assert everything[0] == world.overdue_id and world.answered_id in everything
    assert listed(status="completed") == [world.answered_id]
    assert listed(model=world.original_id) == everything
    # Received 40 days ago: outside a window of the last week, inside one that reaches back.
    week_ago = (date.today() - timedelta(days=7)).isoformat()
    assert world.overdue_id not in listed(received_from=week_ago)
    assert listed(received_to=week_ago) == [world.overdue_id]
    for bad in ({"status": "nope"}, {"received_from": "yesterday"}):
        page = client.get("/console/requests", params=bad)
        assert page.status_code == 422
        assert page.headers["content-type"].startswith("text/html")
    assert client.get("/console/requests", params={"model": "0" * 36}).status_code == 404


def test_the_cookie_is_secure_outside_development_and_tests() -> None:
    from app.console.endpoints import _cookie_secure
    from app.core.config import Environment, Settings

    production = Settings(environment=Environment.production, secret_key="p" * 40)  # type: ignore[arg-type]
    assert _cookie_secure(production)
    assert not _cookie_secure(Settings(environment=Environment.development))
