#!/usr/bin/env bash
# Build Horovod 0.28.1 from PyPI's source distribution and install it into a virtual environment.
#
# Why a script of our own: the 0.28.1 sdist (the last release) does not build against PyTorch >= 2.1 without
# patches (C++17; on gcc 13 / CMake 4 also a few headers and a policy floor). The build takes ~13 minutes on
# 2 cores, so the wheel is cached under a path keyed by Horovod, torch, Python and the variant (cpu / nccl);
# a later run installs it in seconds. See ../shared/notes/horovod-build.md for where the recipe comes from.
#
# Usage: scripts/build-horovod.sh [PYTHON]        (default: .venv/bin/python)
# Environment:
#   HOROVOD_GPU_OPERATIONS=NCCL   build the GPU variant (NCCL from the nvidia-nccl-cu* wheel, CUDA at
#                                 HOROVOD_CUDA_HOME, default /usr/local/cuda; HOROVOD_BUILD_CUDA_CC_LIST, default 90)
#   HPCGW_WHEEL_CACHE             where wheels are cached (default: ${XDG_CACHE_HOME:-~/.cache}/hpcgw/wheels)
#   HOROVOD_SDIST                 a local horovod-0.28.1.tar.gz, for machines without a package index
#   HPCGW_BUILD_JOBS              parallel compile jobs (default: nproc)
set -euo pipefail

HOROVOD_VERSION=0.28.1
PYTHON=${1:-.venv/bin/python}
command -v "$PYTHON" >/dev/null || { echo "build-horovod: no python at $PYTHON (create the venv first: make venv)" >&2; exit 2; }

log() { printf '[build-horovod %(%H:%M:%S)T] %s\n' -1 "$*"; }

read -r TORCH_VERSION PY_TAG < <("$PYTHON" - <<'PY'
import sys
import torch
print(torch.__version__, f"cp{sys.version_info.major}{sys.version_info.minor}")
PY
)
variant=cpu
if [ "${HOROVOD_GPU_OPERATIONS:-}" = "NCCL" ]; then variant=nccl; fi
key="horovod-${HOROVOD_VERSION}-torch-${TORCH_VERSION}-${PY_TAG}-${variant}"
cache_root=${HPCGW_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcgw/wheels}
cache_dir="$cache_root/$key"

installed_ok() {
    # The installed Horovod counts only if it was built against this torch and has the wanted ops.
    "$PYTHON" - "$variant" <<'PY' >/dev/null 2>&1
import sys
import torch  # noqa: F401  (horovod.torch must be imported after torch)
import horovod
import horovod.torch as hvd
assert horovod.__version__ == "0.28.1"
assert hvd.gloo_built()
if sys.argv[1] == "nccl":
    assert hvd.nccl_built()
PY
}

if installed_ok; then
    log "Horovod $HOROVOD_VERSION ($variant) already installed for torch $TORCH_VERSION"
    exit 0
fi

wheel=$(ls "$cache_dir"/horovod-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$wheel" ]; then
    log "installing cached wheel $wheel"
    "$PYTHON" -m pip install -q --no-deps --force-reinstall "$wheel"
    if installed_ok; then log "done"; exit 0; fi
    log "cached wheel does not import; rebuilding"
    rm -f "$wheel"
fi

need=()
for tool in cmake g++ make; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    echo "build-horovod: missing ${need[*]}; on Debian: apt-get install cmake g++ make libopenmpi-dev openmpi-bin" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hpcgw-horovod.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${HOROVOD_SDIST:-}" ]; then
    cp "$HOROVOD_SDIST" "$work/"
else
    log "downloading the horovod==$HOROVOD_VERSION source distribution"
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$work" "horovod==$HOROVOD_VERSION"
fi
tar -xzf "$work"/horovod-"$HOROVOD_VERSION".tar.gz -C "$work"
src="$work/horovod-$HOROVOD_VERSION"

# Fix 1 (all builds): torch >= 2.1 headers need C++17.
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
grep -q 'CMAKE_CXX_STANDARD 17' "$src/CMakeLists.txt" || { echo "build-horovod: C++17 patch did not apply" >&2; exit 1; }

export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
export MAKEFLAGS="-j${HPCGW_BUILD_JOBS:-$(nproc)}"
# Fix 2: CMake 4 refuses Gloo's old cmake_minimum_required; harmless on CMake 3.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
# Fix 3: gcc 13 no longer pulls these headers in implicitly; harmless on gcc 12.
export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include string -include stdexcept -include memory -include algorithm -include limits"
if command -v mpicxx >/dev/null && [ "$variant" = cpu ]; then
    export HOROVOD_WITH_MPI=1
else
    export HOROVOD_WITHOUT_MPI=1
fi

if [ "$variant" = nccl ]; then
    # Fix 4: the nvidia-nccl-cu* wheel ships only libnccl.so.2; CMake looks for libnccl.so.
    nccl_home=${HOROVOD_NCCL_HOME:-$("$PYTHON" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)}
    [ -n "$nccl_home" ] && [ -e "$nccl_home/lib/libnccl.so.2" ] || {
        echo "build-horovod: NCCL not found; install the nvidia-nccl-cu12/cu13 wheel or set HOROVOD_NCCL_HOME" >&2; exit 2; }
    [ -e "$nccl_home/lib/libnccl.so" ] || ln -s libnccl.so.2 "$nccl_home/lib/libnccl.so"
    export HOROVOD_NCCL_HOME="$nccl_home" HOROVOD_NCCL_LINK=SHARED HOROVOD_GPU_OPERATIONS=NCCL
    export HOROVOD_CUDA_HOME=${HOROVOD_CUDA_HOME:-/usr/local/cuda} HOROVOD_BUILD_CUDA_CC_LIST=${HOROVOD_BUILD_CUDA_CC_LIST:-90}
fi

# Horovod's setup.py needs cffi (setup_requires) whenever PyTorch support is on; without it setuptools tries a
# network fetch of its own, which fails on machines without an index.
if ! "$PYTHON" -c 'import cffi' 2>/dev/null; then
    log "installing cffi (a build requirement of Horovod's setup.py)"
    "$PYTHON" -m pip install -q cffi || {
        echo "build-horovod: Horovod needs cffi to build; install it first: $PYTHON -m pip install cffi" >&2; exit 2; }
fi

log "building $key with ${MAKEFLAGS} (MPI: ${HOROVOD_WITH_MPI:-no}); progress below, full log in $work/build.log"
mkdir -p "$cache_dir"
start=$SECONDS
set +e
"$PYTHON" -m pip wheel -v --no-deps --no-build-isolation -w "$work/dist" "$src" >"$work/build.log" 2>&1 &
pip_pid=$!
# Show CMake's percentage lines as they come, so a slow build is visible in CI logs.
tail -n +1 -F --pid="$pip_pid" "$work/build.log" 2>/dev/null |
    grep --line-buffered -E '^ *\[ *[0-9]+%\]|Running setup.py| error:|ERROR:' |
    while IFS= read -r line; do printf '[build-horovod +%4ss] %s\n' "$((SECONDS - start))" "$line"; done &
wait "$pip_pid"
rc=$?
set -e
sleep 1
if [ "$rc" -ne 0 ]; then
    cp "$work/build.log" "$cache_dir/build-failed.log"
    echo "build-horovod: pip wheel failed (exit $rc); full log kept in $cache_dir/build-failed.log" >&2
    { grep -n -B2 -A25 -E 'Traceback|CMake Error|ERROR:|error:' "$work/build.log" | head -80; echo ...; tail -n 30 "$work/build.log"; } >&2
    exit "$rc"
fi
cp "$work"/dist/horovod-*.whl "$cache_dir/"
log "built in $((SECONDS - start)) s; cached in $cache_dir"
"$PYTHON" -m pip install -q --no-deps --force-reinstall "$cache_dir"/horovod-*.whl
installed_ok || { echo "build-horovod: the built Horovod does not import" >&2; exit 1; }
log "Horovod $HOROVOD_VERSION ($variant) installed"
