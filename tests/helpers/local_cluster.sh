#!/usr/bin/env bash
# A real Slurm cluster on localhost (munge + slurmctld + N slurmd "nodes"), for the Slurm tests.
#
#   tests/helpers/local_cluster.sh up      # idempotent; prints "export SLURM_CONF=..." last
#   tests/helpers/local_cluster.sh down    # cancels jobs, stops only the daemons it started
#   tests/helpers/local_cluster.sh status  # exit 0 when it is up (prints the conf path)
#
# Needs root (slurmd launches jobs as the submitting user) and Debian's packages
# slurmctld slurmd slurm-client munge; with MSM_SLURM_INSTALL=1 it apt-get installs them.
# Everything lives under $MSM_SLURM_DIR (default /tmp/msm-slurm), including slurm.conf, so
# /etc/slurm is never touched: clients need SLURM_CONF=$MSM_SLURM_DIR/slurm.conf.
#
# Shape, as on a production cluster:
# - MSM_SLURM_NODES (default 2) nodes node1..nodeN, one slurmd each on its own port
#   (`slurmd -N nodeK`); `up` adds one /etc/hosts line "127.0.0.1 node1 ... # <tag>" so the
#   names resolve (srun, torchrun rendezvous), `down` removes exactly that line;
# - partitions: `debug` (the default one, which the tests never use), `h100-long` (where the
#   tests' cluster file slurm/clusters/local.env sends jobs) and `cpu` (for CPU stages);
# - no DependencyParameters=kill_invalid_depend (stock clusters do not set it: the pipeline
#   passes --kill-on-invalid-dep=yes itself).
# Settings that make tests fast: jobs start at once and requeued jobs rerun within seconds
# (batch_sched_delay=0, sched_interval=2, cred_expire=10). No cgroups: resource requests are
# bookkeeping only. Concurrent `up`/`down` calls (several test sessions) are serialised.
set -euo pipefail
D=${MSM_SLURM_DIR:-/tmp/msm-slurm}
CONF=$D/slurm.conf
NODES=${MSM_SLURM_NODES:-2}
HOSTS_TAG="# msm-megatron local_cluster.sh nodes"
export SLURM_CONF=$CONF
log() { printf '[local_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
case "$NODES" in ''|*[!0-9]*|0) die "MSM_SLURM_NODES must be a positive integer" ;; esac
NODE_NAMES=$(seq -f 'node%g' 1 "$NODES" | tr '\n' ' ')
NODE_EXPR="node[1-$NODES]"
[ "$NODES" -eq 1 ] && NODE_EXPR=node1

# alive PIDFILE NAME: the pid is a live, non-zombie process called NAME
alive() {
  local pid st
  [ -s "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ "$st" != Z ] && [ "$st" != X ]
}
stop() {
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  local pid; pid=$(tr -dc 0-9 <"$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$1" "$2" || break; sleep 0.1; done
  alive "$1" "$2" && kill -KILL "$pid" 2>/dev/null
  rm -f "$1"
}
stop_slurmds() {
  local f
  for f in "$D"/run/slurmd-*.pid; do [ -e "$f" ] && stop "$f" slurmd; done
  return 0
}

# /etc/hosts is rewritten in place (it may be a bind mount, which a rename would not replace)
hosts_without_ours() { grep -vF "$HOSTS_TAG" /etc/hosts || true; }
hosts_add() {
  local line="127.0.0.1 $NODE_NAMES$HOSTS_TAG"
  grep -qxF "$line" /etc/hosts && return 0
  local rest; rest=$(hosts_without_ours)
  printf '%s\n%s\n' "$rest" "$line" >/etc/hosts
}
hosts_remove() {
  grep -qF "$HOSTS_TAG" /etc/hosts || return 0
  local rest; rest=$(hosts_without_ours)
  printf '%s\n' "$rest" >/etc/hosts
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null && return 0
  [ "${MSM_SLURM_INSTALL:-0}" = 1 ] || die "Slurm not installed (MSM_SLURM_INSTALL=1 installs it)"
  log "installing slurmctld slurmd slurm-client munge"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
  (munge -n | unmunge) >/dev/null 2>&1 && return 0
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged 9>&-
  for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
  cp /run/munge/munged.pid "$D/run/munged.pid"  # ours: `down` stops it
}

write_conf() {
  local hw cpus mem i=0 node
  hw=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  cpus=$((cpus > 8 ? cpus : 8))
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  cat <<EOF
ClusterName=msmtest
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
EOF
  for node in $NODE_NAMES; do
    echo "NodeName=$node NodeHostname=$node NodeAddr=127.0.0.1 Port=$((6818 + i))" \
         "CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"
    i=$((i + 1))
  done
  echo "PartitionName=debug Nodes=$NODE_EXPR Default=YES MaxTime=INFINITE State=UP"
  echo "PartitionName=h100-long Nodes=$NODE_EXPR Default=NO MaxTime=INFINITE State=UP"
  echo "PartitionName=cpu Nodes=$NODE_EXPR Default=NO MaxTime=INFINITE State=UP"
}

# nodes_ready: every node idle/mixed/allocated (sinfo lists a node once per partition)
nodes_ready() {
  local ok
  ok=$( (sinfo -h -N -o '%N %T' 2>/dev/null || true) | sort -u \
        | grep -cE ' (idle|mixed|allocated|completing)$' || true)
  [ "$ok" -eq "$NODES" ]
}

up() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  install_packages
  mkdir -p "$D"/{state,spool,log,run}
  exec 9>"$D/lock"  # the daemons are started with 9>&-: they must not inherit the lock
  flock 9
  start_munge
  hosts_add
  write_conf >"$CONF.new"
  if ! cmp -s "$CONF.new" "$CONF"; then
    stop_slurmds
    stop "$D/run/slurmctld.pid" slurmctld
    mv "$CONF.new" "$CONF"
  else
    rm -f "$CONF.new"
  fi
  if ! alive "$D/run/slurmctld.pid" slurmctld; then
    rm -rf "$D/state" && mkdir -p "$D/state"
    slurmctld -f "$CONF" 9>&- || die "slurmctld failed; see $D/log/slurmctld.log"
  fi
  for _ in $(seq 300); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
  scontrol ping | grep -q 'is UP' || die "slurmctld does not answer; see $D/log/slurmctld.log"
  local node
  for node in $NODE_NAMES; do
    alive "$D/run/slurmd-$node.pid" slurmd && continue
    mkdir -p "$D/spool/$node"
    slurmd -f "$CONF" -N "$node" 9>&- || die "slurmd $node failed; see $D/log/slurmd-$node.log"
  done
  for _ in $(seq 600); do nodes_ready && break; sleep 0.1; done
  nodes_ready || die "nodes not ready: $(sinfo -h -N -o '%N %P %T' | tr '\n' ' ')"
  log "cluster up: $NODES node(s) $NODE_EXPR (conf $CONF, logs $D/log)"
  echo "export SLURM_CONF=$CONF"
}

down() {
  mkdir -p "$D/run"
  exec 9>"$D/lock"
  flock 9
  if alive "$D/run/slurmctld.pid" slurmctld; then
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
  fi
  stop_slurmds
  stop "$D/run/slurmctld.pid" slurmctld
  [ -e "$D/run/munged.pid" ] && stop "$D/run/munged.pid" munged
  hosts_remove
  log "cluster down"
}

status() {
  alive "$D/run/slurmctld.pid" slurmctld && scontrol ping 2>/dev/null | grep -q 'is UP' \
    && nodes_ready || { log "not up"; return 1; }
  echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
