#!/usr/bin/env bash
# The local Redis and PostgreSQL servers the tests use (127.0.0.1 only).
#
#   bash scripts/services.sh up       install what is missing, start both (idempotent)
#   bash scripts/services.sh down     stop both
#   bash scripts/services.sh status   exit 0 only if both are running
#   eval "$(bash scripts/services.sh env)"   export XMR_TEST_REDIS_URL / XMR_TEST_DATABASE_URL
#
# Ports and folders: see scripts/redis.sh and scripts/postgres.sh (XMR_REDIS_PORT, XMR_PG_PORT,
# XMR_SERVICES_DIR).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REDIS=(bash "$HERE/redis.sh")
POSTGRES=(bash "$HERE/postgres.sh")

case "${1:-}" in
    up)
        "${REDIS[@]}" install
        "${REDIS[@]}" start
        "${POSTGRES[@]}" install
        "${POSTGRES[@]}" start
        ;;
    down)
        "${REDIS[@]}" stop
        "${POSTGRES[@]}" stop
        ;;
    status)
        rc=0
        "${REDIS[@]}" status || rc=1
        "${POSTGRES[@]}" status || rc=1
        exit "$rc"
        ;;
    env)
        printf 'export XMR_TEST_REDIS_URL=%q\n' "$("${REDIS[@]}" url)"
        printf 'export XMR_TEST_DATABASE_URL=%q\n' "$("${POSTGRES[@]}" url)"
        ;;
    *)
        echo "usage: $0 up|down|status|env" >&2
        exit 2
        ;;
esac
