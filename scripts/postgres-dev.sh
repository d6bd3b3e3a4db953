#!/usr/bin/env bash
# Start, stop or locate a private PostgreSQL server for the project's tests.
#
#   scripts/postgres-dev.sh up   [STATE_DIR]   start it (install/initdb as needed), print the URL
#   scripts/postgres-dev.sh down [STATE_DIR]   stop it; fine when it is not running
#   scripts/postgres-dev.sh url  [STATE_DIR]   print the SQLAlchemy URL
#
# STATE_DIR defaults to .hpcgw/postgres under the current directory; HPCGW_PG_PORT (default 16832).
#
# Why a private server and not the distro's cluster: the test machines are Debian containers without
# systemd, where apt never starts services (policy-rc.d exits 101), and tests must not depend on, or
# disturb, a cluster someone else owns. Everything lives in STATE_DIR, so `rm -rf STATE_DIR` after
# `down` resets it.
#
# Progress goes to stderr and only the URL to stdout, so `url=$(scripts/postgres-dev.sh up)` works.
set -euo pipefail

prog="postgres-dev"
db_name="hpcgw"
db_user="postgres"
port="${HPCGW_PG_PORT:-16832}"

die() {
    local code="$1"
    shift
    echo "$prog: error: $*" >&2
    exit "$code"
}
say() { echo "$prog: $*" >&2; }

usage() {
    echo "usage: $0 {up|down|url} [STATE_DIR]   (env: HPCGW_PG_PORT, default 16832)" >&2
    exit 2
}

(($# >= 1 && $# <= 2)) || usage
cmd="$1"
case "$cmd" in up | down | url) ;; *) usage ;; esac

[[ "$port" =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) ||
    die 2 "HPCGW_PG_PORT must be a TCP port number, got '$port'"

url="postgresql+psycopg://${db_user}@127.0.0.1:${port}/${db_name}"
if [ "$cmd" = url ]; then
    echo "$url"
    exit 0
fi

# Absolute paths: the server and pg_ctl run from / (see as_pg), and the socket path is baked into
# the server's options, so a relative path would point elsewhere.
state_dir="$(realpath -m -- "${2:-.hpcgw/postgres}")"
# pg_ctl hands -D, -l and -o to /bin/sh inside double quotes (and we single-quote the socket dir),
# so these characters would break or inject into that command line; refuse them up front.
case "$state_dir" in
    *[\'\"\$\`\\]* | *$'\n'*) die 2 "STATE_DIR must not contain quotes, \$, backquotes, backslashes or newlines: $state_dir" ;;
esac
data_dir="$state_dir/data"
run_dir="$state_dir/run"
log_file="$state_dir/postgres.log"

is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1

# Newest installed major version's bin dir, or empty. Debian installs each major side by side in
# /usr/lib/postgresql/<major>/bin and leaves them off PATH (/usr/bin/psql is only a wrapper).
find_bin_dir() {
    local d best="" best_major=-1 major
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] || continue
        major="${d#/usr/lib/postgresql/}"
        major="${major%/bin}"
        [[ "$major" =~ ^[0-9]+$ ]] || continue
        if ((major > best_major)); then
            best_major="$major"
            best="$d"
        fi
    done
    echo "$best"
}

# initdb and the server refuse to run as root, so as root they run as the `postgres` account the
# package creates. As a normal user they simply run as that user (who then owns the data dir).
# `cd /` first: the caller's cwd may not be readable by postgres, which makes the tools warn.
# `9>&-`: fd 9 holds the STATE_DIR lock (see `up`); a server started with it open would keep the
# lock for its whole life and make every later `up` wait forever.
as_pg() {
    if ((is_root)); then
        (cd / && runuser -u postgres -- "$@" 9>&-)
    else
        "$@" 9>&-
    fi
}

# Port recorded by the running server (4th line of postmaster.pid), or empty.
running_port() {
    sed -n 4p "$data_dir/postmaster.pid" 2>/dev/null || true
}

is_running() {
    [ -f "$data_dir/PG_VERSION" ] && as_pg "$bin_dir/pg_ctl" status -D "$data_dir" >/dev/null 2>&1
}

bin_dir="$(find_bin_dir)"
# A data dir only works with the major version that created it; prefer that one when it exists.
if [ -f "$data_dir/PG_VERSION" ]; then
    data_major="$(cat "$data_dir/PG_VERSION")"
    if [ -x "/usr/lib/postgresql/$data_major/bin/pg_ctl" ]; then
        bin_dir="/usr/lib/postgresql/$data_major/bin"
    elif [ -n "$bin_dir" ] && [ "$cmd" = up ]; then
        die 1 "$data_dir was created by PostgreSQL $data_major, which is not installed (have $bin_dir);" \
            "remove $state_dir to start afresh, or install postgresql-$data_major"
    fi
fi

# ---------------------------------------------------------------------------------------------- down
if [ "$cmd" = down ]; then
    if [ -z "$bin_dir" ] || [ ! -f "$data_dir/PG_VERSION" ]; then
        say "no server set up in $state_dir; nothing to stop"
        exit 0
    fi
    if ! is_running; then
        say "server in $state_dir is not running"
        exit 0
    fi
    say "stopping server in $state_dir"
    # -m fast: roll back open transactions and disconnect clients instead of waiting for them.
    as_pg "$bin_dir/pg_ctl" stop -D "$data_dir" -m fast -w -t 60 >&2 ||
        die 1 "pg_ctl stop failed; see $log_file"
    exit 0
fi

# ------------------------------------------------------------------------------------------------ up
# 1. The binaries.
if [ -z "$bin_dir" ]; then
    if ((!is_root)); then
        die 2 "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin;" \
            "install the Debian package: sudo apt-get install -y postgresql"
    fi
    say "installing the Debian package postgresql"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be stale or absent in a fresh container: update only when needed.
    if ! apt-get install -y -q postgresql >&2; then
        apt-get update -q >&2 || die 1 "apt-get update failed"
        apt-get install -y -q postgresql >&2 || die 1 "apt-get install -y postgresql failed"
    fi
    bin_dir="$(find_bin_dir)"
    [ -n "$bin_dir" ] || die 1 "postgresql installed but no /usr/lib/postgresql/*/bin with initdb and pg_ctl"
fi
if ((is_root)); then
    id -u postgres >/dev/null 2>&1 ||
        die 1 "OS user 'postgres' missing (the postgresql package normally creates it)"
fi

# 2. The state dir, and the path to it: the server (running as postgres) must traverse every parent.
# Checking as that user is exact (ACLs, root-squash mounts...) where reading mode bits is not.
mkdir -p -- "$state_dir"
# Serialise concurrent `up` runs (e.g. parallel test jobs) on the same STATE_DIR.
# The server never inherits fd 9 (as_pg closes it), so the lock ends with this script.
exec 9>"$state_dir/.lock"
flock -w 120 9 || die 1 "another '$0 up' has held $state_dir/.lock for 120s"
# Walk from / downwards so the message names the first directory that blocks, not a child of it.
if ((is_root)); then
    d=""
    IFS=/ read -r -a parts <<<"${state_dir#/}"
    for part in "" "${parts[@]}"; do
        d="${d%/}/$part"
        as_pg test -x "$d" ||
            die 1 "directory $d is not traversable by the postgres user;" \
                "use a STATE_DIR elsewhere (e.g. under /tmp) or: chmod o+x '$d'"
    done
fi

# The server's Unix socket path is limited to 107 bytes (sun_path); past that it fails obscurely.
socket_path="$run_dir/.s.PGSQL.$port"
((${#socket_path} <= 107)) ||
    die 1 "socket path too long (${#socket_path} > 107 bytes): $socket_path; use a shorter STATE_DIR"

# 3. Directories and log owned by the server's user. initdb insists on 0700 for the data dir.
mkdir -p -- "$data_dir" "$run_dir"
touch -- "$log_file"
if ((is_root)); then
    if [ -f "$data_dir/PG_VERSION" ]; then
        owner="$(stat -c %U -- "$data_dir")"
        [ "$owner" = postgres ] ||
            die 1 "$data_dir is owned by '$owner', not 'postgres'; remove $state_dir to start afresh"
    fi
    chown postgres:postgres -- "$data_dir" "$run_dir" "$log_file"
fi
chmod 700 -- "$data_dir"
chmod 755 -- "$run_dir"

# 4. initdb once. trust auth: the server listens only on 127.0.0.1 and a socket in STATE_DIR, for
# tests. Locale C: independent of the host's locales and faster.
if [ ! -f "$data_dir/PG_VERSION" ]; then
    say "initialising $data_dir with $bin_dir/initdb"
    init_log="$state_dir/initdb.log"
    if ! as_pg "$bin_dir/initdb" -D "$data_dir" --auth=trust -U "$db_user" --encoding=UTF8 --locale=C \
        >"$init_log" 2>&1; then
        tail -n 20 -- "$init_log" >&2 || true
        die 1 "initdb failed; full output in $init_log"
    fi
fi

# 5. Start unless already running. A server from this STATE_DIR on another port is a conflict we
# must not paper over: the URL we print would point at the wrong place.
if is_running; then
    cur_port="$(running_port)"
    if [ -n "$cur_port" ] && [ "$cur_port" != "$port" ]; then
        die 1 "server in $state_dir is already running on port $cur_port, not $port;" \
            "run '$0 down $state_dir' first, or set HPCGW_PG_PORT=$cur_port"
    fi
    say "server in $state_dir already running on port $port"
else
    say "starting server on 127.0.0.1:$port (log: $log_file)"
    # fsync=off: test data is disposable and this makes DDL-heavy test setup much faster.
    # max_connections=200: parallel test workers each hold a pool.
    if ! as_pg "$bin_dir/pg_ctl" start -w -t 60 -D "$data_dir" -l "$log_file" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k '$run_dir' -c fsync=off -c max_connections=200" \
        >&2; then
        echo "---- last 20 lines of $log_file ----" >&2
        tail -n 20 -- "$log_file" >&2 || true
        die 1 "server failed to start (is port $port already in use? set HPCGW_PG_PORT to another)"
    fi
fi

# 6. pg_ctl -w only waits on the socket/pid file; wait until TCP on 127.0.0.1 answers too.
ready=0
for _ in $(seq 1 60); do
    # -U/-d: without them pg_isready probes as the OS user (root), which works but logs a FATAL.
    if "$bin_dir/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$db_user" -d postgres -t 2; then
        ready=1
        break
    fi
    sleep 0.5
done
# Seen when a server was just killed: its pid still answers `pg_ctl status` until it is reaped.
((ready)) || die 1 "server for $data_dir not accepting TCP connections on 127.0.0.1:$port after 30s;" \
    "if it just crashed or was killed, run '$0 up $state_dir' again; see $log_file"

# 7. The database, if missing. -X: ignore any ~/.psqlrc; -d postgres: the maintenance database.
psql_cmd=("$bin_dir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$db_user" -d postgres)
exists="$("${psql_cmd[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='$db_name'")" ||
    die 1 "could not query 127.0.0.1:$port as $db_user; see $log_file"
if [ "$exists" != 1 ]; then
    say "creating database $db_name"
    "${psql_cmd[@]}" -c "CREATE DATABASE $db_name" >&2 || die 1 "CREATE DATABASE $db_name failed"
fi

echo "$url"
