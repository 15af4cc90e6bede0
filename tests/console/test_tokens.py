"""The console's session tokens on their own: what a forged, altered or expired cookie gets."""

from __future__ import annotations

import time

import pytest

from app.console import sessions

SECRET = "s" * 40


def test_a_token_reads_back_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    raw, token = sessions.issue(SECRET, "0123456789abcdef", 60)
    assert sessions.read(SECRET, raw) == token
    later = time.time() + 61
    monkeypatch.setattr(sessions.time, "time", lambda: later)
    assert sessions.read(SECRET, raw) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-2] + ("AA" if not raw.endswith("AA") else "BB"),  # another MAC
        lambda raw: "e30" + raw[raw.index(".") :],  # another body under the same MAC
        lambda raw: raw + "." + raw,
        lambda raw: raw * 4,
        lambda raw: "",
    ],
    ids=["mac", "body", "shape", "length", "empty"],
)
def test_an_altered_token_is_refused(mangle: object) -> None:
    raw, _ = sessions.issue(SECRET, "0123456789abcdef", 60)
    assert callable(mangle)
    assert sessions.read(SECRET, mangle(raw)) is None


def test_a_token_of_another_service_is_refused() -> None:
    raw, _ = sessions.issue("t" * 40, "0123456789abcdef", 60)
    assert sessions.read(SECRET, raw) is None


def test_the_form_token_is_bound_to_the_session() -> None:
    assert sessions.csrf_token(SECRET, "a") != sessions.csrf_token(SECRET, "b")
    assert sessions.csrf_token(SECRET, "a") == sessions.csrf_token(SECRET, "a")
