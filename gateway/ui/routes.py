"""/ui: the pages. Each reads the database only (never Slurm) and shows only what the cookie's session may see:
another team's job or sweep is "not found", as in the API."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import ConfigDep, ReleasingRoute, SessionDep, WorkerDep
from gateway.errors import GatewayError
from gateway.site.auth import Principal
from gateway.submit.job_requests import get_visible_job, request_cancel
from gateway.submit.sweeps import get_visible_sweep
from gateway.ui import queries
from gateway.ui.session import (
    check_token,
    close_session,
    forget,
    form_token,
    form_token_ok,
    open_session,
    principal_of,
    remember,
)

router = APIRouter(prefix="/ui", route_class=ReleasingRoute, include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
PLOTLY_JS = resources.files("plotly") / "package_data" / "plotly.min.js"
MAX_FORM_BYTES = 4096


class LoginRequired(Exception):  # noqa: N818 - a redirect, not an error
    """No cookie, or one whose token the gateway does not know: the login page."""


def _who(request: Request, config: Any, session: Session) -> Principal:
    principal = principal_of(request, config, session)
    if principal is None:
        raise LoginRequired
    return principal


def _page(request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any) -> Response:
    context |= {"principal": principal, "form_token": form_token(request) if principal else ""}
    return templates.TemplateResponse(request, name, context, status_code=status_code)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


def install(app: FastAPI) -> None:
    """The router, and the login page for every /ui request without a valid cookie."""
    app.include_router(router)
    app.add_exception_handler(LoginRequired, _to_login)


async def _to_login(request: Request, _exc: Exception) -> Response:
    return RedirectResponse(f"/ui/login?next={request.url.path}", status_code=303)


@router.get("/static/plotly.min.js")
def plotly_js() -> Response:
    """Plotly's own bundle, from the plotly wheel installed with the server: no build step, no CDN."""
    return FileResponse(str(PLOTLY_JS), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, config: ConfigDep, next: str = "/ui") -> Response:
    return _page(request, "login.html", None, next=_local(next), error=None)


@router.post("/login")
async def login(request: Request, config: ConfigDep, session: SessionDep) -> Response:
    form = await _form(request)
    principal = check_token(config, form.get("token", ""))
    target = _local(form.get("next", "/ui"))
    if principal is None:
        return _page(request, "login.html", None, 401, next=target, error="The gateway does not know this token.")
    response = RedirectResponse(target, status_code=303)
    remember(response, request, await run_in_threadpool(open_session, session, principal, form["token"]))
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    if form_token_ok(request, (await _form(request)).get("form_token")):
        await run_in_threadpool(close_session, session, request)
        forget(response)
    return response


@router.get("", response_class=HTMLResponse)
def home(request: Request, config: ConfigDep, session: SessionDep) -> Response:
    principal = _who(request, config, session)
    if principal.admin:
        return RedirectResponse("/ui/admin", status_code=303)
    return RedirectResponse(f"/ui/teams/{principal.team}", status_code=303)


@router.get("/teams/{team}", response_class=HTMLResponse)
def team_page(request: Request, team: str, session: SessionDep, config: ConfigDep) -> Response:
    principal = _who(request, config, session)
    if team not in config.teams or not principal.can_see(team):
        return _page(request, "missing.html", principal, 404, what=f"team {team}")
    return _page(request, "team.html", principal, **queries.team_page(session, config, team))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, session: SessionDep, config: ConfigDep) -> Response:
    principal = _who(request, config, session)
    try:
        job = get_visible_job(session, principal, job_id)
    except GatewayError:
        return _page(request, "missing.html", principal, 404, what=f"job {job_id}")
    return _page(request, "job.html", principal, **queries.job_page(session, job, config.job_root))


@router.get("/jobs/{job_id}/curves")
def job_curves(request: Request, job_id: str, session: SessionDep, config: ConfigDep) -> Response:
    """What the job page polls while the job runs: the epochs so far and the state."""
    principal = _who(request, config, session)
    try:
        job = get_visible_job(session, principal, job_id)
    except GatewayError:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return JSONResponse(queries.curves(job))


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str, session: SessionDep, config: ConfigDep, worker: WorkerDep) -> Response:
    principal = _who(request, config, session)
    if not form_token_ok(request, (await _form(request)).get("form_token")):
        return _page(request, "missing.html", principal, 403, what="this form (reload the page)")
    try:
        job = get_visible_job(session, principal, job_id)
    except GatewayError:
        return _page(request, "missing.html", principal, 404, what=f"job {job_id}")
    if not job.state.is_terminal:
        request_cancel(session, job, principal.user)
        session.commit()
        worker.wake()
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(
    request: Request, sweep_id: str, session: SessionDep, config: ConfigDep, metric: str = "accuracy", mode: str = "max"
) -> Response:
    principal = _who(request, config, session)
    mode = mode if mode in ("max", "min") else "max"
    metric = metric if 0 < len(metric) <= 64 and ":" not in metric else "accuracy"
    try:
        sweep = get_visible_sweep(session, principal, sweep_id)
    except GatewayError:
        return _page(request, "missing.html", principal, 404, what=f"sweep {sweep_id}")
    return _page(
        request, "sweep.html", principal, metric=metric, mode=mode, **queries.sweep_page(session, sweep, metric, mode)
    )


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, session: SessionDep, config: ConfigDep, worker: WorkerDep) -> Response:
    principal = _who(request, config, session)
    if not principal.admin:
        return _page(request, "missing.html", principal, 404, what="the admin view")
    health = worker.health(detailed=True)
    stats = worker.stats
    return _page(request, "admin.html", principal, health=health, stats=stats, **queries.admin_page(session, config))


def _local(target: str) -> str:
    """Only a path of this dashboard: a login link cannot send the browser elsewhere."""
    return target if target.startswith("/ui") and "//" not in target and "\\" not in target else "/ui"
