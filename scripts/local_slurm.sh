#!/usr/bin/env bash
# scripts/local_slurm.sh [--stop]: a one-node SLURM cluster on this machine, for the
# tests marked `cluster` and for trying dlrun's SLURM paths (sweeps through
# hydra/launcher=submitit_slurm, requeue, srun). Idempotent: installs Debian's
# slurm-wlm and munge if missing (as root, apt-get), writes a config for this host
# (all its CPUs in one partition, `debug`), starts munged, slurmctld and slurmd unless
# they answer already, and waits until the node is idle. Prints one line, exits 0
# when the cluster answers, 1 (with the reason) when it cannot be started here.
#
# The config suits a container: processes tracked through /proc
# (ProctrackType=proctrack/linuxproc), no cgroup task plugin, jobs run as the
# submitting user, requeued jobs keep their job id and start again 11 s later.
set -euo pipefail

state=${SLURM_LOCAL_DIR:-/var/lib/dlrun-slurm}
conf_dir=/etc/slurm
fail() {
    echo "local_slurm.sh: $*" >&2
    exit 1
}

if [[ ${1:-} == --stop ]]; then
    pkill -x slurmd || true
    pkill -x slurmctld || true
    echo "local_slurm.sh: stopped slurmctld and slurmd"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [[ $(id -u) -eq 0 ]] || fail "slurm-wlm and munge are not installed and this is not root; install them first"
    command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get"
    echo "local_slurm.sh: installing slurm-wlm and munge"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } \
        >/tmp/local_slurm_apt.log 2>&1 || fail "apt-get install failed (see /tmp/local_slurm_apt.log)"
fi
[[ $(id -u) -eq 0 ]] || {
    sinfo -h >/dev/null 2>&1 && { echo "local_slurm.sh: a cluster answers already"; exit 0; }
    fail "starting the daemons needs root"
}

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$conf_dir" "$state/ctld" "$state/d" /var/log/slurm /run/munge
config="ClusterName=dlrun
SlurmctldHost=$host
AuthType=auth/munge
# A requeued job waits this long (plus one second) before it starts again; default 120.
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
if [[ ! -f $conf_dir/slurm.conf ]] || [[ $(cat "$conf_dir/slurm.conf") != "$config" ]]; then
    printf '%s\n' "$config" >"$conf_dir/slurm.conf"
    restart=1
else
    restart=0
fi

# munge: one key, one daemon.
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "/usr/sbin/munged --force" 2>/dev/null || /usr/sbin/munged --force ||
        fail "munged did not start"
    sleep 1
    munge -n | unmunge >/dev/null 2>&1 || fail "munge does not answer after starting munged"
fi

if ((restart)); then
    pkill -x slurmd || true
    pkill -x slurmctld || true
    for _ in $(seq 100); do # they save their state first
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
        sleep 0.2
    done
fi
pgrep -x slurmctld >/dev/null || slurmctld || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
pgrep -x slurmd >/dev/null || slurmd || fail "slurmd did not start (see /var/log/slurm/slurmd.log)"

for _ in $(seq 60); do
    node_state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case $node_state in
        idle* | mixed* | allocated*)
            echo "local_slurm.sh: one-node cluster up on $host ($cpus CPUs, partition debug)"
            exit 0
            ;;
        down* | drain*)
            scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
            ;;
    esac
    sleep 1
done
fail "the node did not become idle in 60 s (state '${node_state:-none}'; see /var/log/slurm/)"
