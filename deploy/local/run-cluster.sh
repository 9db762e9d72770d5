#!/usr/bin/env bash
# Runs a Ponder cluster as separate processes on this machine, with a real etcd: one
# etcd, N generators, M verifiers and K orchestrators (default 1), each its own process that
# registers in (or watches) etcd exactly as on Kubernetes. The step between `ponder up`
# (one process) and the Helm chart.
#
#   cargo build --release -p ponder-cli          # the `ponder` binary runs every role
#   deploy/local/run-cluster.sh --generators 3   # prints the orchestrator's address
#   ponder solve "(47+38)*3-19" --addr 127.0.0.1:50051
#
# Ctrl-C (or SIGTERM) stops every process (nodes first, gracefully, then etcd) and
# removes the working directory unless --keep is given. A node that dies meanwhile
# (e.g. killed on purpose to test failover) is reported and the rest keep running.
# Needs etcd (Debian/Ubuntu: apt-get install etcd-server; or set PONDER_ETCD_BIN).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/local/run-cluster.sh [options]

  --generators N         generator processes (default 2)
  --verifiers N          verifier processes (default 1; 0: none)
  --port PORT            orchestrator gRPC port on 127.0.0.1 (default 50051; with
                         --orchestrators K, ports PORT to PORT+K-1)
  --orchestrators K      orchestrator processes over the same pools (default 1)
  --recorded-generator DIR, --recorded-verifier DIR
                         serve these recordings on the recorded backend instead of the
                         models (--engine recorded:DIR; the orchestrators get
                         --allow-recorded): scale measurements only, docs/scaling.md
  --record-calls ROOT    model nodes record every answer they give (ponder node
                         --record-calls) into ROOT/generator and ROOT/verifier:
                         recordings the recorded backend serves (docs/scaling.md)
  --models DIR           models directory; its manifest.json names the default
                         generator and verifier (default: ./models)
  --generator-model P    generator model (default: DIR's default generator)
  --verifier-model P     verifier model, a PRM (default: DIR's default verifier)
  --bin PATH             the ponder binary (default: target/release/ponder)
  --etcd-bin PATH        etcd binary (default: $PONDER_ETCD_BIN or etcd)
  --cluster NAME         cluster name, the etcd key prefix (default: local)
  --metrics              serve /metrics on every node (free ports, listed at start)
  --pin                  run each model node on one core of its own (taskset, round
                         robin over this machine's cores, generators first), as a pod
                         with a one-core CPU limit; orchestrators and etcd float.
                         What the recorded backend's latency fit assumes
                         (docs/scaling.md, "N = 1, call by call")
  --generator-link FAULT the last generator is dialed through a link it does not know
                         of (deploy/local/link.py; its etcd connection is direct, so
                         it keeps its lease): SIGUSR1 to PID_LINK_GENERATOR switches the
                         link to FAULT (blackhole: no bytes pass, nothing is closed;
                         slow: 200 ms each way and 5% of chunks held a retransmission
                         timeout more), SIGUSR2 back (docs/reliability.md)
  --etcd-link            the orchestrators reach etcd through a black-hole link
                         (PID_LINK_ETCD, switched the same way)
  --log-format FMT       text or json (default: text)
  --work-dir DIR         etcd data, logs and cluster.env (default: a new temp dir)
  --keep                 keep the working directory on exit
  --timeout SECS         how long to wait for each process to be ready (default 120)
  -h, --help             this help

Every node gets the shared flags of docs/cluster.md through PONDER_* variables set in
the caller's environment (e.g. PONDER_MAX_BATCH=64, RUST_LOG=debug).
Writes WORK_DIR/cluster.env (PONDER_ADDR, PONDER_ETCD, PONDER_CLUSTER, PIDs) for scripts.
EOF
}

repo="$(cd "$(dirname "$0")/../.." && pwd)"

generators=2
verifiers=1
orchestrators=1
recorded_generator=""
recorded_verifier=""
record_calls=""
generator_link=""
etcd_link=0
port=50051
models="$repo/models"
generator_model=""
verifier_model=""
bin="$repo/target/release/ponder"
etcd_bin="${PONDER_ETCD_BIN:-etcd}"
cluster=local
metrics=0
pin=0
log_format=text
work=""
keep=0
timeout=120

need() { [ $# -ge 2 ] || { echo "run-cluster.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --generators) need "$@"; generators="$2"; shift 2 ;;
        --verifiers) need "$@"; verifiers="$2"; shift 2 ;;
        --port) need "$@"; port="$2"; shift 2 ;;
        --orchestrators) need "$@"; orchestrators="$2"; shift 2 ;;
        --recorded-generator) need "$@"; recorded_generator="$2"; shift 2 ;;
        --recorded-verifier) need "$@"; recorded_verifier="$2"; shift 2 ;;
        --record-calls) need "$@"; record_calls="$2"; shift 2 ;;
        --models) need "$@"; models="$2"; shift 2 ;;
        --generator-model) need "$@"; generator_model="$2"; shift 2 ;;
        --verifier-model) need "$@"; verifier_model="$2"; shift 2 ;;
        --bin) need "$@"; bin="$2"; shift 2 ;;
        --etcd-bin) need "$@"; etcd_bin="$2"; shift 2 ;;
        --cluster) need "$@"; cluster="$2"; shift 2 ;;
        --metrics) metrics=1; shift ;;
        --pin) pin=1; shift ;;
        --generator-link) need "$@"; generator_link="$2"; shift 2 ;;
        --etcd-link) etcd_link=1; shift ;;
        --log-format) need "$@"; log_format="$2"; shift 2 ;;
        --work-dir) need "$@"; work="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --timeout) need "$@"; timeout="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Paths given on the command line are relative to the caller's directory.
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
models="$(abs "$models")"; bin="$(abs "$bin")"
[ -z "$generator_model" ] || generator_model="$(abs "$generator_model")"
[ -z "$verifier_model" ] || verifier_model="$(abs "$verifier_model")"
[ -z "$work" ] || work="$(abs "$work")"
[ -z "$recorded_generator" ] || recorded_generator="$(abs "$recorded_generator")"
[ -z "$recorded_verifier" ] || recorded_verifier="$(abs "$recorded_verifier")"
[ -z "$record_calls" ] || record_calls="$(abs "$record_calls")"
case "$etcd_bin" in */*) etcd_bin="$(abs "$etcd_bin")" ;; esac

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_count "$generators" && [ "$generators" -ge 1 ] || { echo "--generators must be at least 1" >&2; exit 2; }
is_count "$verifiers" || { echo "--verifiers must be a number" >&2; exit 2; }
is_count "$port" || { echo "--port must be a number" >&2; exit 2; }
is_count "$orchestrators" && [ "$orchestrators" -ge 1 ] || { echo "--orchestrators must be at least 1" >&2; exit 2; }
if [ -n "$recorded_generator$recorded_verifier" ] && { [ -z "$recorded_generator" ] || { [ "$verifiers" -gt 0 ] && [ -z "$recorded_verifier" ]; }; }; then
    echo "--recorded-generator and --recorded-verifier go together (a cluster is recorded or not)" >&2; exit 2
fi
if [ -n "$record_calls" ] && [ -n "$recorded_generator" ]; then
    echo "--record-calls records the models; a recorded cluster has none to record" >&2; exit 2
fi
# A models directory is resolved by each node through its manifest (the role's default
# model, digests checked); `ponder models` lists it.
generator_model="${generator_model:-$models}"
verifier_model="${verifier_model:-$models}"
[ -x "$bin" ] || { echo "no ponder binary at $bin; build it: cargo build --release -p ponder-cli" >&2; exit 1; }
command -v "$etcd_bin" >/dev/null || { echo "no etcd ($etcd_bin); install it (apt-get install etcd-server) or pass --etcd-bin" >&2; exit 1; }
[ -e "$generator_model" ] || { echo "no generator model at $generator_model" >&2; exit 1; }
case "$generator_link" in
    ""|blackhole|slow) ;;
    *) echo "--generator-link must be blackhole or slow, not $generator_link" >&2; exit 2 ;;
esac
if [ "$verifiers" -gt 0 ] && [ ! -e "$verifier_model" ]; then
    echo "no verifier model at $verifier_model" >&2; exit 1
fi

# A port nothing listens on yet, from $1 upwards.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((o = 0; o < orchestrators; o++)); do
    if port_in_use "$((port + o))"; then
        echo "127.0.0.1:$((port + o)) is in use; pick another with --port" >&2; exit 1
    fi
done
# free_port: sets $PORT to a port nothing listens on (no subshell: it advances a counter).
# Below the kernel's ephemeral range: a port from inside it can be taken, between being
# picked and being bound, by any outgoing connection (seen once in CI: a verifier's
# metrics port was taken before it bound it, "Address already in use").
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] 2>/dev/null || ephemeral_low=32768
next_port=$((10000 + RANDOM % (ephemeral_low - 12000)))
free_port() {
    while port_in_use "$next_port"; do next_port=$((next_port + 1)); done
    PORT="$next_port"
    next_port=$((next_port + 1))
}

if [ -z "$work" ]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/ponder-cluster.XXXXXX")"
else
    mkdir -p "$work"
fi
mkdir -p "$work/logs"

names=()   # process names, in start order
pids=()    # their pids
stopping=0

# Stops processes [from, to) gracefully (SIGTERM), SIGKILL after `grace` seconds.
stop_range() {
    local from="$1" to="$2" grace="$3" i
    for ((i = from; i < to; i++)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    local deadline=$((SECONDS + grace))
    for ((i = from; i < to; i++)); do
        while kill -0 "${pids[i]}" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        if kill -0 "${pids[i]}" 2>/dev/null; then
            echo "${names[i]} (pid ${pids[i]}) did not stop in time; killing it"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        wait "${pids[i]}" 2>/dev/null || true
    done
}

stop_all() {
    [ "$stopping" = 1 ] && return
    stopping=1
    trap - INT TERM
    if [ "${#pids[@]}" -gt 0 ]; then
        echo "stopping the cluster"
        # Nodes first (SIGTERM: leave etcd, drain up to --drain-secs, exit), then etcd.
        stop_range 1 "${#pids[@]}" 30
        stop_range 0 1 10
    fi
    if [ "$keep" = 1 ]; then
        echo "kept $work (logs in $work/logs)"
    else
        rm -rf "$work"
    fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# Waits until `pattern` appears in the log of process $1 (index), or it dies.
wait_for() {
    local idx="$1" pattern="$2" log="$work/logs/${names[$1]}.log"
    local deadline=$((SECONDS + timeout))
    until grep -q -- "$pattern" "$log" 2>/dev/null; do
        if ! kill -0 "${pids[idx]}" 2>/dev/null; then
            echo "${names[idx]} exited before it was ready; its log ($log):" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "${names[idx]} not ready after ${timeout}s; its log ($log):" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}

start() {   # start NAME CMD...
    local name="$1"; shift
    "$@" >"$work/logs/$name.log" 2>&1 &
    names+=("$name")
    pids+=("$!")
}

# etcd on free loopback ports, with its own data directory, compacted as the chart's
# (periodic, keeping an hour of history; docs/scaling.md, "etcd under churn").
free_port; etcd_client="http://127.0.0.1:$PORT"
free_port; etcd_peer="http://127.0.0.1:$PORT"
start etcd "$etcd_bin" --name ponder-local --data-dir "$work/etcd" \
    --listen-client-urls "$etcd_client" --advertise-client-urls "$etcd_client" \
    --listen-peer-urls "$etcd_peer" --initial-advertise-peer-urls "$etcd_peer" \
    --initial-cluster "ponder-local=$etcd_peer" \
    --auto-compaction-mode periodic --auto-compaction-retention 1h
etcd_port="${etcd_client##*:}"
deadline=$((SECONDS + timeout))
until port_in_use "$etcd_port"; do
    kill -0 "${pids[0]}" 2>/dev/null || { echo "etcd exited; its log:" >&2; tail -n 20 "$work/logs/etcd.log" >&2; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "etcd did not start" >&2; exit 1; }
    sleep 0.1
done
echo "etcd listening on $etcd_client"

export PONDER_ETCD="$etcd_client" PONDER_CLUSTER="$cluster" PONDER_LOG_FORMAT="$log_format"
metrics_lines=()
node_args() {   # sets $ARGS: a node's listen address, id and, with --metrics, a metrics port
    local name="$1" listen="$2"
    ARGS=(--listen "$listen" --instance-id "$name")
    if [ "$metrics" = 1 ]; then
        free_port
        ARGS+=(--metrics-addr "127.0.0.1:$PORT")
        metrics_lines+=("$name http://127.0.0.1:$PORT/metrics")
    fi
}

# Model nodes on free ports (port 0: the node binds any free port and advertises it).
if [ -n "$recorded_generator" ]; then
    generator_source=(--engine "recorded:$recorded_generator")
    verifier_source=(--engine "recorded:$recorded_verifier")
    orchestrator_flags=(--allow-recorded)
else
    generator_source=(--model "$generator_model")
    verifier_source=(--model "$verifier_model")
    orchestrator_flags=()
    if [ -n "$record_calls" ]; then
        generator_source+=(--record-calls "$record_calls/generator")
        verifier_source+=(--record-calls "$record_calls/verifier")
    fi
fi
# --pin: the next model node's core. A process started under taskset sees one core, so
# the engine sizes its compute pool (and its wide pool: none) to it.
cores="$(nproc --all)"
next_core=0
pinned() {   # sets $PIN: the command prefix that puts the next model node on its core
    PIN=()
    if [ "$pin" = 1 ]; then
        PIN=(taskset -c "$next_core")
        next_core=$(((next_core + 1) % cores))
    fi
}
# start_link NAME FAULT TARGET: a link (deploy/local/link.py) to TARGET on a free port,
# passing bytes until SIGUSR1; sets $LINK to its address.
start_link() {
    free_port
    LINK="127.0.0.1:$PORT"
    start "$1" python3 "$repo/deploy/local/link.py" --listen-port "$PORT" --target "$3" --fault "$2"
    wait_for "$((${#pids[@]} - 1))" "link listening on "
}
for ((g = 1; g <= generators; g++)); do
    if [ -n "$generator_link" ] && [ "$g" = "$generators" ]; then
        free_port
        node_args "generator-$g" "127.0.0.1:$PORT"
        start_link link-generator "$generator_link" "127.0.0.1:$PORT"
        ARGS+=(--advertise "$LINK")
    else
        node_args "generator-$g" 127.0.0.1:0
    fi
    pinned
    start "generator-$g" "${PIN[@]+"${PIN[@]}"}" "$bin" node generator "${generator_source[@]}" "${ARGS[@]}"
done
for ((v = 1; v <= verifiers; v++)); do
    node_args "verifier-$v" 127.0.0.1:0
    pinned
    start "verifier-$v" "${PIN[@]+"${PIN[@]}"}" "$bin" node verifier "${verifier_source[@]}" "${ARGS[@]}"
done
for ((i = 1; i < ${#pids[@]}; i++)); do
    [ "${names[i]#link-}" = "${names[i]}" ] || continue
    role="${names[i]%-*}"
    wait_for "$i" "$role listening on "
    echo "${names[i]} $(grep -o -- "$role listening on .*" "$work/logs/${names[i]}.log" | head -n 1) (pid ${pids[i]})"
done

# An orchestrator turns SERVING (and prints its line) once a generator is registered.
addrs=()
if [ "$etcd_link" = 1 ]; then
    start_link link-etcd blackhole "127.0.0.1:$etcd_port"
    orchestrator_flags+=(--etcd "http://$LINK")
fi
for ((o = 0; o < orchestrators; o++)); do
    name=orchestrator
    [ "$orchestrators" = 1 ] || name="orchestrator-$((o + 1))"
    node_args "$name" "127.0.0.1:$((port + o))"
    start "$name" "$bin" node orchestrator "${orchestrator_flags[@]+"${orchestrator_flags[@]}"}" "${ARGS[@]}"
    addrs+=("127.0.0.1:$((port + o))")
done
for ((o = orchestrators; o >= 1; o--)); do
    wait_for "$((${#pids[@]} - o))" "orchestrator listening on "
done
addr_list="$(IFS=,; echo "${addrs[*]}")"

{
    echo "PONDER_ADDR=$addr_list"
    echo "PONDER_ETCD=$etcd_client"
    echo "PONDER_CLUSTER=$cluster"
    for ((i = 0; i < ${#pids[@]}; i++)); do
        echo "PID_$(echo "${names[i]}" | tr 'a-z-' 'A-Z_')=${pids[i]}"
    done
} >"$work/cluster.env"

for line in "${metrics_lines[@]+"${metrics_lines[@]}"}"; do echo "metrics: $line"; done
echo "logs: $work/logs   env: $work/cluster.env"
echo "ask it:  $bin solve \"(47+38)*3-19\" --addr 127.0.0.1:$port"
for a in "${addrs[@]}"; do echo "orchestrator listening on $a"; done
echo "(Ctrl-C stops the cluster)"

# Serve until Ctrl-C; report processes that die meanwhile.
alive=("${pids[@]}")
while :; do
    sleep 1
    for ((i = 0; i < ${#pids[@]}; i++)); do
        if [ -n "${alive[i]}" ] && ! kill -0 "${pids[i]}" 2>/dev/null; then
            status=0
            wait "${pids[i]}" 2>/dev/null || status=$?
            echo "${names[i]} (pid ${pids[i]}) exited with status $status; see $work/logs/${names[i]}.log"
            alive[i]=""
        fi
    done
done
