#!/usr/bin/env bash
# Install the Debian packages the build needs (compilers, CMake, OpenMPI), only those missing.
# Why here and not in a README step: `make demo` / `make test` must work on a fresh Debian machine with root.
# Without root, name what is missing and stop; a site's login node normally has them already.
set -euo pipefail
pkgs=("$@")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-system-deps: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
