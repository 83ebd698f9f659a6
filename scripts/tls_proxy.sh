#!/usr/bin/env bash
# A TLS-terminating proxy with HTTP basic auth (Debian's nginx) in front of the local OpenSearch,
# on 127.0.0.1 only: what a secured OpenSearch looks like to our store (https + user/password +
# a private CA), for tests of XMR_OPENSEARCH_USER / _PASSWORD / _CA_CERTS.
#
#   bash scripts/tls_proxy.sh install|start|stop|status|url|ca|env
#
# start writes (once) a private CA and a server certificate for 127.0.0.1/localhost, an htpasswd
# file for the user, an nginx.conf, and starts nginx; url prints https://127.0.0.1:<port>; ca the
# CA certificate's path; env the XMR_TEST_TLS_* variables the tests read.
#
#   XMR_TLS_PROXY_PORT      HTTPS port (default 19443)
#   XMR_TLS_PROXY_UPSTREAM  what it forwards to (default http://127.0.0.1:19200, scripts/opensearch.sh)
#   XMR_TLS_PROXY_USER      basic-auth user (default xmr)
#   XMR_TLS_PROXY_PASSWORD  its password (default xmr-proxy-secret)
#   XMR_SERVICES_DIR        state folder (default <repo>/.work/services); files in tls-proxy/
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${XMR_TLS_PROXY_PORT:-19443}"
UPSTREAM="${XMR_TLS_PROXY_UPSTREAM:-http://127.0.0.1:19200}"
USER_NAME="${XMR_TLS_PROXY_USER:-xmr}"
PASSWORD="${XMR_TLS_PROXY_PASSWORD:-xmr-proxy-secret}"
SERVICES_DIR="${XMR_SERVICES_DIR:-$REPO/.work/services}"
[[ "$SERVICES_DIR" == /* ]] || SERVICES_DIR="$PWD/$SERVICES_DIR"
DIR="$SERVICES_DIR/tls-proxy"
PID_FILE="$DIR/nginx.pid"

SERVICE=tls-proxy
# shellcheck source=scripts/_lib.sh
source "$REPO/scripts/_lib.sh"

nginx_bin() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; }; }

cmd_install() {
    if [[ -n "$(nginx_bin)" ]]; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "nginx not found and no apt-get to install it"
    log "installing nginx-light (Debian)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 || {
        as_root apt-get update -qq >/dev/null 2>&1
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
    }
    [[ -n "$(nginx_bin)" ]] || die "nginx did not install"
}

write_files() {
    mkdir -p "$DIR/logs" "$DIR/tmp"
    if [[ ! -f "$DIR/server.crt" ]]; then
        log "writing a private CA and a certificate for 127.0.0.1 in $DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=xmr test CA" \
            -keyout "$DIR/ca.key" -out "$DIR/ca.crt" >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout "$DIR/server.key" -out "$DIR/server.csr" >/dev/null 2>&1
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$DIR/ext.cnf"
        openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
            -days 3650 -extfile "$DIR/ext.cnf" -out "$DIR/server.crt" >/dev/null 2>&1
    fi
    printf '%s:%s\n' "$USER_NAME" "$(openssl passwd -apr1 "$PASSWORD")" >"$DIR/htpasswd"
    local user_line=""
    is_root && user_line="user root;"
    cat >"$DIR/nginx.conf" <<EOF
# Written by scripts/tls_proxy.sh at every start; edits are lost.
$user_line
worker_processes 1;
pid $PID_FILE;
error_log $DIR/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log $DIR/logs/access.log;
    client_body_temp_path $DIR/tmp/body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;
    client_max_body_size 100m;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $DIR/server.crt;
        ssl_certificate_key $DIR/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            auth_basic "xmr OpenSearch";
            auth_basic_user_file $DIR/htpasswd;
            proxy_pass $UPSTREAM;
            proxy_set_header Authorization "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 120s;
        }
    }
}
EOF
}

running_pid() {
    local pid
    [[ -s "$PID_FILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    pid_alive "$pid" && grep -q nginx "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

cmd_start() {
    cmd_install
    if running_pid >/dev/null; then
        log "already running on https://127.0.0.1:$PORT"
        return 0
    fi
    write_files
    "$(nginx_bin)" -t -q -c "$DIR/nginx.conf" -p "$DIR" 2>"$DIR/logs/config-test.log" ||
        { cat "$DIR/logs/config-test.log" >&2; die "nginx rejected $DIR/nginx.conf"; }
    "$(nginx_bin)" -c "$DIR/nginx.conf" -p "$DIR"
    local waited=0
    until curl -fsS -o /dev/null --cacert "$DIR/ca.crt" -u "$USER_NAME:$PASSWORD" "https://127.0.0.1:$PORT/" 2>/dev/null; do
        ((waited++ < 100)) || die "no answer on https://127.0.0.1:$PORT (is $UPSTREAM up?)"
        sleep 0.2
    done
    log "started on https://127.0.0.1:$PORT -> $UPSTREAM (user $USER_NAME)"
}

cmd_stop() {
    local pid
    if pid="$(running_pid)"; then
        kill -QUIT "$pid"
        local waited=0
        while pid_alive "$pid" && ((waited++ < 100)); do sleep 0.1; done
        log "stopped"
    else
        log "not running"
    fi
    rm -f "$PID_FILE"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) if running_pid >/dev/null; then log "running on https://127.0.0.1:$PORT"; else log "not running"; exit 1; fi ;;
    url) echo "https://127.0.0.1:$PORT" ;;
    ca) echo "$DIR/ca.crt" ;;
    env)
        printf 'export XMR_TEST_TLS_URL=%q\n' "https://127.0.0.1:$PORT"
        printf 'export XMR_TEST_TLS_CA=%q\n' "$DIR/ca.crt"
        printf 'export XMR_TEST_TLS_USER=%q\n' "$USER_NAME"
        printf 'export XMR_TEST_TLS_PASSWORD=%q\n' "$PASSWORD"
        ;;
    *)
        echo "usage: $0 install|start|stop|status|url|ca|env" >&2
        exit 2
        ;;
esac
