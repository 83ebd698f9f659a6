#!/usr/bin/env bash
# A local Redis server for tests and development, listening on 127.0.0.1 only.
#
#   bash scripts/redis.sh install|start|stop|status|url
#
#   XMR_REDIS_PORT     TCP port (default 16379)
#   XMR_SERVICES_DIR   state folder (default <repo>/.work/services); Redis keeps its
#                      pid file and log under $XMR_SERVICES_DIR/redis (or redis-<port> off 16379)
#   XMR_REDIS_PERSIST  1: append-only file, fsync on every write, so queued tasks survive a
#                      restart (what a broker in production needs); default 0: memory only
#
# Without XMR_REDIS_PERSIST=1 the data lives in memory only and is gone after `stop`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${XMR_REDIS_PORT:-16379}"
SERVICES_DIR="${XMR_SERVICES_DIR:-$REPO/.work/services}"
STATE_DIR="$SERVICES_DIR/redis"
[[ "$PORT" == 16379 ]] || STATE_DIR="$SERVICES_DIR/redis-$PORT"
if [[ "${XMR_REDIS_PERSIST:-0}" == 1 ]]; then
    PERSIST=(--appendonly yes --appendfsync always)
else
    PERSIST=(--appendonly no)
fi
PIDFILE="$STATE_DIR/redis.pid"
LOGFILE="$STATE_DIR/redis.log"
START_TIMEOUT_S=20

SERVICE=redis
# shellcheck source=scripts/_lib.sh
source "$REPO/scripts/_lib.sh"

ping_ok() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == "PONG" ]]
}

# Prints the pid of the server this script started, if that process is still alive.
running_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    [[ -n "$pid" ]] && pid_alive "$pid" || return 1
    # Guard against a stale pid file whose pid now belongs to another program.
    grep -q 'redis-server' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

cmd_install() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    log "installing redis-server with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        redis-server >/dev/null
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
    log "installed $(redis-server --version | head -n 1)"
}

cmd_start() {
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run: bash scripts/redis.sh install"
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    if ping_ok; then
        die "port $PORT already answers PING but not from the server in $STATE_DIR; set XMR_REDIS_PORT"
    fi
    mkdir -p "$STATE_DIR"
    rm -f "$PIDFILE"  # stale after a crash
    redis-server \
        --daemonize yes \
        --bind 127.0.0.1 \
        --port "$PORT" \
        --protected-mode yes \
        --save '' \
        "${PERSIST[@]}" \
        --dir "$STATE_DIR" \
        --pidfile "$PIDFILE" \
        --logfile "$LOGFILE" \
        --databases 16
    local waited=0
    until ping_ok; do
        if ((waited >= START_TIMEOUT_S * 10)); then
            log "did not answer PING within ${START_TIMEOUT_S}s; last lines of $LOGFILE:"
            tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    log "started on 127.0.0.1:$PORT (pid $(running_pid || echo '?'))"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    kill -TERM "$pid"
    local waited=0
    while pid_alive "$pid"; do
        if ((waited >= 100)); then
            log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$PIDFILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)" && ping_ok; then
        log "running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    log "not running"
    return 1
}

cmd_url() {
    echo "redis://127.0.0.1:$PORT/0"
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
