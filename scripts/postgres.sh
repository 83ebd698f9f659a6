#!/usr/bin/env bash
# A local PostgreSQL server for tests and development, listening on 127.0.0.1 only.
#
#   bash scripts/postgres.sh install|start|stop|status|url
#
#   XMR_PG_PORT       TCP port (default 15432)
#   XMR_SERVICES_DIR  state folder (default <repo>/.work/services); the cluster lives in
#                     $XMR_SERVICES_DIR/postgres (data/, run/ for the unix socket, postgres.log)
#
# Superuser `xmr`, database `xmr`, trust authentication (local test server only: any local
# user can connect as superuser over loopback or the socket). Durability is switched off
# (fsync=off): do not keep data here you cannot recreate.
# PostgreSQL refuses to run as root, so as root the server runs as the system user
# $XMR_PG_OS_USER (default xmrpg), created on first use.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${XMR_PG_PORT:-15432}"
SERVICES_DIR="${XMR_SERVICES_DIR:-$REPO/.work/services}"
BASE_DIR="$SERVICES_DIR/postgres"
PGDATA_DIR="$BASE_DIR/data"
SOCKET_DIR="$BASE_DIR/run"
LOGFILE="$BASE_DIR/postgres.log"
OS_USER="${XMR_PG_OS_USER:-xmrpg}"
DB_USER="xmr"
DB_NAME="xmr"
START_TIMEOUT_S=30

SERVICE=postgres
# shellcheck source=scripts/_lib.sh
source "$REPO/scripts/_lib.sh"

# Folder holding initdb: PATH first, then the newest /usr/lib/postgresql/*/bin.
find_bin_dir() {
    local initdb dir
    if initdb="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$initdb")"
        return 0
    fi
    dir="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' 2>/dev/null |
        sort -V | tail -n 1)"
    [[ -n "$dir" ]] || return 1
    echo "$dir"
}

# Full path of a PostgreSQL program: next to initdb first, then PATH.
pg_tool() {
    local name="$1" dir
    if dir="$(find_bin_dir)" && [[ -x "$dir/$name" ]]; then
        echo "$dir/$name"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        die "$name not found; run: bash scripts/postgres.sh install"
    fi
}

cmd_install() {
    if find_bin_dir >/dev/null; then
        return 0
    fi
    log "installing postgresql with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql >/dev/null
    find_bin_dir >/dev/null || die "initdb still not found after apt-get install postgresql"
    log "installed $("$(pg_tool postgres)" --version)"
}

# As root: the cluster folders belong to $OS_USER and every ancestor is traversable by it.
prepare_dirs() {
    mkdir -p "$BASE_DIR"
    if is_root; then
        ensure_traversable "$(dirname "$(readlink -f "$BASE_DIR")")" "$BASE_DIR"
        chown -R "$OS_USER:" "$BASE_DIR"
    fi
    chmod 700 "$BASE_DIR"
    as_user mkdir -p "$SOCKET_DIR"
    as_user chmod 700 "$SOCKET_DIR"
    # A unix socket path is limited to 107 bytes.
    local socket="$SOCKET_DIR/.s.PGSQL.$PORT"
    ((${#socket} <= 100)) || die "socket path $socket is too long; use a shorter XMR_SERVICES_DIR"
}

init_cluster() {
    local initdb version
    initdb="$(pg_tool initdb)"
    version="$("$(pg_tool postgres)" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')"
    if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
        if [[ "$(as_user cat "$PGDATA_DIR/PG_VERSION")" != "$version" ]]; then
            die "$PGDATA_DIR was made by PostgreSQL $(as_user cat "$PGDATA_DIR/PG_VERSION"), the binaries are $version;" \
                "remove $BASE_DIR to start over"
        fi
        return 0
    fi
    log "initdb (PostgreSQL $version) in $PGDATA_DIR"
    as_user rm -rf "$PGDATA_DIR"
    as_user "$initdb" --pgdata="$PGDATA_DIR" --username="$DB_USER" --auth=trust \
        --encoding=UTF8 --no-locale --no-instructions >"$BASE_DIR/initdb.log" 2>&1 ||
        { tail -n 20 "$BASE_DIR/initdb.log" >&2; die "initdb failed (log: $BASE_DIR/initdb.log)"; }
    if is_root; then chown "$OS_USER:" "$BASE_DIR/initdb.log"; fi
    # Settings that depend on the environment live in xmr.conf, rewritten at every start.
    printf "\n# xmodal-search local server\ninclude_if_exists = 'xmr.conf'\n" |
        as_user tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

write_conf() {
    local socket_dir="${SOCKET_DIR//\'/\'\'}"
    as_user tee "$PGDATA_DIR/xmr.conf" >/dev/null <<EOF
# Written by scripts/postgres.sh at every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$socket_dir'
max_connections = 200
# A disposable local server: trade durability for speed (CREATE DATABASE checkpoints).
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

# True if the process exists and is not a zombie (PID 1 of some containers reaps late).
# First line of a PostgreSQL lock file (postmaster.pid, .s.PGSQL.<port>.lock): the postmaster's pid.
lockfile_pid() {
    [[ -f "$1" ]] || return 1
    head -n 1 "$1" 2>/dev/null | tr -dc '0-9'
}

# Prints the postmaster's pid if this cluster's server is alive.
postmaster_pid() {
    local pid
    pid="$(lockfile_pid "$PGDATA_DIR/postmaster.pid")" && is_postgres "$pid" || return 1
    echo "$pid"
}

# True if the pid is a live PostgreSQL process (a stale lock file's pid may have been reused).
is_postgres() {
    [[ -n "$1" ]] && pid_alive "$1" && grep -q 'postgres\|postmaster' "/proc/$1/cmdline" 2>/dev/null
}

# Pids of live processes working in the data folder (server processes left behind by a crash).
cluster_processes() {
    local proc real_data
    real_data="$(readlink -f "$PGDATA_DIR")"
    for proc in /proc/[0-9]*; do
        if [[ "$(readlink "$proc/cwd" 2>/dev/null)" == "$real_data" ]] && pid_alive "${proc#/proc/}"; then
            echo "${proc#/proc/}"
        fi
    done
}

# After a crash the lock files name a dead (or zombie) postmaster, which the server may take
# for a live one: once its children are gone too, remove them.
remove_stale_lockfiles() {
    local lock pid waited=0
    [[ -f "$PGDATA_DIR/postmaster.pid" ]] || return 0
    while [[ -n "$(cluster_processes)" ]]; do
        if ((waited >= 100)); then
            die "processes of a crashed server still run in $PGDATA_DIR: $(cluster_processes | xargs)"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    for lock in "$PGDATA_DIR/postmaster.pid" "$SOCKET_DIR/.s.PGSQL.$PORT.lock"; do
        pid="$(lockfile_pid "$lock")" || continue
        if ! is_postgres "$pid"; then
            log "removing stale $(basename "$lock") (pid ${pid:-?} is no running server)"
            rm -f "$lock"
        fi
    done
}

accepts_connections() {
    "$(pg_tool pg_isready)" --quiet --host=127.0.0.1 --port="$PORT" --username="$DB_USER" \
        --dbname=postgres --timeout=2
}

psql_admin() {
    "$(pg_tool psql)" --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host=127.0.0.1 --port="$PORT" \
        --username="$DB_USER" --dbname=postgres
}

create_database() {
    psql_admin >/dev/null <<EOF
SELECT 'CREATE DATABASE $DB_NAME' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME')
\gexec
EOF
}

wait_ready() {
    local waited=0
    until accepts_connections; do
        if ((waited >= START_TIMEOUT_S * 10)); then
            log "does not accept connections on 127.0.0.1:$PORT after ${START_TIMEOUT_S}s; last lines of $LOGFILE:"
            tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

cmd_start() {
    local pg_ctl
    pg_ctl="$(pg_tool pg_ctl)"
    ensure_os_user "PostgreSQL refuses to run as root"
    local pid
    if pid="$(postmaster_pid)"; then
        wait_ready
        create_database
        log "already running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    if accepts_connections; then
        die "port $PORT already accepts connections but not from the cluster in $PGDATA_DIR; set XMR_PG_PORT"
    fi
    prepare_dirs
    init_cluster
    remove_stale_lockfiles
    write_conf
    # After a crash (kill -9), the old server's children may hold the shared memory for a moment
    # and the first start fails: retry a few times.
    local attempt
    for attempt in 1 2 3 4 5; do
        if as_user "$pg_ctl" --pgdata="$PGDATA_DIR" --log="$LOGFILE" --wait \
            --timeout="$START_TIMEOUT_S" start >/dev/null; then
            break
        fi
        if ((attempt == 5)); then
            log "pg_ctl start failed; last lines of $LOGFILE:"
            tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
            exit 1
        fi
        log "pg_ctl start failed (attempt $attempt), retrying"
        sleep 1
    done
    wait_ready
    create_database
    log "started on 127.0.0.1:$PORT ($("$(pg_tool postgres)" --version))"
}

cmd_stop() {
    if ! postmaster_pid >/dev/null; then
        log "not running"
        return 0
    fi
    as_user "$(pg_tool pg_ctl)" --pgdata="$PGDATA_DIR" --mode=fast --wait stop >/dev/null
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(postmaster_pid)" && accepts_connections; then
        log "running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    log "not running"
    return 1
}

cmd_url() {
    echo "postgresql+psycopg://$DB_USER@127.0.0.1:$PORT/$DB_NAME"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) cmd_url ;;
    *)
        echo "usage: $0 install|start|stop|status|url" >&2
        exit 2
        ;;
esac
