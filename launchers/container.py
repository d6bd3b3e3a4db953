"""How each rank's Python starts: directly in the project's environment, or inside an Apptainer image.

With Apptainer the worker runs as ``apptainer exec [--nv] --cleanenv --bind … IMAGE python``. ``--cleanenv``
keeps the host's environment out of the container, so the variables the worker needs (Slurm's per-task
placement, submitit's) pass through explicitly: a fixed host-side shell line copies each ``SLURM_*`` and
``SUBMITIT_*`` variable to ``APPTAINERENV_*``, which Apptainer injects verbatim. Values are assigned, never
evaluated, so a job name full of shell syntax stays a string. The trainer's own environment travels inside the
pickled task, not on this command line.
"""

from __future__ import annotations

import shlex
import sys

from launchers.spec import JobSpec

# Constant text: no user input is ever spliced into it.
ENV_PASSTHROUGH_SHIM = (
    'for v in ${!SLURM_*} ${!SLURMD_*} ${!SUBMITIT_*} ${!HPCGW_*}; do export "APPTAINERENV_$v=${!v}"; done; exec "$@"'
)


def apptainer_argv(spec: JobSpec) -> list[str]:
    """The exact argv of ``apptainer exec`` for ``spec`` (runtime must be 'apptainer')."""
    container = spec.container
    if container.runtime != "apptainer" or container.image is None:
        raise ValueError("apptainer_argv needs a spec with container.runtime 'apptainer' and an image")
    argv = ["apptainer", "exec"]
    if spec.gpus_per_node > 0:
        argv.append("--nv")
    argv.append("--cleanenv")
    # submitit reads and writes the job folder from inside the container, at the same path.
    binds = [f"{spec.folder}:{spec.folder}", *(b.as_apptainer() for b in container.binds)]
    for bind in binds:
        argv += ["--bind", bind]
    argv += [container.image, "python"]
    return argv


def python_argv(spec: JobSpec) -> list[str]:
    """What submitit runs on every rank in place of ``python``."""
    if spec.container.runtime == "none":
        return [sys.executable]
    return ["bash", "-c", ENV_PASSTHROUGH_SHIM, "hpcgw-apptainer", *apptainer_argv(spec)]


def python_command(spec: JobSpec) -> str:
    """submitit takes the python command as one string and splices it into the script unquoted: quote here."""
    return shlex.join(python_argv(spec))
