"""Where a preempted or timed-out job asks to be requeued when its rank 0 cannot ask Slurm itself.

submitit's signal handler requeues the job from rank 0 with ``scontrol requeue``. Inside an image there is no
Slurm client, and binding the site's (its binary, its configuration, the munge socket) would let the host into
every container. So where ``scontrol`` is not on PATH, rank 0 writes ``<folder>/markers/<job id>.requeue``
instead, exits as submitit does, and the job script asks Slurm on the host, after srun
(:func:`launchers.runtime.markers.exit_code_teardown`). The request file is the job's own: it can only requeue
the job that wrote it, which its user may do anyway.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from launchers.runtime.markers import write_atomic

REQUEST_SUFFIX = ".requeue"


def request_path(folder: Path | str, job_id: str) -> Path:
    return Path(folder) / "markers" / f"{job_id}{REQUEST_SUFFIX}"


def install() -> None:
    """Wrap submitit's Slurm ``_requeue`` once per process: Slurm's own client where there is one, else the
    request file."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    original = SlurmJobEnvironment._requeue
    if getattr(original, "_hpcgw", False):
        return

    def _requeue(self: Any, countdown: int) -> None:
        if shutil.which("scontrol") is not None:
            original(self, countdown)
            return
        write_atomic(request_path(self.paths.folder, self.job_id), f"{countdown}\n")

    _requeue._hpcgw = True  # type: ignore[attr-defined]
    SlurmJobEnvironment._requeue = _requeue  # type: ignore[method-assign]
