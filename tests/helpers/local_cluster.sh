#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost (munge + slurmctld + slurmd), for the Slurm tests.
#
#   tests/helpers/local_cluster.sh up      # idempotent; prints "export SLURM_CONF=..." last
#   tests/helpers/local_cluster.sh down    # cancels jobs, stops only the daemons it started
#
# Needs root (slurmd launches jobs as the submitting user) and Debian's packages
# slurmctld slurmd slurm-client munge; with MSM_SLURM_INSTALL=1 it apt-get installs them.
# Everything lives under $MSM_SLURM_DIR (default /tmp/msm-slurm), including slurm.conf, so
# /etc/slurm is never touched: clients need SLURM_CONF=$MSM_SLURM_DIR/slurm.conf.
# Settings that matter for tests (see docs/slurm.md): jobs start at once and requeued jobs
# rerun within seconds (batch_sched_delay=0, sched_interval=2, cred_expire=10), and an
# afterok dependent of a failed job is cancelled instead of pending forever
# (kill_invalid_depend). No cgroups: resource requests are bookkeeping only.
set -euo pipefail
D=${MSM_SLURM_DIR:-/tmp/msm-slurm}
CONF=$D/slurm.conf
export SLURM_CONF=$CONF
log() { printf '[local_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

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

up() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "${MSM_SLURM_INSTALL:-0}" = 1 ] || die "Slurm not installed (MSM_SLURM_INSTALL=1 installs it)"
    log "installing slurmctld slurmd slurm-client munge"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null
  fi
  mkdir -p "$D"/{state,spool,log,run}
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
      install -d -o munge -g munge -m 0700 /etc/munge
      runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
    cp /run/munge/munged.pid "$D/run/munged.pid"  # ours: `down` stops it
  fi
  local hw cpus mem
  hw=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  cat >"$CONF.new" <<EOF
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
DependencyParameters=kill_invalid_depend
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$((cpus > 8 ? cpus : 8)) Sockets=1 CoresPerSocket=$((cpus > 8 ? cpus : 8)) ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$CONF.new" "$CONF"; then
    stop "$D/run/slurmd-localhost.pid" slurmd
    stop "$D/run/slurmctld.pid" slurmctld
    mv "$CONF.new" "$CONF"
  else
    rm -f "$CONF.new"
  fi
  if ! alive "$D/run/slurmctld.pid" slurmctld; then
    rm -rf "$D/state" && mkdir -p "$D/state"
    slurmctld -f "$CONF" || die "slurmctld failed; see $D/log/slurmctld.log"
  fi
  for _ in $(seq 300); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
  scontrol ping | grep -q 'is UP' || die "slurmctld does not answer; see $D/log/slurmctld.log"
  if ! alive "$D/run/slurmd-localhost.pid" slurmd; then
    mkdir -p "$D/spool/localhost"
    slurmd -f "$CONF" -N localhost || die "slurmd failed; see $D/log/slurmd-localhost.log"
  fi
  for _ in $(seq 600); do
    sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)$' && break
    sleep 0.1
  done
  sinfo -h -N -o '%T' | grep -qE '^(idle|mixed|allocated)$' \
    || die "node not ready: $(sinfo -h -N -o '%N %T')"
  log "cluster up (conf $CONF, logs $D/log)"
  echo "export SLURM_CONF=$CONF"
}

down() {
  if alive "$D/run/slurmctld.pid" slurmctld; then
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
  fi
  stop "$D/run/slurmd-localhost.pid" slurmd
  stop "$D/run/slurmctld.pid" slurmctld
  [ -e "$D/run/munged.pid" ] && stop "$D/run/munged.pid" munged
  log "cluster down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
