# Cluster mode of scripts/opensearch.sh (--nodes N): sourced by it, not run. Uses its variables
# (PORT, TRANSPORT_PORT, HEAP, HOME_DIR, BASE_DIR, NODES, OS_USER, START_TIMEOUT_S) and functions.
# shellcheck shell=bash

CLUSTER_DIR="$BASE_DIR/cluster-$PORT"

node_dir() { echo "$CLUSTER_DIR/node-$1"; }
node_http_port() { echo $((PORT + $1 - 1)); }
node_transport_port() { echo $((TRANSPORT_PORT + $1 - 1)); }

# Pid of cluster node $1 if it runs (an OpenSearch of this installation, from its pid file).
cluster_node_pid() {
    local pid home file
    file="$(node_dir "$1")/node.pid"
    [[ -f "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file" 2>/dev/null)"
    pid_alive "$pid" || return 1
    home="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^-Dopensearch\.path\.home=//p' | head -n 1)"
    [[ -n "$home" && "$(readlink -f "$home")" == "$(readlink -f "$HOME_DIR")" ]] || return 1
    echo "$pid"
}

# True if the cluster, asked through any running node, has all $NODES nodes and is yellow or green.
cluster_healthy() {
    local i body
    for ((i = 1; i <= NODES; i++)); do
        cluster_node_pid "$i" >/dev/null || continue
        body="$(curl -fsS -m 8 "http://127.0.0.1:$(node_http_port "$i")/_cluster/health?wait_for_nodes=$NODES&wait_for_status=yellow&timeout=3s" 2>/dev/null)" || continue
        if [[ "$body" == *'"timed_out":false'* ]]; then
            return 0
        fi
    done
    return 1
}

write_node_config() {
    local i="$1" dir conf seeds="" managers="" j
    dir="$(node_dir "$i")"
    conf="$dir/config"
    if [[ ! -f "$conf/jvm.options" ]]; then
        mkdir -p "$conf"
        cp -r "$HOME_DIR/config/." "$conf/"
        rm -f "$conf/opensearch.yml" "$conf/opensearch.keystore"
    fi
    mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
    if is_root; then chown -R "$OS_USER:" "$dir"; fi
    sed -i -E -e "s#(file=|ErrorFile=)[^ :]*/logs/#\\1$dir/logs/#" -e "s#(file=|ErrorFile=)logs/#\\1$dir/logs/#" \
        -e "s#HeapDumpPath=.*#HeapDumpPath=$dir/data#" "$conf/jvm.options"
    for ((j = 1; j <= NODES; j++)); do
        seeds+="${seeds:+, }\"127.0.0.1:$(node_transport_port "$j")\""
        managers+="${managers:+, }\"xmr-$PORT-node-$j\""
    done
    {
        echo "# Written by scripts/opensearch.sh --nodes $NODES at every start; edits are lost."
        echo "cluster.name: xmr-cluster-$PORT"
        echo "node.name: xmr-$PORT-node-$i"
        echo "network.host: 127.0.0.1"
        echo "http.port: $(node_http_port "$i")"
        echo "transport.port: $(node_transport_port "$i")"
        echo "discovery.seed_hosts: [$seeds]"
        echo "cluster.initial_cluster_manager_nodes: [$managers]"
        echo "path.data: $(yaml_quote "$dir/data")"
        echo "path.logs: $(yaml_quote "$dir/logs")"
        echo "cluster.routing.allocation.disk.threshold_enabled: false"
    } | as_user tee "$conf/opensearch.yml" >/dev/null
}

start_cluster_node() {
    local i="$1" dir java_home
    dir="$(node_dir "$i")"
    if cluster_node_pid "$i" >/dev/null; then
        return 0
    fi
    if port_open "$(node_http_port "$i")" || port_open "$(node_transport_port "$i")"; then
        die "node $i: port $(node_http_port "$i") or $(node_transport_port "$i") is in use by another program"
    fi
    java_home="$(find_java_home)"
    write_node_config "$i"
    rm -f "$dir/node.pid"
    printf '\n=== %s start node %s (heap %s)\n' "$(date -Is)" "$i" "$HEAP" | as_user tee -a "$dir/logs/startup.log" >/dev/null
    as_user env OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_PATH_CONF="$dir/config" \
        OPENSEARCH_TMPDIR="$dir/tmp" OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP -XX:-AlwaysPreTouch" \
        setsid "$HOME_DIR/bin/opensearch" -d -p "$dir/node.pid" >>"$dir/logs/startup.log" 2>&1 </dev/null ||
        {
            tail -n 25 "$dir/logs/startup.log" >&2
            die "node $i: bin/opensearch -d failed"
        }
    log "starting node $i of $NODES on http://127.0.0.1:$(node_http_port "$i")"
}

cluster_start() {
    ((NODES >= 2)) || die "--nodes must be at least 2 for a cluster"
    is_installed || cmd_install
    ensure_os_user "OpenSearch refuses to run as root"
    ensure_traversable "$BASE_DIR" "$BASE_DIR"
    mkdir -p "$CLUSTER_DIR"
    if is_root; then chown "$OS_USER:" "$CLUSTER_DIR"; fi
    local i start=$SECONDS
    for ((i = 1; i <= NODES; i++)); do
        start_cluster_node "$i"
    done
    until cluster_healthy; do
        if ((SECONDS - start >= START_TIMEOUT_S)); then
            for ((i = 1; i <= NODES; i++)); do
                log "node $i: last lines of its log:"
                tail -n 15 "$(node_dir "$i")/logs/xmr-cluster-$PORT.log" >&2 2>/dev/null || true
            done
            die "the $NODES-node cluster did not form within ${START_TIMEOUT_S}s"
        fi
        sleep 1
    done
    log "cluster of $NODES nodes up: $(cluster_urls)"
}

# Sends signal $1 to node $2 (all nodes without $2) and waits for it to exit.
cluster_signal() {
    local signal="$1" which="${2:-}" i pid waited
    for ((i = 1; i <= NODES; i++)); do
        [[ -z "$which" || "$which" == "$i" ]] || continue
        if pid="$(cluster_node_pid "$i")"; then
            kill "-$signal" "$pid" 2>/dev/null || true
            waited=0
            while pid_alive "$pid"; do
                if ((waited++ == 600)); then kill -KILL "$pid" 2>/dev/null || true; fi
                sleep 0.1
            done
            log "node $i (pid $pid) stopped with SIG$signal"
        fi
        rm -f "$(node_dir "$i")/node.pid"
    done
}

cluster_urls() {
    local i out=""
    for ((i = 1; i <= NODES; i++)); do
        out+="${out:+,}http://127.0.0.1:$(node_http_port "$i")"
    done
    echo "$out"
}

cluster_status() {
    local i rc=0 pid
    for ((i = 1; i <= NODES; i++)); do
        if pid="$(cluster_node_pid "$i")"; then
            log "node $i running (pid $pid) on http://127.0.0.1:$(node_http_port "$i")"
        else
            log "node $i not running"
            rc=1
        fi
    done
    cluster_healthy || rc=1
    return "$rc"
}

cluster_main() {
    case "${1:-}" in
        start) cluster_start ;;
        stop) cluster_signal TERM "${2:-}" ;;
        kill)
            [[ -n "${2:-}" ]] || die "kill needs a node number (1..$NODES)"
            cluster_signal KILL "$2"
            ;;
        status) cluster_status ;;
        url) cluster_urls ;;
        install) cmd_install ;;
        reset)
            cluster_signal TERM
            if [[ -d "$CLUSTER_DIR" ]]; then rm -rf "${CLUSTER_DIR:?}"; fi
            log "deleted $CLUSTER_DIR"
            ;;
        *)
            echo "usage: $0 --nodes N start|stop [I]|kill I|status|url|reset" >&2
            exit 2
            ;;
    esac
}
