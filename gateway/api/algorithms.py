"""/v1/algorithms: the self-service registry. A new version changes what later requests run; jobs keep theirs.

An algorithm belongs to a team: only that team's jobs resolve it, and only that team adds versions to it, so a
version one team adds never runs as another team's users. An admin may publish one for every team (its team is
then PUBLISHED), whose versions only admins add. A ``local_command`` runs outside any image, so it is an admin's to
register, and only where the site turns it on (``[algorithms] local_commands``).

A version's image is pinned by the SHA-256 recorded when it was registered: with runtime apptainer a submission
whose image file no longer matches is refused (gateway.submit.images). A version is never silently changed, so a
new file at the same path runs only once its team (or an admin) re-registers the version:
``POST …/versions/{version}/digest``.
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import APIRouter, Path, status
from sqlmodel import Session, col, select

from gateway.api.deps import ConfigDep, NamePath, PrincipalDep, ReleasingRoute, SessionDep
from gateway.api.problems import AUTHENTICATED, BODY, declare
from gateway.config import GatewayConfig
from gateway.errors import ConflictError, ForbiddenError, NotFoundError
from gateway.schemas import AlgorithmCreate, AlgorithmPublic, AlgorithmVersionCreate, AlgorithmVersionPublic
from gateway.site.auth import Principal
from gateway.store.models import PUBLISHED, Algorithm, AlgorithmVersion
from gateway.submit.images import image_digest
from gateway.submit.job_requests import resolve_team
from launchers.spec import Framework

log = logging.getLogger(__name__)
VersionPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="the algorithm's version")]
router = APIRouter(prefix="/v1/algorithms", tags=["algorithms"], route_class=ReleasingRoute)


def _public(session: Session, algorithm: Algorithm) -> AlgorithmPublic:
    versions = session.exec(
        select(AlgorithmVersion).where(AlgorithmVersion.algorithm == algorithm.name).order_by(col(AlgorithmVersion.id))
    ).all()
    return AlgorithmPublic(
        name=algorithm.name,
        team=None if algorithm.team == PUBLISHED else algorithm.team,
        shared=algorithm.team == PUBLISHED,
        description=algorithm.description,
        current_version=algorithm.current_version,
        versions=[
            AlgorithmVersionPublic(
                version=v.version,
                image=v.image,
                image_digest=v.image_digest,
                command=v.command,
                local_command=v.local_command,
                framework=cast(Framework, v.framework),
                created_at=v.created_at,
            )
            for v in versions
        ],
    )


def _add_version(
    session: Session, config: GatewayConfig, principal: Principal, name: str, body: AlgorithmVersionCreate
) -> None:
    if body.local_command is not None:
        _check_local_command(config, principal)
    session.add(
        AlgorithmVersion(
            algorithm=name,
            version=body.version,
            image=body.image,
            image_digest=image_digest(config, body.image),
            command=body.command,
            local_command=body.local_command,
            framework=body.framework,
        )
    )


@router.post(
    "",
    response_model=AlgorithmPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(*AUTHENTICATED, 403, 409, *BODY),
)
def create_algorithm(
    body: AlgorithmCreate, session: SessionDep, config: ConfigDep, principal: PrincipalDep
) -> AlgorithmPublic:
    """An algorithm of the caller's team (an admin names one), or with ``shared`` (admins only) every team's."""
    if body.shared and not principal.admin:
        raise ForbiddenError("only an admin token may publish an algorithm for every team (shared)")
    team = PUBLISHED if body.shared else resolve_team(config, principal, body.team)[0]
    if session.get(Algorithm, body.name) is not None:
        raise ConflictError(f"algorithm {body.name!r} exists; add a version instead")
    algorithm = Algorithm(name=body.name, team=team, description=body.description, current_version=body.version)
    session.add(algorithm)
    session.flush()
    _add_version(session, config, principal, body.name, body)
    session.commit()
    return _public(session, algorithm)


@router.post(
    "/{name}/versions",
    response_model=AlgorithmPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(*AUTHENTICATED, 403, 404, 409, *BODY),
)
def add_version(
    name: NamePath, body: AlgorithmVersionCreate, session: SessionDep, config: ConfigDep, principal: PrincipalDep
) -> AlgorithmPublic:
    """The team's own algorithm, or (admins only) a published one; another team's is not found."""
    algorithm = _maintained(session, principal, name)
    exists = session.exec(
        select(AlgorithmVersion).where(AlgorithmVersion.algorithm == name, AlgorithmVersion.version == body.version)
    ).first()
    if exists is not None:
        raise ConflictError(
            f"algorithm {name!r} already has version {body.version!r}: a version never changes; add another, or "
            f"re-register this one's image file (POST /v1/algorithms/{name}/versions/{body.version}/digest)"
        )
    _add_version(session, config, principal, name, body)
    algorithm.current_version = body.version
    session.add(algorithm)
    session.commit()
    return _public(session, algorithm)


@router.post(
    "/{name}/versions/{version}/digest",
    response_model=AlgorithmPublic,
    responses=declare(*AUTHENTICATED, 403, 404),
)
def rerecord_digest(
    name: NamePath, version: VersionPath, session: SessionDep, config: ConfigDep, principal: PrincipalDep
) -> AlgorithmPublic:
    """Re-register a version's image: hash its file now and record that digest, the one way a changed image file
    may run (a submission whose file does not match the recorded digest is refused). Allowed to whoever may add
    the algorithm's versions: its team, or an admin (only an admin for a published one). Jobs already accepted
    keep the digest they were accepted with; one whose file changed since fails at dispatch instead of running
    other bytes. No body: the image's path, command and framework stay the version's."""
    algorithm = _maintained(session, principal, name)
    found = session.exec(
        select(AlgorithmVersion).where(AlgorithmVersion.algorithm == name, AlgorithmVersion.version == version)
    ).first()
    if found is None:
        raise NotFoundError(f"algorithm {name!r} has no version {version!r}")
    digest = image_digest(config, found.image)
    if digest != found.image_digest:
        log.info(
            "algorithm %s version %s re-registered by %s: image %s %s -> %s",
            name, version, principal.user, found.image, found.image_digest, digest,
        )  # fmt: skip
        found.image_digest = digest
        session.add(found)
        session.commit()
    return _public(session, algorithm)


@router.post("/{name}/publish", response_model=AlgorithmPublic, responses=declare(*AUTHENTICATED, 403, 404))
def publish(name: NamePath, session: SessionDep, principal: PrincipalDep) -> AlgorithmPublic:
    """An admin's: a team's algorithm becomes every team's (its versions are then admins' to add). How a registry
    from before algorithms were scoped gives back to other teams what they ran."""
    if not principal.admin:
        raise ForbiddenError("only an admin token may publish an algorithm for every team")
    algorithm = session.get(Algorithm, name)
    if algorithm is None:
        raise NotFoundError(f"algorithm {name!r} not found")
    algorithm.team = PUBLISHED
    session.add(algorithm)
    session.commit()
    return _public(session, algorithm)


@router.get("", response_model=list[AlgorithmPublic], responses=declare(401, 503))
def list_algorithms(session: SessionDep, principal: PrincipalDep) -> list[AlgorithmPublic]:
    """What the caller's team may run: its own algorithms and the published ones (an admin sees every one)."""
    query = select(Algorithm).order_by(col(Algorithm.name))
    if not principal.admin:
        query = query.where(col(Algorithm.team).in_([principal.team or PUBLISHED, PUBLISHED]))
    return [_public(session, a) for a in session.exec(query).all()]


def _may_run(principal: Principal, algorithm: Algorithm) -> bool:
    return algorithm.team == PUBLISHED or principal.can_see(algorithm.team)


def _maintained(session: Session, principal: Principal, name: str) -> Algorithm:
    """The algorithm whose versions the caller may change: its team's; for a published one, only an admin."""
    algorithm = session.get(Algorithm, name)
    if algorithm is None or not _may_run(principal, algorithm):
        raise NotFoundError(f"algorithm {name!r} not found")
    if algorithm.team == PUBLISHED and not principal.admin:
        raise ForbiddenError(f"algorithm {name!r} is published for every team: only an admin changes its versions")
    return algorithm


def _check_local_command(config: GatewayConfig, principal: Principal) -> None:
    """A local_command is code run outside any image as the user of every job that resolves it."""
    if not config.algorithms.local_commands:
        raise ForbiddenError("this gateway runs no local commands (algorithms.local_commands is off)")
    if not principal.admin:
        raise ForbiddenError("only an admin token may register a local_command")
