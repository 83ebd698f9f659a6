# Shared helpers of scripts/redis.sh, postgres.sh and opensearch.sh (sourced, not run).
# The sourcing script sets SERVICE (the name in messages) and, where a server must not run as
# root, OS_USER (the unprivileged system user that runs it).
# shellcheck shell=bash

log() { printf '%s: %s\n' "$SERVICE" "$*" >&2; }
die() {
    log "$*"
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

# Runs a command as $OS_USER when root (cwd / so that an unreadable cwd does not matter).
as_user() {
    if is_root; then
        (cd / && runuser -u "$OS_USER" -- "$@")
    else
        "$@"
    fi
}

# As root: create the system user $OS_USER if missing ($1: why, for the message).
ensure_os_user() {
    is_root || return 0
    id -u "$OS_USER" >/dev/null 2>&1 && return 0
    log "creating system user $OS_USER to run the server ($1)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$OS_USER"
}

# As root: make every folder on the path $1 (from / down) traversable by $OS_USER ($2: what it
# must reach, for the message).
ensure_traversable() {
    is_root || return 0
    local dir="" part
    local -a parts
    IFS=/ read -r -a parts <<<"$(readlink -f "$1")"
    for part in "${parts[@]}"; do
        [[ -n "$part" ]] || continue
        dir="$dir/$part"
        if ! runuser -u "$OS_USER" -- test -x "$dir"; then
            log "making $dir traversable (o+x) so that $OS_USER can reach $2"
            chmod o+x "$dir"
        fi
    done
}

# True if process $1 exists and is neither a zombie nor dead (PID 1 of some containers reaps late,
# so a killed server can linger as a zombie that `kill -0` still finds).
pid_alive() {
    local state
    [[ -n "${1:-}" ]] || return 1
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]]
}
