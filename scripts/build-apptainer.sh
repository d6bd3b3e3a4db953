#!/usr/bin/env bash
# Build Apptainer (unprivileged, no setuid) from Debian's own source package and cache its install prefix.
#
# Why a script of our own: no registry has an Apptainer binary for Debian 12 (sid's .deb needs glibc 2.38), and
# the Go module proxy does not resolve here, but Debian's source package builds against Debian's packaged Go
# libraries in GOPATH mode (../shared/notes/apptainer-build.md). Everything comes from Debian's apt repositories:
# sid's lists go to a private apt state (its own lists, cache and an empty dpkg status), so the system's apt
# sources stay untouched and nothing from sid is installed; the Go toolchain and libraries are only unpacked.
# The version is pinned: sid moves daily, and a pin that no longer resolves fails loudly here.
#
# The build takes ~7 minutes on 2 cores; the prefix (~100 MB) is cached under a path keyed by the version, and a
# later run only checks it. An `apptainer` already on PATH that is not this cache's (a site's own) is used as it is.
# As root, /usr/local/bin/apptainer is linked to the cached one, so that every job finds it on the nodes.
#
# Usage: scripts/build-apptainer.sh
# Environment:
#   HPCGW_APPTAINER_CACHE   where prefixes are cached (default: ${XDG_CACHE_HOME:-~/.cache}/hpcgw/apptainer)
#   HPCGW_BUILD_JOBS        parallel Go compile jobs (default: nproc)
set -euo pipefail

APPTAINER_DEB_VERSION=1.4.5-2   # sid's source package; its upstream version is the part before the dash
APPTAINER_VERSION=${APPTAINER_DEB_VERSION%-*}
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
BUILD_DEBS=(build-essential pkg-config dpkg-dev libseccomp-dev libsubid-dev cryptsetup-bin squashfs-tools
    squashfuse fuse2fs fuse-overlayfs fuse3 uidmap debootstrap)

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${HPCGW_APPTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpcgw/apptainer}
prefix="$cache_root/$APPTAINER_DEB_VERSION"
jobs=${HPCGW_BUILD_JOBS:-$(nproc)}

log() { printf '[build-apptainer %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

configure() {
    # Root here lacks CAP_SYS_RESOURCE, so Apptainer's default capability set for root cannot be requested;
    # slurmd runs as root, jobs as their users, and nothing needs root's capabilities inside a container.
    local conf="$prefix/etc/apptainer/apptainer.conf"
    sed -i 's/^root default capabilities = .*/root default capabilities = no/' "$conf"
    grep -q '^root default capabilities = no$' "$conf" || { log "cannot set 'root default capabilities' in $conf"; exit 1; }
}

usable() {
    [ -f "$prefix/.complete" ] && "$prefix/bin/apptainer" --version 2>/dev/null | grep -q "apptainer version $APPTAINER_VERSION"
}

link() {
    if [ "$(id -u)" -eq 0 ]; then
        ln -sfn "$prefix/bin/apptainer" /usr/local/bin/apptainer
    elif [ "$(command -v apptainer || true)" != "$prefix/bin/apptainer" ]; then
        log "put $prefix/bin on PATH (on every node) to use it"
    fi
}

on_path=$(command -v apptainer || true)
if [ -n "$on_path" ] && [ "$(readlink -f "$on_path")" != "$(readlink -f "$prefix/bin/apptainer" 2>/dev/null || true)" ]; then
    log "using $($on_path --version) at $on_path"
    exit 0
fi

# The runtime needs these on every node (squashfuse mounts a SIF as a user; fuse2fs, fuse-overlayfs for overlays).
"$here/install-system-deps.sh" "${BUILD_DEBS[@]}"

if usable; then
    configure
    link
    log "Apptainer $APPTAINER_VERSION cached at $prefix"
    echo "$prefix/bin"
    exit 0
fi

command -v apt-get >/dev/null || { log "needs apt-get (Debian) to fetch the source package"; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/hpcgw-apptainer.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# A private apt for sid: deb and deb-src, signed by the archive keyring the machine already has.
mkdir -p "$work/apt/sources.d" "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
: >"$work/apt/status"
cat >"$work/apt/sources.d/sid.sources" <<EOF
Types: deb deb-src
URIs: $MIRROR
Suites: sid
Components: main
Signed-By: $KEYRING
EOF
apt_opts=(-q -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/apt/sources.d"
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o "Dir::State::status=$work/apt/status"
    -o "APT::Sandbox::User=root")
log "fetching sid's package lists"
apt-get "${apt_opts[@]}" update >/dev/null

log "fetching the source package apptainer=$APPTAINER_DEB_VERSION"
cd "$work"
if ! apt-get "${apt_opts[@]}" source --download-only "apptainer=$APPTAINER_DEB_VERSION" >/dev/null; then
    log "sid no longer has apptainer $APPTAINER_DEB_VERSION: update APPTAINER_DEB_VERSION in $0 after checking the new one"
    exit 1
fi
dpkg-source -x "apptainer_$APPTAINER_DEB_VERSION.dsc" source >/dev/null

# The Go build-dependencies named in the .dsc, with everything they pull in, fetched and only unpacked.
mapfile -t go_deps < <(sed -n 's/^Build-Depends://p' "apptainer_$APPTAINER_DEB_VERSION.dsc" | tr ',' '\n' |
    sed 's/(.*)//; s/[[:space:]]//g' | grep '^golang-')
mapfile -t go_debs < <(apt-get "${apt_opts[@]}" -s install --no-install-recommends "${go_deps[@]}" |
    awk '$1 == "Inst" && $2 ~ /^golang-/ {print $2}')
log "fetching ${#go_debs[@]} Go packages (toolchain and libraries)"
mkdir -p "$work/debs" "$work/go"
(cd "$work/debs" && apt-get "${apt_opts[@]}" download "${go_debs[@]}" >/dev/null)
for deb in "$work"/debs/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/go" --wildcards './usr/share/gocode/*' './usr/lib/go-*' './usr/share/go-*' 2>/dev/null || true
done
rm -rf "$work/debs" "$work/apt/cache"
goroot=$(find "$work/go/usr/lib" -maxdepth 1 -name 'go-1.*' -type d | sort -V | tail -1)
[ -x "$goroot/bin/go" ] || { log "no Go toolchain among the fetched packages"; exit 1; }
log "Go: $("$goroot/bin/go" version)"

# GOPATH mode, as Debian's rules build it: the source at its import path, the libraries from /usr/share/gocode.
src="$work/build/src/github.com/apptainer/apptainer"
mkdir -p "$(dirname "$src")"
mv "$work/source" "$src"
echo "$APPTAINER_VERSION" >"$src/VERSION"
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS="-mod=readonly -p=$jobs"
export GOPATH="$work/build:$work/go/usr/share/gocode" GOCACHE="$work/gocache" PATH="$goroot/bin:$PATH"
# The prefix is compiled into the binary, so it is built in place; .complete, written last, says it is whole.
rm -rf "$prefix"
cd "$src"
log "configuring and building (a few minutes)"
./mconfig -b builddir --without-suid --without-network --prefix="$prefix" >"$work/mconfig.log" 2>&1 ||
    { tail -30 "$work/mconfig.log" >&2; exit 1; }
make -C builddir -j1 GO111MODULE=off GOFLAGS="$GOFLAGS" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
make -C builddir install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log" >&2; exit 1; }

configure
"$prefix/bin/apptainer" --version >/dev/null || { log "the installed apptainer does not run"; exit 1; }
touch "$prefix/.complete"
link
log "Apptainer $APPTAINER_VERSION built in $((SECONDS - started)) s, cached at $prefix"
echo "$prefix/bin"
