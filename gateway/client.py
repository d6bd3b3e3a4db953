"""``Client(url, token)``: the gateway from Python, with the API's own models as results.

It retries with back-off on 502/503/504 and on connection errors (a gateway restarting, a proxy in between),
and on 429 (a rate limit, a full backlog); where the answer has ``Retry-After``, it waits that long. It never
retries another 4xx: those are answers. Errors carry the server's detail. URL and token come from the arguments
(``token_file``: a file only its owner may read), else from HPCGW_URL / HPCGW_TOKEN (or HPCGW_TOKEN_FILE), else
from ~/.config/hpcgw/config.toml (``url = …``, ``token = …``). Never from a command line: every user of the
machine reads those (`ps`).
"""

from __future__ import annotations

import base64
import os
import shlex
import stat
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle
import httpx
from pydantic import BaseModel, TypeAdapter

from gateway.remote_function import RemoteFunctionJob
from gateway.schemas import (
    AlgorithmCreate,
    AlgorithmPublic,
    AlgorithmVersionCreate,
    JobBatchResult,
    JobCreate,
    JobList,
    JobPublic,
    LogTail,
    MetricsPublic,
    RerunRequest,
    SweepCreate,
    SweepPublic,
    TeamPublic,
    Verification,
)
from launchers.states import JobState

T = TypeVar("T")
CONFIG_FILE = Path("~/.config/hpcgw/config.toml")
RETRY_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 300.0  # a longer Retry-After is an answer: the caller sees the 429/503


class ClientError(RuntimeError):
    """The gateway refused the request (4xx/5xx), or could not be reached after the retries."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None, field: str | None = None):
        super().__init__(message)
        self.status_code, self.detail, self.field = status_code, detail, field


class ClientConfigError(ClientError):
    """No URL or token from arguments, environment or config file."""


def wait_healthy(url: str, timeout_s: float = 60.0, *, alive: Callable[[], bool] | None = None) -> None:
    """Until ``url``/healthz answers 200 (a gateway just started); ``alive`` says whether to keep waiting."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ClientError(f"the gateway at {url} exited before it answered /healthz")
        try:
            if httpx.get(f"{url.rstrip('/')}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ClientError(f"the gateway at {url} did not answer /healthz within {timeout_s:.0f} s")


MAX_TOKEN_FILE_BYTES = 4096


def read_token_file(path: Path) -> str:
    """The token in ``path``, if only its owner, this user, can read or change it (as ssh holds a private key):
    a token others can read is a token others have. Read through the descriptor that was checked, never a link."""
    try:
        fd = os.open(path.expanduser(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ClientConfigError(f"token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ClientConfigError(f"token file {path}: not a regular file")
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise ClientConfigError(
                f"token file {path}: must be yours and readable by you only (chmod 600 {shlex.quote(str(path))})"
            )
        token = handle.read(MAX_TOKEN_FILE_BYTES + 1).decode(errors="replace").strip()
    if not token or len(token) > MAX_TOKEN_FILE_BYTES:
        raise ClientConfigError(f"token file {path}: empty or too long")
    return token


def resolve(
    url: str | None, token: str | None, config_file: Path | None = None, *, token_file: Path | None = None
) -> tuple[str, str]:
    if token is None and token_file is None and os.environ.get("HPCGW_TOKEN_FILE"):
        token_file = Path(os.environ["HPCGW_TOKEN_FILE"])
    if token is None and token_file is not None:
        token = read_token_file(token_file)
    file_values: dict[str, Any] = {}
    path = (config_file or CONFIG_FILE).expanduser()
    if path.is_file():
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ClientConfigError(f"{path}: not valid TOML: {exc}") from None
    url = url or os.environ.get("HPCGW_URL") or file_values.get("url")
    token = token or os.environ.get("HPCGW_TOKEN") or file_values.get("token")
    if not url:
        raise ClientConfigError(f'no gateway URL: pass url=, set HPCGW_URL, or put url = "…" in {path}')
    if not token:
        raise ClientConfigError(
            f'no token: pass token=, set HPCGW_TOKEN or HPCGW_TOKEN_FILE, or put token = "…" in {path}'
        )
    return str(url).rstrip("/"), str(token)


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 8,
        backoff_s: float = 0.5,
        config_file: Path | None = None,
        token_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, token = resolve(url, token, config_file, token_file=token_file)
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, transport=transport, headers={"Authorization": f"Bearer {token}"}
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ClientError(f"{method} {self.url}{path}: gateway unreachable: {exc}") from exc
            else:
                wait = _retry_after(response)
                if (
                    response.status_code not in RETRY_STATUS
                    or attempt == self.retries
                    or (wait is not None and wait > MAX_RETRY_AFTER_S)
                ):
                    return _decode(method, path, response)
                if wait is not None:
                    time.sleep(wait)  # the server said when: no guessing, and no doubling on top of it
                    continue
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def _typed(self, model: type[T] | Any, method: str, path: str, **kw: Any) -> T:
        return TypeAdapter(model).validate_python(self._request(method, path, **kw))  # type: ignore[no-any-return]

    # --- jobs ----------------------------------------------------------------------------------------------

    def submit(self, request: JobCreate | dict[str, Any]) -> JobPublic:
        return self._typed(JobPublic, "POST", "/v1/jobs", json=_body(request))

    def submit_many(self, requests: Sequence[JobCreate | dict[str, Any]]) -> JobBatchResult:
        """Up to 1,000 jobs in one request (POST /v1/jobs/batch): each item answers one job, in order; a job
        refused (422, 429) is in ``items`` with its error, not raised."""
        return self._typed(JobBatchResult, "POST", "/v1/jobs/batch", json={"jobs": [_body(r) for r in requests]})

    def job(self, job_id: str) -> JobPublic:
        return self._typed(JobPublic, "GET", f"/v1/jobs/{job_id}")

    def jobs(
        self, *, team: str | None = None, state: JobState | str | None = None, offset: int = 0, limit: int = 100
    ) -> JobList:
        params = {
            k: v for k, v in {"team": team, "state": state, "offset": offset, "limit": limit}.items() if v is not None
        }
        return self._typed(JobList, "GET", "/v1/jobs", params=params)

    def cancel(self, job_id: str) -> JobPublic:
        return self._typed(JobPublic, "POST", f"/v1/jobs/{job_id}/cancel")

    def logs(self, job_id: str, *, rank: int | None = None, lines: int = 100) -> list[LogTail]:
        params: dict[str, Any] = {"lines": lines} | ({"rank": rank} if rank is not None else {})
        return self._typed(list[LogTail], "GET", f"/v1/jobs/{job_id}/logs", params=params)

    def metrics(self, job_id: str) -> MetricsPublic:
        return self._typed(MetricsPublic, "GET", f"/v1/jobs/{job_id}/metrics")

    def rerun(self, job_id: str, request: RerunRequest | None = None) -> JobPublic:
        body = request.model_dump(exclude_none=True) if request is not None else None
        return self._typed(JobPublic, "POST", f"/v1/jobs/{job_id}/rerun", json=body)

    def verification(self, job_id: str) -> Verification:
        return self._typed(Verification, "GET", f"/v1/jobs/{job_id}/verification")

    def render(self, request: JobCreate | dict[str, Any]) -> str:
        return str(self._request("POST", "/v1/jobs/render", json=_body(request))["script"])

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 3600.0,
        poll_s: float = 1.0,
        on_change: Callable[[JobPublic], None] | None = None,
    ) -> JobPublic:
        """Until the job ends; ``on_change`` sees every new state (and reason/queue position)."""
        deadline = time.monotonic() + timeout_s
        last: tuple[Any, ...] | None = None
        while True:
            job = self.job(job_id)
            view = (job.state, job.reason, job.position_in_queue)
            if view != last and on_change is not None:
                on_change(job)
            last = view
            if job.state.is_terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state.value} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    # --- functions -----------------------------------------------------------------------------------------

    def submit_function(
        self, function: Callable[..., Any], /, *args: Any, resources: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> RemoteFunctionJob:
        """``function(*args, **kwargs)`` on every rank of a job of the token's team, where the gateway allows it
        (``functions.enabled``). ``resources``: ``nodes``, ``tasks_per_node``, ``time_limit_min``, ``framework``,
        ``partition``, ``name``... (``FunctionCreate``'s fields)."""
        payload = base64.b64encode(cloudpickle.dumps((function, args, kwargs))).decode()
        body = {**(resources or {}), "payload": payload}
        return RemoteFunctionJob(self, self._typed(JobPublic, "POST", "/v1/functions", json=body))

    def outcome(self, job_id: str, rank: int = 0) -> bytes | None:
        """One rank's outcome, as the bytes it wrote (launchers.outcomes.load_outcome reads them); None while
        that rank has none."""
        try:
            return bytes(self._request("GET", f"/v1/jobs/{job_id}/outcome", params={"rank": rank}))
        except ClientError as exc:
            if exc.status_code == 404:
                return None
            raise

    # --- sweeps, algorithms, teams ---------------------------------------------------------------------------

    def submit_sweep(self, request: SweepCreate | dict[str, Any]) -> SweepPublic:
        return self._typed(SweepPublic, "POST", "/v1/sweeps", json=_body(request))

    def sweep(self, sweep_id: str, *, best: str | None = None) -> SweepPublic:
        return self._typed(SweepPublic, "GET", f"/v1/sweeps/{sweep_id}", params={"best": best} if best else None)

    def cancel_sweep(self, sweep_id: str) -> SweepPublic:
        return self._typed(SweepPublic, "POST", f"/v1/sweeps/{sweep_id}/cancel")

    def retry_failed(self, sweep_id: str) -> SweepPublic:
        return self._typed(SweepPublic, "POST", f"/v1/sweeps/{sweep_id}/retry-failed")

    def algorithms(self) -> list[AlgorithmPublic]:
        return self._typed(list[AlgorithmPublic], "GET", "/v1/algorithms")

    def create_algorithm(self, request: AlgorithmCreate | dict[str, Any]) -> AlgorithmPublic:
        return self._typed(AlgorithmPublic, "POST", "/v1/algorithms", json=_body(request))

    def add_version(self, name: str, request: AlgorithmVersionCreate | dict[str, Any]) -> AlgorithmPublic:
        return self._typed(AlgorithmPublic, "POST", f"/v1/algorithms/{name}/versions", json=_body(request))

    def reregister(self, name: str, version: str) -> AlgorithmPublic:
        """Record the digest of the version's image file as it is now: how a rebuilt image may run."""
        return self._typed(AlgorithmPublic, "POST", f"/v1/algorithms/{name}/versions/{version}/digest")

    def teams(self) -> list[TeamPublic]:
        return self._typed(list[TeamPublic], "GET", "/v1/teams")


def _body(request: BaseModel | dict[str, Any]) -> Any:
    return request.model_dump(mode="json", exclude_none=True) if isinstance(request, BaseModel) else request


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the delay form; an HTTP date is taken as no advice)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _decode(method: str, path: str, response: httpx.Response) -> Any:
    if response.is_success:
        if response.headers.get("content-type", "").startswith("application/octet-stream"):
            return response.content
        return response.json()
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text}
    detail = body.get("detail") if isinstance(body, dict) else body
    text = (
        detail
        if isinstance(detail, str)
        else "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
        if isinstance(detail, list)
        else str(detail)
    )
    raise ClientError(
        f"{method} {path}: {response.status_code} {text}",
        response.status_code,
        detail,
        body.get("field") if isinstance(body, dict) else None,
    )
