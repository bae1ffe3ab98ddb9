#!/usr/bin/env bash
# A single-node SLURM with accounting on this Debian machine, for tests/test_slurm.py:
# munged, mariadbd, slurmdbd (+ `sacctmgr add cluster`), slurmctld, slurmd; returns once the
# node is idle. Needs root and apt. Exits non-zero with one line on stderr when something fails
# (.ci/run then fails CI: where root and apt exist, a cluster that does not come up is a fault).
# Safe to rerun: daemons already up are kept, and what a dead one left behind is cleared first.
set -euo pipefail

fail() { echo "slurm_up: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root"
command -v apt-get >/dev/null || fail "needs apt-get (Debian)"

export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null; then
    # Packages must not start their services (there is no slurm.conf yet); we start them below.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null || fail "apt-get install failed"
fi

host=$(hostname -s)
cluster=vlbench-ci
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/mysqld
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld

# Everything runs as root on one node; no cgroups (a container may not offer them).
# KillWait: the grace between SIGTERM and SIGKILL of a cancelled job (docs/sweeps.md).
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=$cluster
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=10
$(slurmd -C | head -1) NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

password=vlbench-ci
cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf

# needs_start PIDFILE NAME [LEFTOVER...]: true when no process NAME holds PIDFILE; then the pid file and
# the leftovers of an earlier run (sockets, saved state) are removed first. A pid file from an earlier boot
# may name a live process of another program (kill -0 succeeds), and a stale munge socket lock or saved
# slurmctld state (another ClusterName, old jobs) stops a fresh daemon: both once made CI skip every test.
needs_start() {
    local pidfile=$1 name=$2; shift 2
    [ -f "$pidfile" ] && [ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" = "$name" ] && return 1
    rm -rf "$pidfile" "$@"
}
retry() {  # retry SECONDS COMMAND...: until COMMAND succeeds, or fail
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $*"
        sleep 1
    done
}

[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 status=none
                                 chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
if needs_start /run/munge/munged.pid munged /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock; then
    runuser -u munge -- munged || fail "munged did not start"
fi
retry 20 munge -n

if needs_start /run/mysqld/mysqld.pid mariadbd /run/mysqld/mysqld.sock; then
    mysqld_safe --pid-file=/run/mysqld/mysqld.pid >/dev/null 2>&1 &
fi
retry 60 mysqladmin ping
mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || fail "cannot create the accounting database user"

if needs_start /run/slurmdbd.pid slurmdbd; then slurmdbd || fail "slurmdbd did not start"; fi
retry 60 sacctmgr -i show cluster
sacctmgr -n show cluster format=cluster | grep -qw "$cluster" || sacctmgr -i add cluster "$cluster" >/dev/null \
    || fail "sacctmgr add cluster failed"

if needs_start /run/slurmctld.pid slurmctld /var/spool/slurmctld/*; then slurmctld || fail "slurmctld did not start"; fi
retry 60 scontrol ping
if needs_start /run/slurmd.pid slurmd /var/spool/slurmd/*; then slurmd || fail "slurmd did not start"; fi
idle() { [ "$(sinfo -h -N -o %T | head -1)" = idle ]; }
retry 60 idle
echo "slurm_up: node $host idle, cluster $cluster with accounting"
