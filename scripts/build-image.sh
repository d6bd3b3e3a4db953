#!/usr/bin/env bash
# Build the intent classifier's CPU image (containers/intent-classifier/intent-classifier-cpu.def) without a
# registry, and reuse it while nothing that goes into it changed.
#
# What goes in is staged in a build folder: the wheels at the exact versions the project's environment runs (the
# launcher pickles each task with its cloudpickle and submitit, and the image unpickles it with its own), the
# cached Horovod wheel, the `launchers` package (the in-job code) and the trainer. The image is cached under
# ${XDG_CACHE_HOME:-~/.cache}/hpcgw/images by a SHA-256 of all of it and the definition, so an unchanged input
# costs a hash and a copy; a change anywhere builds a new image (~2-3 minutes: debootstrap, then pip offline).
#
# Usage: scripts/build-image.sh [PYTHON] [OUTPUT]   (defaults: .venv/bin/python, .hpcgw/images/intent-classifier.sif)
# Prints the image's path on its last line. Needs `apptainer` on PATH (make apptainer) and root (debootstrap).
set -euo pipefail

PYTHON=${1:-.venv/bin/python}
OUTPUT=${2:-.hpcgw/images/intent-classifier.sif}
DEF=containers/intent-classifier/intent-classifier-cpu.def
TRAINER=containers/intent-classifier
# What the job imports, beside the standard library and the project's own code (the train extra, submitit, pydantic).
TOP_LEVEL=(torch numpy cffi cloudpickle psutil pyyaml packaging submitit pydantic)
# LZ4, not mksquashfs's gzip: every rank mounts the image anew (squashfuse for a job's user), so no rank shares the
# pages another decompressed, and a rank's `import horovod.torch` took 3.0 s from gzip, 2.1 s from LZ4 or from no
# compression at all, 1.4 s bare (measured here). LZ4 costs 552 MB against gzip's 383 MB and builds faster.
MKSQUASHFS_ARGS=${MKSQUASHFS_ARGS:--comp lz4}
cache_root=${HPCGW_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcgw/images}
wheel_cache=${HPCGW_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcgw/wheels}

log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cd "$(dirname "$0")/.."
command -v apptainer >/dev/null || { log "no apptainer on PATH: run 'make apptainer' first"; exit 2; }
command -v "$PYTHON" >/dev/null || { log "no python at $PYTHON (make venv)"; exit 2; }
[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root: run as root (or build $DEF with apptainer build --fakeroot)"; exit 2; }

# The exact versions of the environment the launcher runs in; the Horovod wheel build-horovod.sh cached for it.
pins=$("$PYTHON" -m pip freeze --exclude-editable | grep -v -E '^(horovod|hpc-train-gateway|hpc_train_gateway)[ =@]' |
    grep -v ' @ ' || true)
torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
horovod_wheel=$(find "$wheel_cache" -path "*horovod-0.28.1-torch-${torch_version}-cp311-cpu/*.whl" | head -1)
[ -n "$horovod_wheel" ] || { log "no cached CPU Horovod wheel for torch $torch_version: run 'make horovod' first"; exit 2; }

key=$(
    {
        printf 'apptainer %s\n' "$(apptainer --version)" "mksquashfs $MKSQUASHFS_ARGS"
        sha256sum "$DEF" "$horovod_wheel" | cut -d' ' -f1
        printf '%s\n' "$pins" "${TOP_LEVEL[@]}"
        find launchers "$TRAINER/train.py" "$TRAINER/train_ddp.py" "$TRAINER/intent_classifier" -name '*.py' \
            -type f | LC_ALL=C sort | xargs sha256sum
    } | sha256sum | cut -c1-32
)
cached="$cache_root/intent-classifier-$key.sif"

if [ ! -f "$cached" ]; then
    log "building the image (inputs $key): debootstrap, then the wheels offline"
    mkdir -p "$cache_root"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/hpcgw-image.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/wheels" "$stage/trainer/lib"
    printf '%s\n' "$pins" >"$stage/constraints.txt"
    "$PYTHON" -m pip download -q -d "$stage/wheels" -c "$stage/constraints.txt" --only-binary=:all: "${TOP_LEVEL[@]}"
    cp "$horovod_wheel" "$stage/wheels/"
    { printf '%s\n' "${TOP_LEVEL[@]}"; echo horovod; } >"$stage/wheels/requirements.txt"
    cp -r "$TRAINER/train.py" "$TRAINER/train_ddp.py" "$TRAINER/intent_classifier" "$stage/trainer/"
    # The launchers package on the image's path (a .pth file in its venv): the job's code, not the gateway's.
    cp -r launchers "$stage/trainer/lib/"
    find "$stage/trainer" -name __pycache__ -prune -exec rm -rf {} +
    cp "$DEF" "$stage/image.def"
    # Root lacks CAP_SYS_RESOURCE on these machines, so a plain root build fails in %post ("Requesting capability
    # set ..."): build in a user namespace (--fakeroot), which needs a subordinate id range for root.
    for ids in /etc/subuid /etc/subgid; do
        grep -q '^root:' "$ids" 2>/dev/null || echo 'root:100000:65536' >>"$ids"
    done
    started=$SECONDS
    (cd "$stage" && apptainer build --fakeroot --force --mksquashfs-args "$MKSQUASHFS_ARGS" "$stage/image.sif" image.def >"$stage/build.log" 2>&1) ||
        { tail -40 "$stage/build.log" >&2; log "the image did not build (log above)"; exit 1; }
    chmod 0644 "$stage/image.sif"
    mv "$stage/image.sif" "$cached.partial"
    mv "$cached.partial" "$cached"
    log "built in $((SECONDS - started)) s: $(du -h "$cached" | cut -f1)"
fi

mkdir -p "$(dirname "$OUTPUT")"
# Copied, not linked: a registered algorithm version pins the file's digest, and the cache may be pruned.
if ! cmp -s "$cached" "$OUTPUT" 2>/dev/null; then
    cp "$cached" "$OUTPUT.partial"
    chmod 0644 "$OUTPUT.partial"
    mv "$OUTPUT.partial" "$OUTPUT"
fi
chmod 0755 "$(dirname "$OUTPUT")"
log "image: $OUTPUT (inputs $key)"
echo "$OUTPUT"
