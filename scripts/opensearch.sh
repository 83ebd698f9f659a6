#!/usr/bin/env bash
# A local OpenSearch (with the k-NN plugin) for tests and development, on 127.0.0.1 only: one node,
# or with --nodes N a cluster of N nodes.
#
#   bash scripts/opensearch.sh install|start|stop|status|url|reset|plugin
#   bash scripts/opensearch.sh --nodes N start|stop [I]|kill I|status|url|reset
#
# Cluster mode (--nodes N with N >= 2, or XMR_OPENSEARCH_NODES; scripts/_opensearch_cluster.sh):
# node I (1..N) listens on HTTP port PORT+I-1 and transport port TRANSPORT_PORT+I-1, with its own
# config, data and logs under $XMR_SERVICES_DIR/opensearch/cluster-<PORT>/node-I, in the cluster
# xmr-cluster-<PORT> (so it never joins the single node). start starts every node that is not
# running and waits until all N are in the cluster; stop [I] stops all nodes or node I; kill I sends
# node I SIGKILL (failure tests); url prints the nodes' URLs, comma-separated; reset stops all and
# deletes their data. The nodes share the single node's installation, plugin included.
#
# start installs first if needed; status exits 0 only if the node runs and the cluster is yellow or
# green; url prints http://127.0.0.1:<port>; reset stops the node and deletes its data (all indices).
# plugin builds our OpenSearch plugin opensearch-plugin/ (xmodal-rerank: the `xmodal_rerank` search
# response processor) with mvn if its zip is missing or older than its sources, (re)installs it into
# the distribution (installing that first if needed) and restarts the node if it was running; it does
# nothing when the installed plugin was built from the same zip (XMR_OPENSEARCH_PLUGIN_FORCE=1:
# reinstall anyway). install and start never install the plugin.
#
#   XMR_OPENSEARCH_PORT            HTTP port (default 19200)
#   XMR_OPENSEARCH_TRANSPORT_PORT  transport port (default 19300)
#   XMR_OPENSEARCH_HEAP            JVM heap, -Xms and -Xmx (default 1g; 512m per node of a cluster)
#   XMR_OPENSEARCH_NODES           nodes (default 1: the single node; same as --nodes N)
#   XMR_OPENSEARCH_VERSION         OpenSearch version (default 2.19.6, the newest 2.19 for which Maven
#                                  Central has both zips; the k-NN plugin is <version>.0)
#                                  3.x (e.g. 3.5.0, which needs Java 21+) lives apart, in
#                                  $XMR_SERVICES_DIR/opensearch-<version>; give it its own ports
#   XMR_OPENSEARCH_JAVA_HOME       JDK to run it with (default: the first JDK 11..23 for 2.x, 21..25
#                                  for 3.x, found among
#                                  OPENSEARCH_JAVA_HOME, JAVA_HOME, `java` on PATH, /usr/lib/jvm/*)
#   XMR_OPENSEARCH_OS_USER         system user that runs the node when invoked as root (default xmros)
#   XMR_OPENSEARCH_START_TIMEOUT   seconds to wait for a yellow cluster (default 120)
#   XMR_SERVICES_DIR               state folder (default <repo>/.work/services); everything lives in
#                                  $XMR_SERVICES_DIR/opensearch: downloads/, dist/, data/, logs/, tmp/
#
# The node is assembled from Maven Central artifacts (fetched with `mvn`, cached in downloads/):
#   org.opensearch.distribution.integ-test-zip:opensearch:<version>:zip   (core + transport-netty4 only)
#   org.opensearch.plugin:opensearch-knn:<version>.0:zip                  (installed with opensearch-plugin)
#   modules rebuilt from their published jars (the integ-test zip ships none of them):
#     lang-painless (needed by k-NN), analysis-common, mapper-extras, reindex (_delete_by_query etc.)
# The k-NN zip on Maven Central carries no native libraries: ALWAYS put `"engine": "lucene"` in
# knn_vector mappings. faiss (the default engine when none is named) and nmslib indices are accepted
# at creation, but the first flush of such an index throws UnsatisfiedLinkError, which kills the node;
# after that it dies again while recovering the index at every start (`reset` gets out of that).
#
# Plain HTTP, no security plugin, single-node discovery, disk watermarks disabled.
# OpenSearch refuses to run as root, so as root the node runs as $XMR_OPENSEARCH_OS_USER (created on
# first use), which owns dist/, data/, logs/ and tmp/.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODES="${XMR_OPENSEARCH_NODES:-1}"
while [[ "${1:-}" == --* ]]; do
    case "$1" in
        --nodes)
            NODES="${2:?--nodes needs a number}"
            shift 2
            ;;
        *)
            echo "unknown option $1" >&2
            exit 2
            ;;
    esac
done
if ! [[ "$NODES" =~ ^[1-9][0-9]*$ ]]; then
    echo "--nodes must be a positive integer, not $NODES" >&2
    exit 2
fi
VERSION="${XMR_OPENSEARCH_VERSION:-2.19.6}"
KNN_VERSION="$VERSION.0"
PORT="${XMR_OPENSEARCH_PORT:-19200}"
TRANSPORT_PORT="${XMR_OPENSEARCH_TRANSPORT_PORT:-19300}"
if ((NODES > 1)); then HEAP="${XMR_OPENSEARCH_HEAP:-512m}"; else HEAP="${XMR_OPENSEARCH_HEAP:-1g}"; fi
OS_USER="${XMR_OPENSEARCH_OS_USER:-xmros}"
START_TIMEOUT_S="${XMR_OPENSEARCH_START_TIMEOUT:-120}"
SERVICES_DIR="${XMR_SERVICES_DIR:-$REPO/.work/services}"
[[ "$SERVICES_DIR" == /* ]] || SERVICES_DIR="$PWD/$SERVICES_DIR"
BASE_DIR="$SERVICES_DIR/opensearch"
MAJOR="${VERSION%%.*}"
if [[ "$VERSION" != 2.19.6 ]]; then BASE_DIR="$SERVICES_DIR/opensearch-$VERSION"; fi
# OpenSearch 2.x needs the SecurityManager (removed in Java 24); 3.x needs Java 21 or newer.
if ((MAJOR >= 3)); then JAVA_MIN=21 JAVA_MAX=25; else JAVA_MIN=11 JAVA_MAX=23; fi
DOWNLOAD_DIR="$BASE_DIR/downloads/$VERSION"
DIST_DIR="$BASE_DIR/dist"
HOME_DIR="$DIST_DIR/opensearch-$VERSION"
DATA_DIR="$BASE_DIR/data"
LOG_DIR="$BASE_DIR/logs"
TMP_DIR="$BASE_DIR/tmp"
PID_FILE="$BASE_DIR/opensearch.pid"
PORT_FILE="$BASE_DIR/opensearch.port"
STARTUP_LOG="$LOG_DIR/startup.log"
CLUSTER_NAME="xmr-local"
INSTALLED_MARKER="$HOME_DIR/.xmr-installed"
PLUGIN_SRC_DIR="$REPO/opensearch-plugin"
PLUGIN_NAME="xmodal-rerank"
PLUGIN_ZIP_DIR="$BASE_DIR/plugin-zips"
# The plugin is built for this OpenSearch version (3.x: Java 21 byte code), each in its own folder.
PLUGIN_BUILD_DIR="$PLUGIN_SRC_DIR/target"
PLUGIN_MVN_ARGS=()
if [[ "$VERSION" != 2.19.6 ]]; then
    PLUGIN_BUILD_DIR="$PLUGIN_SRC_DIR/target-$VERSION"
    PLUGIN_MVN_ARGS=("-Dopensearch.version=$VERSION" "-Dbuild.dir=$PLUGIN_BUILD_DIR")
    if ((MAJOR >= 3)); then PLUGIN_MVN_ARGS+=("-Dplugin.java.version=21"); fi
fi
PLUGIN_MARKER="$BASE_DIR/$PLUGIN_NAME.installed-sha256"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

# Modules rebuilt from jars: name|groupId:artifactId of the jar|plugin class|extended plugins.
MODULES=(
    "lang-painless|org.opensearch.plugin:lang-painless|org.opensearch.painless.PainlessPlugin|"
    "analysis-common|org.opensearch.plugin:analysis-common|org.opensearch.analysis.common.CommonAnalysisPlugin|lang-painless"
    "mapper-extras|org.opensearch.plugin:mapper-extras-client|org.opensearch.index.mapper.MapperExtrasPlugin|"
    "reindex|org.opensearch.plugin:reindex-client|org.opensearch.index.reindex.ReindexPlugin|"
)

SERVICE=opensearch
# shellcheck source=scripts/_lib.sh
source "$REPO/scripts/_lib.sh"

# Major version of the JDK in $1 (e.g. 17), or nothing.
java_major() {
    [[ -x "$1/bin/java" ]] || return 1
    "$1/bin/java" -XshowSettings:properties -version 2>&1 |
        sed -n -E 's/^ *java\.specification\.version = (1\.)?([0-9]+).*/\2/p' | head -n 1
}

# A JDK that OpenSearch 2.x runs on: 11 to 23 (24 removed the SecurityManager it relies on).
find_java_home() {
    local candidate major java_bin
    local -a candidates=()
    if [[ -n "${XMR_OPENSEARCH_JAVA_HOME:-}" ]]; then
        major="$(java_major "$XMR_OPENSEARCH_JAVA_HOME")" || true
        if [[ -n "$major" ]] && ((major >= JAVA_MIN && major <= JAVA_MAX)); then
            echo "$XMR_OPENSEARCH_JAVA_HOME"
            return 0
        fi
        die "XMR_OPENSEARCH_JAVA_HOME=$XMR_OPENSEARCH_JAVA_HOME is not a JDK $JAVA_MIN..$JAVA_MAX (OpenSearch $VERSION needs one)"
    fi
    [[ -n "${OPENSEARCH_JAVA_HOME:-}" ]] && candidates+=("$OPENSEARCH_JAVA_HOME")
    [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME")
    if java_bin="$(command -v java 2>/dev/null)"; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$java_bin")")")")
    fi
    for candidate in /usr/lib/jvm/*; do
        [[ -L "$candidate" ]] || candidates+=("$candidate")
    done
    for candidate in "${candidates[@]}"; do
        major="$(java_major "$candidate")" || continue
        if [[ -n "$major" ]] && ((major >= JAVA_MIN && major <= JAVA_MAX)); then
            echo "$candidate"
            return 0
        fi
    done
    die "no JDK $JAVA_MIN..$JAVA_MAX found (OpenSearch $VERSION needs one); set XMR_OPENSEARCH_JAVA_HOME"
}

# Maven project whose `dependency:copy-dependencies` copies one artifact (and what it needs at
# run time, but not OpenSearch core, which lib/ has) into a folder.
write_pom() {
    local pom="$1" name="$2" group="$3" artifact="$4" version="$5" type="$6" out="$7"
    mkdir -p "$(dirname "$pom")"
    cat >"$pom" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/opensearch.sh to download artifacts; edits are lost. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>xmr.opensearch.download</groupId>
  <artifactId>$name</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$group</groupId>
      <artifactId>$artifact</artifactId>
      <version>$version</version>
      <type>$type</type>
      <exclusions>
        <exclusion><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>${DEPENDENCY_PLUGIN##*:}</version>
        <configuration>
          <outputDirectory>$out</outputDirectory>
          <includeScope>runtime</includeScope>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
EOF
}

# Downloads the distribution, the k-NN plugin and the module jars into $DOWNLOAD_DIR (once).
download_artifacts() {
    local done_marker="$DOWNLOAD_DIR/.complete"
    [[ -f "$done_marker" ]] && return 0
    command -v mvn >/dev/null 2>&1 || die "mvn not found (needed to download from Maven Central)"
    local maven_dir="$DOWNLOAD_DIR/maven" entry name ga modules_xml=""
    rm -rf "$DOWNLOAD_DIR"
    mkdir -p "$maven_dir"
    write_pom "$maven_dir/distribution/pom.xml" distribution org.opensearch.distribution.integ-test-zip \
        opensearch "$VERSION" zip "$DOWNLOAD_DIR"
    write_pom "$maven_dir/knn/pom.xml" knn org.opensearch.plugin opensearch-knn "$KNN_VERSION" zip \
        "$DOWNLOAD_DIR"
    modules_xml="<module>distribution</module><module>knn</module>"
    for entry in "${MODULES[@]}"; do
        IFS='|' read -r name ga _ _ <<<"$entry"
        write_pom "$maven_dir/module-$name/pom.xml" "module-$name" "${ga%%:*}" "${ga#*:}" "$VERSION" jar \
            "$DOWNLOAD_DIR/modules/$name"
        modules_xml+="<module>module-$name</module>"
    done
    cat >"$maven_dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>xmr.opensearch.download</groupId>
  <artifactId>all</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <modules>$modules_xml</modules>
</project>
EOF
    log "downloading OpenSearch $VERSION (integ-test zip), opensearch-knn $KNN_VERSION and module jars with mvn"
    if ! (cd "$maven_dir" && mvn -B -q -ntp -f pom.xml dependency:copy-dependencies >"$maven_dir/mvn.log" 2>&1); then
        tail -n 30 "$maven_dir/mvn.log" >&2 || true
        die "download failed (log: $maven_dir/mvn.log)"
    fi
    local zip
    for zip in "$DOWNLOAD_DIR/opensearch-$VERSION.zip" "$DOWNLOAD_DIR/opensearch-knn-$KNN_VERSION.zip"; do
        [[ -f "$zip" ]] || die "mvn did not produce $zip (log: $maven_dir/mvn.log)"
        unzip -tq "$zip" >/dev/null || die "$zip is not a valid zip file"
    done
    touch "$done_marker"
}

# Writes modules/<name> of the distribution in $1 from the downloaded jars.
assemble_module() {
    local home="$1" entry="$2" name ga class extended dir jar base
    IFS='|' read -r name ga class extended <<<"$entry"
    dir="$home/modules/$name"
    [[ -e "$dir" ]] && return 0
    mkdir -p "$dir"
    for jar in "$DOWNLOAD_DIR/modules/$name"/*.jar; do
        [[ -f "$jar" ]] || die "no jars downloaded for module $name"
        # Skip jars that lib/ already has (jar hell) and those of the module this one extends.
        base="$(basename "$jar" | sed -E 's/-[0-9][^-]*(-[A-Za-z0-9.]+)?\.jar$//')"
        if compgen -G "$home/lib/$base-[0-9]*.jar" >/dev/null; then continue; fi
        if [[ -n "$extended" ]] && compgen -G "$home/modules/$extended/$base-[0-9]*.jar" >/dev/null; then continue; fi
        cp "$jar" "$dir/"
    done
    local module_jar
    module_jar="$(compgen -G "$dir/${ga#*:}-$VERSION.jar")" || die "module $name: ${ga#*:}-$VERSION.jar missing"
    unzip -l "$module_jar" "${class//.//}.class" >/dev/null 2>&1 ||
        die "module $name: class $class not in $(basename "$module_jar") (OpenSearch $VERSION not supported)"
    cat >"$dir/plugin-descriptor.properties" <<EOF
description=OpenSearch module $name (assembled by scripts/opensearch.sh from Maven Central jars)
version=$VERSION
name=$name
classname=$class
java.version=11
opensearch.version=$VERSION
extended.plugins=$extended
has.native.controller=false
EOF
    case "$name" in
        lang-painless)
            cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // needed to generate runtime classes
  permission java.lang.RuntimePermission "createClassLoader";
  // needed to find the classloader to load whitelisted classes from
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF
            ;;
        reindex)
            cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // reindex opens socket connections using the rest client
  permission java.net.SocketPermission "*", "connect";
};
grant codeBase "${codebase.opensearch-rest-client}" {
  permission java.net.NetPermission "getProxySelector";
};
grant codeBase "${codebase.httpasyncclient}" {
  permission java.net.NetPermission "getProxySelector";
};
EOF
            ;;
    esac
}

is_installed() {
    [[ -f "$INSTALLED_MARKER" && -f "$HOME_DIR/plugins/opensearch-knn/plugin-descriptor.properties" &&
        -f "$HOME_DIR/modules/lang-painless/plugin-descriptor.properties" ]]
}

cmd_install() {
    if is_installed; then
        log "OpenSearch $VERSION with opensearch-knn $KNN_VERSION already installed in $HOME_DIR"
        return 0
    fi
    command -v unzip >/dev/null 2>&1 || die "unzip not found (apt-get install unzip)"
    local java_home
    java_home="$(find_java_home)"
    ensure_os_user "OpenSearch refuses to run as root"
    mkdir -p "$BASE_DIR" "$DIST_DIR"
    ensure_traversable "$BASE_DIR" "$BASE_DIR"
    download_artifacts

    local staging="$DIST_DIR/.staging-$VERSION" entry
    rm -rf "$staging" "$HOME_DIR"
    mkdir -p "$staging"
    unzip -q "$DOWNLOAD_DIR/opensearch-$VERSION.zip" -d "$staging"
    [[ -x "$staging/opensearch-$VERSION/bin/opensearch" ]] || die "unexpected layout of opensearch-$VERSION.zip"
    for entry in "${MODULES[@]}"; do
        assemble_module "$staging/opensearch-$VERSION" "$entry"
    done
    if is_root; then
        chown -R "$OS_USER:" "$DIST_DIR"
        chmod 755 "$DOWNLOAD_DIR" "$(dirname "$DOWNLOAD_DIR")"
        chmod 644 "$DOWNLOAD_DIR/opensearch-knn-$KNN_VERSION.zip"
    fi
    log "installing opensearch-knn $KNN_VERSION (Java $(java_major "$java_home") from $java_home)"
    if ! as_user env OPENSEARCH_JAVA_HOME="$java_home" "$staging/opensearch-$VERSION/bin/opensearch-plugin" \
        install --batch "file://$DOWNLOAD_DIR/opensearch-knn-$KNN_VERSION.zip" >"$staging/plugin-install.log" 2>&1; then
        tail -n 30 "$staging/plugin-install.log" >&2 || true
        die "opensearch-plugin install failed"
    fi
    as_user mv "$staging/opensearch-$VERSION" "$HOME_DIR"
    as_user touch "$INSTALLED_MARKER"
    rm -rf "$staging"
    log "installed OpenSearch $VERSION with opensearch-knn $KNN_VERSION in $HOME_DIR"
}

# True if the process exists and is not a zombie (PID 1 here may reap killed processes late).
# Prints the pid of this installation's running node, if any.
node_pid() {
    local pid home
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null)"
    pid_alive "$pid" || return 1
    # The pid may have been reused: it must be an OpenSearch node of this installation.
    home="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^-Dopensearch\.path\.home=//p' | head -n 1)"
    [[ -n "$home" && "$(readlink -f "$home")" == "$(readlink -f "$HOME_DIR")" ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if the cluster answers with status yellow or green within $1 seconds.
healthy() {
    local body
    body="$(curl -fsS -m "$(($1 + 5))" \
        "http://127.0.0.1:$PORT/_cluster/health?wait_for_status=yellow&timeout=${1}s" 2>/dev/null)" || return 1
    [[ "$body" == *'"status":"green"'* || "$body" == *'"status":"yellow"'* ]]
}

# What this start printed (stack frames left out), else the end of the node's log; and a hint when
# a faiss/nmslib index brought the node down.
print_log_tail() {
    local text
    text="$(awk '/^=== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$STARTUP_LOG" 2>/dev/null |
        grep -v -E '^[[:space:]]+(at |\.\.\. [0-9]+ more)|^===|^warning: no-jdk|^WARNING: .*([Ss]ecurity[Mm]anager|terminally deprecated|reporting this to)' |
        tail -n 25)" || true
    if [[ -z "$text" ]]; then
        text="$(tail -n 200 "$LOG_DIR/$CLUSTER_NAME.log" 2>/dev/null |
            grep -v -E '^[[:space:]]+(at |\.\.\. [0-9]+ more)' | tail -n 25)" || true
    fi
    if [[ -n "$text" ]]; then
        log "last lines of the node's output (full log: $LOG_DIR/$CLUSTER_NAME.log):"
        printf '%s\n' "$text" >&2
    fi
    if grep -q 'UnsatisfiedLinkError: no opensearchknn_' <<<"$text"; then
        log "HINT: an index uses the faiss or nmslib k-NN engine (the default when a knn_vector mapping names"
        log "no engine), whose native libraries this build lacks; its first flush kills the node, also while"
        log "recovering at start. Use \"engine\": \"lucene\". To start over: bash $0 reset (deletes all indices)."
    fi
}

wait_healthy() {
    local start=$SECONDS pid="" no_pid_since=$SECONDS
    while true; do
        if pid="$(node_pid)"; then
            no_pid_since=$SECONDS
            healthy 2 && return 0
        elif ((SECONDS - no_pid_since >= 90)); then  # (a loaded machine writes the pid file late)
            print_log_tail
            die "the node is not running (no live pid in $PID_FILE)"
        fi
        if [[ -f "$PID_FILE" && -z "$pid" ]] && ! pid_alive "$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null)"; then
            print_log_tail
            die "the node exited during startup"
        fi
        if ((SECONDS - start >= START_TIMEOUT_S)); then
            print_log_tail
            die "not healthy (yellow) on 127.0.0.1:$PORT after ${START_TIMEOUT_S}s"
        fi
        sleep 1
    done
}

yaml_quote() { printf "'%s'" "${1//\'/\'\'}"; }

write_config() {
    local extra=""
    # The integ-test zip has no security plugin; should one be installed, switch it off.
    if [[ -d "$HOME_DIR/plugins/opensearch-security" ]]; then
        extra="plugins.security.disabled: true"
    fi
    # bin/opensearch runs in $HOME_DIR: point the relative paths of jvm.options (GC log, fatal error
    # logs, heap dumps) at logs/ and data/ (idempotent: the replacements are absolute paths).
    as_user sed -i -E -e "s#(file=|ErrorFile=)logs/#\\1$LOG_DIR/#" -e "s#HeapDumpPath=data\$#HeapDumpPath=$DATA_DIR#" \
        "$HOME_DIR/config/jvm.options"
    as_user tee "$HOME_DIR/config/opensearch.yml" >/dev/null <<EOF
# Written by scripts/opensearch.sh at every start; edits are lost.
cluster.name: $CLUSTER_NAME
node.name: xmr-node-1
network.host: 127.0.0.1
http.port: $PORT
transport.port: $TRANSPORT_PORT
discovery.type: single-node
path.data: $(yaml_quote "$DATA_DIR")
path.logs: $(yaml_quote "$LOG_DIR")
# Tests on a nearly full disk must still be able to allocate shards.
cluster.routing.allocation.disk.threshold_enabled: false
$extra
EOF
}

cmd_start() {
    local pid
    if pid="$(node_pid)"; then
        local running_port
        running_port="$(cat "$PORT_FILE" 2>/dev/null || true)"
        if [[ -n "$running_port" && "$running_port" != "$PORT" ]]; then
            die "already running (pid $pid) on port $running_port, not $PORT; stop it first"
        fi
        wait_healthy
        log "already running (pid $pid) on http://127.0.0.1:$PORT"
        return 0
    fi
    is_installed || cmd_install
    if port_open "$PORT"; then
        die "port $PORT is already in use by another program; set XMR_OPENSEARCH_PORT"
    fi
    if port_open "$TRANSPORT_PORT"; then
        die "port $TRANSPORT_PORT is already in use by another program; set XMR_OPENSEARCH_TRANSPORT_PORT"
    fi
    local java_home
    java_home="$(find_java_home)"
    ensure_os_user "OpenSearch refuses to run as root"
    ensure_traversable "$BASE_DIR" "$BASE_DIR"
    mkdir -p "$DATA_DIR" "$LOG_DIR" "$TMP_DIR"
    if is_root; then
        chown "$OS_USER:" "$BASE_DIR"
        chown -R "$OS_USER:" "$DATA_DIR" "$LOG_DIR" "$TMP_DIR"
        [[ -e "$PID_FILE" ]] && chown "$OS_USER:" "$PID_FILE"
    fi
    if [[ -f "$PID_FILE" ]]; then
        log "removing stale $PID_FILE (pid $(tr -dc '0-9' <"$PID_FILE") is no running node)"
        rm -f "$PID_FILE"
    fi
    write_config
    echo "$PORT" >"$PORT_FILE"
    printf '\n=== %s start (heap %s, port %s)\n' "$(date -Is)" "$HEAP" "$PORT" | as_user tee -a "$STARTUP_LOG" >/dev/null
    # -XX:-AlwaysPreTouch: do not touch the whole heap at start (faster start, smaller RSS).
    # setsid: the node leaves the caller's session and process group.
    as_user env OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_PATH_CONF="$HOME_DIR/config" \
        OPENSEARCH_TMPDIR="$TMP_DIR" OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP -XX:-AlwaysPreTouch" \
        setsid "$HOME_DIR/bin/opensearch" -d -p "$PID_FILE" >>"$STARTUP_LOG" 2>&1 </dev/null ||
        { print_log_tail; die "bin/opensearch -d failed"; }
    log "starting OpenSearch $VERSION on http://127.0.0.1:$PORT (heap $HEAP, logs in $LOG_DIR)"
    wait_healthy
    log "started (pid $(node_pid)) on http://127.0.0.1:$PORT"
}

cmd_stop() {
    local pid waited=0
    if ! pid="$(node_pid)"; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while pid_alive "$pid"; do
        if ((waited == 600)); then
            log "pid $pid still alive after 60s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        elif ((waited >= 700)); then
            die "pid $pid does not exit"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(node_pid)" && healthy 2; then
        log "running (pid $pid) on http://127.0.0.1:$PORT"
        return 0
    fi
    if [[ -n "${pid:-}" ]]; then
        log "pid $pid is running but the cluster on 127.0.0.1:$PORT is not healthy (yet)"
    else
        log "not running"
    fi
    return 1
}

# Stops the node and deletes all its data (every index); the installation stays.
cmd_reset() {
    cmd_stop
    [[ -n "$DATA_DIR" && -d "$DATA_DIR" ]] && rm -rf "${DATA_DIR:?}"
    log "deleted $DATA_DIR (all indices); start creates an empty one"
}

cmd_url() {
    echo "http://127.0.0.1:$PORT"
}

# The newest plugin zip that mvn built in opensearch-plugin/target, if any.
plugin_zip() {
    local zip
    # shellcheck disable=SC2012  # names are ours: xmodal-rerank-<version>.zip
    zip="$(ls -t "$PLUGIN_BUILD_DIR/$PLUGIN_NAME"-*.zip 2>/dev/null | head -n 1)" || true
    [[ -n "$zip" && -f "$zip" ]] && echo "$zip"
}

plugin_installed() { [[ -f "$HOME_DIR/plugins/$PLUGIN_NAME/plugin-descriptor.properties" ]]; }

# Builds (if needed) and (re)installs opensearch-plugin/ into the distribution.
cmd_plugin() {
    [[ -f "$PLUGIN_SRC_DIR/pom.xml" ]] || die "no $PLUGIN_SRC_DIR/pom.xml"
    local zip stale=""
    zip="$(plugin_zip)" || true
    if [[ -z "$zip" ]]; then
        stale="no zip built yet"
    elif [[ -n "$(find "$PLUGIN_SRC_DIR/pom.xml" "$PLUGIN_SRC_DIR/src" -newer "$zip" -print -quit 2>/dev/null)" ]]; then
        stale="sources changed since $(basename "$zip")"
    fi
    if [[ -n "$stale" ]]; then
        command -v mvn >/dev/null 2>&1 || die "mvn not found (needed to build $PLUGIN_SRC_DIR)"
        log "building $PLUGIN_NAME with mvn ($stale)"
        local build_log="$PLUGIN_BUILD_DIR/mvn-package.log" mvn_java=""
        mkdir -p "$PLUGIN_BUILD_DIR"
        if ((MAJOR >= 3)); then mvn_java="$(find_java_home)"; fi
        if ! env ${mvn_java:+JAVA_HOME="$mvn_java"} mvn -B -q -ntp -f "$PLUGIN_SRC_DIR/pom.xml" \
            ${PLUGIN_MVN_ARGS[@]+"${PLUGIN_MVN_ARGS[@]}"} package >"$build_log" 2>&1; then
            tail -n 40 "$build_log" >&2 || true
            die "mvn package failed (log: $build_log)"
        fi
        zip="$(plugin_zip)" || die "mvn package produced no $PLUGIN_BUILD_DIR/$PLUGIN_NAME-*.zip"
    fi
    unzip -tq "$zip" >/dev/null || die "$zip is not a valid zip file"
    local sha
    sha="$(sha256sum "$zip" | cut -d' ' -f1)"
    is_installed || cmd_install
    if [[ "${XMR_OPENSEARCH_PLUGIN_FORCE:-0}" != 1 ]] && plugin_installed &&
        [[ "$(cat "$PLUGIN_MARKER" 2>/dev/null)" == "$sha" ]]; then
        log "$PLUGIN_NAME from $(basename "$zip") is already installed"
        return 0
    fi
    local java_home was_running="" pid
    java_home="$(find_java_home)"
    ensure_os_user "OpenSearch refuses to run as root"
    ensure_traversable "$BASE_DIR" "$BASE_DIR"
    # A copy the node's user can read (the checkout may not be readable by it).
    mkdir -p "$PLUGIN_ZIP_DIR"
    local installed_zip="$PLUGIN_ZIP_DIR/$PLUGIN_NAME.zip"
    cp "$zip" "$installed_zip"
    chmod 755 "$PLUGIN_ZIP_DIR"
    chmod 644 "$installed_zip"
    if pid="$(node_pid)"; then
        was_running=1
        log "stopping the node (pid $pid) to install $PLUGIN_NAME"
        cmd_stop
    fi
    local cli="$HOME_DIR/bin/opensearch-plugin" cli_log="$PLUGIN_ZIP_DIR/plugin-install.log"
    : >"$cli_log"
    is_root && chown "$OS_USER:" "$cli_log"
    if plugin_installed || as_user env OPENSEARCH_JAVA_HOME="$java_home" "$cli" list 2>/dev/null | grep -qx "$PLUGIN_NAME"; then
        log "removing the installed $PLUGIN_NAME"
        as_user env OPENSEARCH_JAVA_HOME="$java_home" "$cli" remove "$PLUGIN_NAME" >>"$cli_log" 2>&1 || {
            tail -n 20 "$cli_log" >&2 || true
            [[ -n "$was_running" ]] && cmd_start
            die "opensearch-plugin remove $PLUGIN_NAME failed (log: $cli_log)"
        }
    fi
    rm -f "$PLUGIN_MARKER"
    log "installing $PLUGIN_NAME from $(basename "$zip")"
    if ! as_user env OPENSEARCH_JAVA_HOME="$java_home" "$cli" install --batch "file://$installed_zip" >>"$cli_log" 2>&1; then
        tail -n 30 "$cli_log" >&2 || true
        [[ -n "$was_running" ]] && cmd_start
        die "opensearch-plugin install failed (log: $cli_log); the node runs without $PLUGIN_NAME"
    fi
    echo "$sha" >"$PLUGIN_MARKER"
    log "installed $PLUGIN_NAME into $HOME_DIR/plugins/$PLUGIN_NAME"
    if [[ -n "$was_running" ]]; then
        cmd_start
    else
        log "the node is not running; start it with: bash $0 start"
    fi
}

if ((NODES > 1)); then
    # shellcheck source=scripts/_opensearch_cluster.sh
    source "$REPO/scripts/_opensearch_cluster.sh"
    cluster_main "$@"
    exit 0
fi

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) cmd_url ;;
    reset) cmd_reset ;;
    plugin) cmd_plugin ;;
    *)
        echo "usage: $0 install|start|stop|status|url|reset|plugin" >&2
        exit 2
        ;;
esac
