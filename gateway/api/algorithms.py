"""/v1/algorithms: the self-service registry. A new version changes what later requests run; jobs keep theirs."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from fastapi import APIRouter, status
from sqlmodel import Session, col, select

from gateway.api.deps import NamePath, PrincipalDep, ReleasingRoute, SessionDep
from gateway.api.problems import AUTHENTICATED, BODY, declare
from gateway.auth import Principal
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
from gateway.models import Algorithm, AlgorithmVersion
from gateway.schemas import AlgorithmCreate, AlgorithmPublic, AlgorithmVersionCreate, AlgorithmVersionPublic
from launchers.runtime.provenance import file_sha256
from launchers.spec import Framework

router = APIRouter(prefix="/v1/algorithms", tags=["algorithms"], route_class=ReleasingRoute)


def _public(session: Session, algorithm: Algorithm) -> AlgorithmPublic:
    versions = session.exec(
        select(AlgorithmVersion).where(AlgorithmVersion.algorithm == algorithm.name).order_by(col(AlgorithmVersion.id))
    ).all()
    return AlgorithmPublic(
        name=algorithm.name,
        team=algorithm.team,
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


def _add_version(session: Session, name: str, body: AlgorithmVersionCreate) -> None:
    session.add(
        AlgorithmVersion(
            algorithm=name,
            version=body.version,
            image=body.image,
            image_digest=image_digest(body.image),
            command=body.command,
            local_command=body.local_command,
            framework=body.framework,
        )
    )


@router.post(
    "",
    response_model=AlgorithmPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(*AUTHENTICATED, 409, *BODY),
)
def create_algorithm(body: AlgorithmCreate, session: SessionDep, principal: PrincipalDep) -> AlgorithmPublic:
    team = _owner(principal, body.team)
    if session.get(Algorithm, body.name) is not None:
        raise ConflictError(f"algorithm {body.name!r} exists; add a version instead")
    algorithm = Algorithm(name=body.name, team=team, description=body.description, current_version=body.version)
    session.add(algorithm)
    session.flush()
    _add_version(session, body.name, body)
    session.commit()
    return _public(session, algorithm)


@router.post(
    "/{name}/versions",
    response_model=AlgorithmPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(*AUTHENTICATED, 404, 409, *BODY),
)
def add_version(
    name: NamePath, body: AlgorithmVersionCreate, session: SessionDep, principal: PrincipalDep
) -> AlgorithmPublic:
    algorithm = session.get(Algorithm, name)
    if algorithm is None or not principal.can_see(algorithm.team):
        raise NotFoundError(f"algorithm {name!r} not found")
    exists = session.exec(
        select(AlgorithmVersion).where(AlgorithmVersion.algorithm == name, AlgorithmVersion.version == body.version)
    ).first()
    if exists is not None:
        raise ConflictError(f"algorithm {name!r} already has version {body.version!r}")
    _add_version(session, name, body)
    algorithm.current_version = body.version
    session.add(algorithm)
    session.commit()
    return _public(session, algorithm)


@router.get("", response_model=list[AlgorithmPublic], responses=declare(401, 503))
def list_algorithms(session: SessionDep, principal: PrincipalDep) -> list[AlgorithmPublic]:
    """Every team may run every registered algorithm; the owning team alone adds versions."""
    return [_public(session, a) for a in session.exec(select(Algorithm).order_by(col(Algorithm.name))).all()]


def _owner(principal: Principal, requested: str | None) -> str:
    if requested is not None and requested != principal.team and not principal.admin:
        raise InvalidRequestError("only an admin token may name a team", field="team")
    team = requested or principal.team
    if team is None:
        raise InvalidRequestError("an admin token must name the owning team", field="team")
    return team


def image_digest(image: str) -> str | None:
    """sha256 of a local image file; the digest part of a reference like ``repo@sha256:…``; else unknown."""
    if "@sha256:" in image:
        return "sha256:" + image.rsplit("@sha256:", 1)[1]
    path = Path(image)
    return "sha256:" + file_sha256(path) if path.is_file() else None
