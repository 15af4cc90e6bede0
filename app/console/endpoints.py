"""The console's pages: sign-in and sign-out, requests, a request, models, certificates, audit.

Pages are rendered on the server (Jinja2) and read through the domains' services; the one
script (``static/console.js``) only localises dates, follows a job's live progress, and verifies
certificates in the browser. Every page enforces the API's tenant and role rules: the session
resolves to the same :class:`~app.tenants.dependencies.Principal` an API key does.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.audit import service as audit
from app.audit.endpoints import list_events
from app.console import repository, service, sessions
from app.core.config import Environment, Settings
from app.core.deps import SessionDep, SettingsDep, StoreDep
from app.core.errors import Forbidden, InvalidInput, LetheError, NotFound, Unauthorized
from app.forget_requests.schemas import ForgetRequestOut
from app.jobs import endpoints as jobs_endpoints
from app.models.forget_request import OPEN_STATUSES, RequestStatus
from app.tenants import service as tenants
from app.tenants.dependencies import Principal
from app.tenants.schemas import Role

HERE = Path(__file__).parent
STATIC = "/console/static"

# No inline script anywhere (the one script is a file), nothing from another origin, no
# framing: a page cannot be made to run or load anything the API does not serve.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on a form
    # POST, and the Origin check below could not tell our forms from anyone else's.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str:
    v = _utc(value)
    return v.strftime("%Y-%m-%dT%H:%M:%SZ") if v else ""


def _utc_text(value: datetime | None) -> str:
    v = _utc(value)
    return v.strftime("%Y-%m-%d %H:%M UTC") if v else "—"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["iso"] = _iso
templates.env.filters["utc"] = _utc_text
templates.env.globals["STATIC"] = STATIC


class SignInNeeded(Exception):
    """No valid console session: the page answers with the sign-in form."""


@dataclass(frozen=True)
class ConsoleAuth:
    principal: Principal
    session_id: str
    expires_at: datetime
    csrf: str


def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status: int = 200,
    auth: ConsoleAuth | None = None,
) -> HTMLResponse:
    page = templates.TemplateResponse(request, name, {"auth": auth, **context}, status_code=status)
    _headers(page)
    return page


def _error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    auth = getattr(request.state, "console_auth", None)
    return render(
        request, "error.html", {"status": status, "title": title, "detail": detail}, status, auth
    )


def _sign_in_redirect() -> Response:
    return _headers(RedirectResponse("/console/sign-in", status_code=303))


class ConsoleRoute(APIRoute):
    """Errors as HTML pages (the API's are problem+json): a missing session goes to the sign-in
    form, and a not-found page never says whether the ID exists in another tenant."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                return _sign_in_redirect()
            except NotFound:
                return _error_page(
                    request, 404, "Not found", "Nothing with this ID exists in your tenant."
                )
            except Forbidden as exc:
                return _error_page(request, 403, "Not allowed for your role", exc.detail)
            except (InvalidInput, RequestValidationError) as exc:
                detail = exc.detail if isinstance(exc, InvalidInput) else "Check the filters."
                return _error_page(request, 422, "The request is not valid", detail)
            except LetheError as exc:
                if exc.status >= 500:
                    raise
                return _error_page(request, exc.status, exc.title, exc.detail)

        return guarded


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def console_auth(request: Request, session: SessionDep, settings: SettingsDep) -> ConsoleAuth:
    secret = settings.secret_key.get_secret_value()
    token = sessions.read(secret, request.cookies.get(sessions.COOKIE))
    if token is None:
        raise SignInNeeded
    principal = service.principal_of(session, token.key_id, token.session_id)
    if principal is None:
        raise SignInNeeded
    auth = ConsoleAuth(
        principal,
        token.session_id,
        datetime.fromtimestamp(token.expires_at, UTC),
        sessions.csrf_token(secret, token.session_id),
    )
    request.state.console_auth = auth
    return auth


Auth = Annotated[ConsoleAuth, Depends(console_auth)]


def _require_audit_role(auth: ConsoleAuth) -> None:
    if auth.principal.role not in service.AUDIT_ROLES:
        raise Forbidden(
            f"The audit log needs the auditor or admin role; this key is {auth.principal.role}."
        )


def _same_origin(request: Request) -> bool:
    """A browser sends Origin on every POST; one from elsewhere is a cross-site form."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def _cookie_secure(settings: Settings) -> bool:
    # Plain HTTP only on a developer's machine (the demo) and in tests; everywhere else the
    # session cookie never travels without TLS.
    return settings.environment is not Environment.development and (
        settings.environment is not Environment.test
    )


# -- sign-in ----------------------------------------------------------------------------------


@router.get("")
def console_home() -> Response:
    return _headers(RedirectResponse("/console/requests", status_code=303))


def _sign_in_form(
    request: Request, settings: Settings, error: str | None = None, status: int = 200
) -> Response:
    nonce = request.cookies.get(sessions.SIGN_IN_COOKIE) or secrets.token_urlsafe(24)
    page = render(request, "sign_in.html", {"nonce": nonce, "error": error}, status)
    page.set_cookie(
        sessions.SIGN_IN_COOKIE,
        nonce,
        max_age=3600,
        path=sessions.PATH,
        httponly=True,
        secure=_cookie_secure(settings),
        samesite="strict",
    )
    return page


@router.get("/sign-in")
def sign_in_page(request: Request, settings: SettingsDep) -> Response:
    return _sign_in_form(request, settings)


@router.post("/sign-in")
def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=300)],
    nonce: Annotated[str, Form(max_length=100)],
) -> Response:
    expected = request.cookies.get(sessions.SIGN_IN_COOKIE) or ""
    if not _same_origin(request) or not expected or not hmac.compare_digest(nonce, expected):
        return _sign_in_form(
            request, settings, "The form expired or came from another site; try again.", 403
        )
    try:
        key = tenants.authenticate(session, api_key.strip())
    except Unauthorized as exc:
        return _sign_in_form(request, settings, exc.detail, 401)
    raw, token = sessions.issue(
        settings.secret_key.get_secret_value(), key.id, sessions.LIFETIME_SECONDS
    )
    principal = Principal(key.tenant_id, key.id, Role(key.role))
    service.record_session(
        session,
        principal,
        token.session_id,
        repository.SIGNED_IN,
        expires_at=datetime.fromtimestamp(token.expires_at, UTC).isoformat(),
    )
    response = _headers(RedirectResponse("/console/requests", status_code=303))
    response.set_cookie(
        sessions.COOKIE,
        raw,
        max_age=sessions.LIFETIME_SECONDS,
        path=sessions.PATH,
        httponly=True,
        secure=_cookie_secure(settings),
        samesite="strict",
    )
    response.delete_cookie(sessions.SIGN_IN_COOKIE, path=sessions.PATH)
    return response


@router.post("/sign-out")
def sign_out(
    request: Request,
    auth: Auth,
    session: SessionDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=100)],
) -> Response:
    if not _same_origin(request) or not hmac.compare_digest(csrf, auth.csrf):
        raise Forbidden("The sign-out form did not come from this console.")
    service.record_session(session, auth.principal, auth.session_id, repository.SIGNED_OUT)
    response = _headers(RedirectResponse("/console/sign-in?signed_out=1", status_code=303))
    response.delete_cookie(
        sessions.COOKIE,
        path=sessions.PATH,
        httponly=True,
        secure=_cookie_secure(settings),
        samesite="strict",
    )
    return response


# -- requests ---------------------------------------------------------------------------------


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _day(value: str | None, field: str) -> datetime | None:
    value = _blank(value)
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(0), UTC)
    except ValueError:
        raise InvalidInput(f"{field} must be a date (YYYY-MM-DD).") from None


Filter = Annotated[str | None, Query(max_length=200)]


@router.get("/requests")
def requests_page(
    request: Request,
    auth: Auth,
    session: SessionDep,
    status: Filter = None,
    subject: Filter = None,
    model: Filter = None,
    received_from: Filter = None,
    received_to: Filter = None,
) -> Response:
    status = _blank(status)
    if status is not None and status not in {s.value for s in RequestStatus}:
        raise InvalidInput(f"Unknown status {status!r}.")
    to_day = _day(received_to, "received_to")
    filters = service.RequestFilters(
        status=status,
        subject_ref=_blank(subject),
        model_id=_blank(model),
        received_from=_day(received_from, "received_from"),
        # The "to" day is inclusive.
        received_to=to_day + timedelta(days=1) if to_day else None,
    )
    page = service.requests_page(session, auth.principal.tenant_id, filters)
    return render(
        request,
        "requests.html",
        {
            "page": page,
            "statuses": [s.value for s in RequestStatus],
            "lineages": service.lineage_choices(session, auth.principal.tenant_id),
            "form": {
                "status": status or "",
                "subject": _blank(subject) or "",
                "model": _blank(model) or "",
                "received_from": _blank(received_from) or "",
                "received_to": _blank(received_to) or "",
            },
            "nav": "requests",
        },
        auth=auth,
    )


def _clock(fr: ForgetRequestOut) -> str:
    if fr.overdue:
        return "overdue"
    return "open" if fr.status in OPEN_STATUSES else "answered"


def _days(fr: ForgetRequestOut) -> str:
    """How the clock stands, in days, for a person to read at a glance."""
    if fr.status not in OPEN_STATUSES:
        return ""
    due = _utc(fr.due_at)
    assert due is not None
    days = (due - datetime.now(UTC)).total_seconds() / 86400
    if days < 0:
        return f"{-days:.0f} day(s) late" if days <= -1 else "due today"
    return f"in {days:.0f} day(s)" if days >= 1 else "due today"


templates.env.globals["clock"] = _clock
templates.env.globals["days"] = _days

RequestId = Annotated[str, PathParam(max_length=64)]


@router.get("/requests/{request_id}")
def request_page(
    request: Request, request_id: RequestId, auth: Auth, session: SessionDep
) -> Response:
    detail = service.request_detail(session, auth.principal, request_id)
    return render(request, "request.html", {"d": detail, "nav": "requests"}, auth=auth)


@router.get("/jobs/{job_id}/events")
async def job_events(
    job_id: RequestId,
    request: Request,
    auth: Auth,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> Response:
    """The API's own job event stream, authorised by the console session (an EventSource
    cannot send an Authorization header, and the key never reaches the browser)."""
    response = await jobs_endpoints.job_events(job_id, request, auth.principal, last_event_id)
    return _headers(response)


# -- models -----------------------------------------------------------------------------------


@router.get("/models")
def models_page(request: Request, auth: Auth, session: SessionDep) -> Response:
    originals = service.lineage_choices(session, auth.principal.tenant_id)
    return render(request, "models.html", {"originals": originals, "nav": "models"}, auth=auth)


@router.get("/models/{model_id}")
def model_page(
    request: Request,
    model_id: RequestId,
    auth: Auth,
    session: SessionDep,
    store: StoreDep,
    sample: Annotated[str | None, Query(max_length=24)] = None,
) -> Response:
    raw = _blank(sample)
    sample_id = None
    if raw is not None:
        try:
            sample_id = int(raw)
        except ValueError:
            raise InvalidInput("A sample ID is an integer.") from None
        if not -(2**63) <= sample_id < 2**63:
            raise InvalidInput("A sample ID is a 64-bit integer.")
    detail = service.model_detail(session, store, auth.principal.tenant_id, model_id, sample_id)
    return render(
        request, "model.html", {"d": detail, "sample": raw or "", "nav": "models"}, auth=auth
    )


# -- certificates -----------------------------------------------------------------------------


@router.get("/certificates")
def certificates_page(request: Request, auth: Auth, session: SessionDep) -> Response:
    rows = service.certificates_page(session, auth.principal.tenant_id)
    return render(request, "certificates.html", {"rows": rows, "nav": "certificates"}, auth=auth)


@router.get("/certificates/{model_id}")
def certificate_page(
    request: Request, model_id: RequestId, auth: Auth, session: SessionDep
) -> Response:
    detail = service.certificate_detail(session, auth.principal, model_id)
    return render(request, "certificate.html", {"d": detail, "nav": "certificates"}, auth=auth)


@router.get("/certificates/{model_id}/envelope.json")
def certificate_file(model_id: RequestId, auth: Auth, session: SessionDep) -> Response:
    detail = service.certificate_detail(session, auth.principal, model_id)
    response = JSONResponse(
        detail.certificate.envelope,
        headers={
            "Content-Disposition": f'attachment; filename="certificate-{detail.model.id}.json"'
        },
    )
    return _headers(response)


# -- audit ------------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(
    request: Request,
    auth: Auth,
    session: SessionDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    since: Filter = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    verify: Annotated[str | None, Query(max_length=4)] = None,
) -> Response:
    _require_audit_role(auth)
    events = list_events(
        auth.principal,
        session,
        cursor=_blank(cursor),
        limit=100,
        action=_blank(action),
        subject_id=_blank(subject),
        actor=_blank(actor),
        since=_day(since, "since"),
    )
    chain = audit.verify(session, auth.principal.tenant_id) if verify else None
    form = {
        "action": _blank(action) or "",
        "subject": _blank(subject) or "",
        "actor": _blank(actor) or "",
        "since": _blank(since) or "",
    }
    return render(
        request,
        "audit.html",
        {"events": events, "chain": chain, "form": form, "nav": "audit"},
        auth=auth,
    )


def install_console(app: FastAPI) -> None:
    """Mount the console's files (served from the installed package: no CDN) and its pages."""
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(router)
