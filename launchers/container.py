"""How each rank's Python starts: directly in the project's environment, or inside an Apptainer image.

With Apptainer the worker runs as ``apptainer exec [--nv] --cleanenv … --bind … IMAGE python``. ``--cleanenv``
keeps the host's environment out of the container, so the variables a rank needs pass through explicitly: a fixed
host-side shell line (``ENV_PASSTHROUGH_SHIM``) copies each variable whose name matches one of the spec's
patterns (Slurm's, submitit's and the protocol's always, a site's list besides) to ``APPTAINERENV_*``.

Apptainer does not inject those values verbatim: it writes them into a double-quoted ``export`` line that its
shell evaluates inside the container, so ``$(…)``, backticks and ``$VAR`` in a Slurm job name would run there.
The shim escapes ``\\``, ``$`` and the backtick first, and the value arrives byte for byte (quotes, newlines and
all). The shim's text is constant: the image to check, the patterns and the command arrive as its positional
arguments, never spliced into it. The trainer's own environment travels inside the pickled task, not here.
"""

from __future__ import annotations

import shlex
import sys

from launchers.spec import REQUIRED_ENV_PASSTHROUGH, JobSpec

# Constant text: no user input is ever spliced into it. Arguments: the image to check ('' for a URI), the
# pass-through patterns, '--', then the command (apptainer exec …). Before it runs the command:
# - apptainer missing or the image unreadable on this node: one line naming the node on stderr, exit 127 at
#   once (srun --kill-on-bad-exit ends the other ranks), instead of a rank that never reaches the rendezvous;
# - --sharens keys the node's shared container on a lock file named after the parent (slurmstepd) in /dev/shm,
#   which any user of the node can create first: one that is a link or not this user's is left alone, and the
#   rank mounts the image itself (one line on stderr) instead of failing or waiting on another user's lock;
# - the node's own APPTAINER*/SINGULARITY* settings are dropped (an APPTAINERENV_X or APPTAINER_BIND would carry
#   a variable or a host path in past the list), but for where images are cached and unpacked;
# - every exported variable matching a pattern is exported again as APPTAINERENV_<name>, escaped.
ENV_PASSTHROUGH_SHIM = (
    "_hpcgw_image=$1; shift; _hpcgw_patterns=(); "
    'while [[ $# -gt 0 && $1 != -- ]]; do _hpcgw_patterns+=("$1"); shift; done; shift; '
    "if ! command -v apptainer >/dev/null 2>&1; then "
    'echo "hpcgw: apptainer is not on PATH on node $(</proc/sys/kernel/hostname)" >&2; exit 127; fi; '
    "if [[ -n $_hpcgw_image && ! ( -f $_hpcgw_image && -r $_hpcgw_image ) ]]; then "
    'echo "hpcgw: image $_hpcgw_image is not a readable file on node $(</proc/sys/kernel/hostname)" >&2; '
    "exit 127; fi; "
    "_hpcgw_lock=/dev/shm/sharens_instance_$PPID; "
    "if [[ ${3-} == --sharens ]] && [[ -L $_hpcgw_lock || ( -e $_hpcgw_lock && ! -O $_hpcgw_lock ) ]]; then "
    'echo "hpcgw: $_hpcgw_lock is not this user\'s: this rank mounts the image itself" >&2; '
    'set -- "$1" "$2" "${@:4}"; fi; '
    "for _hpcgw_v in $(compgen -e); do case $_hpcgw_v in "
    "APPTAINER_CACHEDIR|APPTAINER_TMPDIR|SINGULARITY_CACHEDIR|SINGULARITY_TMPDIR) ;; "
    'APPTAINER*|SINGULARITY*) unset -v "$_hpcgw_v" ;; esac; done; '
    'for _hpcgw_v in $(compgen -e); do for _hpcgw_p in "${_hpcgw_patterns[@]}"; do '
    "if [[ $_hpcgw_v == $_hpcgw_p ]]; then _hpcgw_e=${!_hpcgw_v}; "
    r'_hpcgw_e=${_hpcgw_e//"\\"/"\\\\"}; _hpcgw_e=${_hpcgw_e//"\$"/"\\\$"}; _hpcgw_e=${_hpcgw_e//"\`"/"\\\`"}; '
    'export "APPTAINERENV_$_hpcgw_v=$_hpcgw_e"; break; fi; done; done; '
    'exec "$@"'
)


def apptainer_argv(spec: JobSpec, under_srun: bool = True) -> list[str]:
    """The exact argv of ``apptainer exec`` for ``spec`` (runtime must be 'apptainer'). ``under_srun``: every
    process with the same parent is a rank of the same step (see ContainerSpec.share_per_node); a local run's
    parent starts other jobs too, so it never shares."""
    container = spec.container
    if container.runtime != "apptainer" or container.image is None:
        raise ValueError("apptainer_argv needs a spec with container.runtime 'apptainer' and an image")
    argv = ["apptainer", "exec"]
    if under_srun and container.share_per_node:
        argv.append("--sharens")
    if spec.gpus_per_node > 0:
        argv.append("--nv")
    # --cleanenv: only what the shim passes on; --no-home: the user's home (its ~/.local site-packages, its keys)
    # stays out; --no-mount cwd: the submitter's working directory stays out too (`python -m` puts it first on
    # sys.path, so a checkout there would shadow the image's own packages), and the job starts in its folder. The
    # binds below are what the job needs; /tmp (per-node scratch) and the site's own `bind path`s of
    # apptainer.conf (/etc/hosts for the nodes' names) are Apptainer's defaults.
    argv += ["--cleanenv", "--no-home", "--no-mount", "cwd", "--pwd", str(spec.folder)]
    # submitit reads and writes the job folder from inside the container, at the same path (unless a bind of a
    # folder above it, writable and at its own path, already shows it there).
    covered = any(
        not b.read_only and b.source == b.target and spec.folder.is_relative_to(b.source) for b in container.binds
    )
    own = [] if covered else [f"{spec.folder}:{spec.folder}"]
    binds = [*own, *(b.as_apptainer() for b in container.binds)]
    for bind in binds:
        argv += ["--bind", bind]
    argv += [container.image, "python"]
    return argv


def env_patterns(spec: JobSpec) -> list[str]:
    """What crosses into the container: the required patterns, then the spec's own (duplicates once)."""
    return list(dict.fromkeys((*REQUIRED_ENV_PASSTHROUGH, *spec.container.env_passthrough)))


def python_argv(spec: JobSpec, under_srun: bool = True) -> list[str]:
    """What submitit runs on every rank in place of ``python``."""
    if spec.container.runtime == "none":
        return [sys.executable]
    image = spec.container.image or ""
    checked = "" if "://" in image else image  # a URI is apptainer's to fetch; a path must be on the node
    shim = ["bash", "-c", ENV_PASSTHROUGH_SHIM, "hpcgw-apptainer"]
    return [*shim, checked, *env_patterns(spec), "--", *apptainer_argv(spec, under_srun)]


def python_command(spec: JobSpec, under_srun: bool = True) -> str:
    """submitit takes the python command as one string and splices it into the script unquoted: quote here."""
    return shlex.join(python_argv(spec, under_srun))
