#!/usr/bin/env bash
# A real single-host Slurm cluster in a temporary folder, for tests: its own munged (own key
# and socket), slurmctld and slurmd on free ports, all state, spool, logs and pid files in
# the folder. Nothing outside the folder is read or written (no /etc/slurm, /etc/munge,
# /run/munge), so several clusters (two checkouts, a system Slurm) can run side by side.
#
# As a command:
#   cluster.sh start [DIR]   start a cluster (in DIR, or a new temporary folder); prints DIR
#   cluster.sh env DIR       prints 'export SLURM_CONF=...' lines, for eval
#   cluster.sh stop DIR      stops everything the cluster started, then removes DIR
#   cluster.sh logs DIR      prints the daemon logs
#   cluster.sh status DIR    sinfo and squeue of the cluster
#
# As a library (bash: source it, then):
#   slurm_cluster_start [DIR]   starts; unsets inherited SLURM_*, SBATCH_*, SRUN_* and
#                               SALLOC_* variables, sets SLURM_CLUSTER_DIR, SLURM_CLUSTER_MPI
#                               (pmix or none) and exports SLURM_CONF; returns non-zero (after
#                               printing the logs) when the node is not idle within
#                               SLURM_CLUSTER_START_TIMEOUT seconds (default 30)
#   slurm_cluster_stop          stops and removes it; safe to call twice, and from a trap
#   slurm_cluster_logs          prints the daemon logs to stderr
#   slurm_cluster_wait_job JOBID [TIMEOUT_S]
#                               bounded wait for a job to end; prints 'STATE EXIT:SIG'
#                               (scontrol's view: this cluster has no accounting, so no
#                               sacct); 0 when COMPLETED 0:0, 124 (and scancel) on time-out
#   slurm_cluster_job_state JOBID   prints 'STATE EXIT:SIG' now
#
# Stopping never kills by process name (other tests or sessions may run Slurm): it cancels
# the cluster's jobs, asks slurmctld and slurmd to shut down, and then kills by pid what is
# left: the pids in the folder's pid files, every process whose working folder or an open
# file lies in the cluster folder (slurmstepd keeps the slurmd log open) or that was started
# with SLURM_CONF naming the cluster's slurm.conf, and their descendants; never the caller
# or its ancestors.
#
# Needs root (SlurmUser=root; slurmd must run as root to start jobs) and Debian's
# slurm-wlm and munge (plus libpmix-dev for --mpi=pmix; Open MPI's -dev package pulls it).

# Pid and job lists are split on purpose; SLURM_CLUSTER_MPI is for the caller.
# shellcheck disable=SC2086,SC2015,SC2034

SLURM_CLUSTER_START_TIMEOUT=${SLURM_CLUSTER_START_TIMEOUT:-30}
SLURM_CLUSTER_STOP_TIMEOUT=${SLURM_CLUSTER_STOP_TIMEOUT:-15}

_sc_say() { printf 'slurm-cluster: %s\n' "$*" >&2; }

# True when a TCP port is bound or connected locally (any state, IPv4 or IPv6).
_sc_port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v h=":$hex" 'substr($2, length($2) - 4) == h { f = 1 } END { exit !f }'
}

# Two consecutive free ports below the usual ephemeral range; prints the first.
_sc_free_port_pair() {
  local i p
  for i in $(seq 1 200); do
    p=$((12000 + (RANDOM * 32768 + RANDOM) % 20000))
    _sc_port_in_use "$p" || _sc_port_in_use $((p + 1)) || { echo "$p"; return 0; }
  done
  return 1
}

# The directory holding Slurm's plugins (mpi_pmix.so and friends), or nothing.
_sc_plugin_dir() {
  local d
  for d in /usr/lib/*/slurm-wlm /usr/lib/slurm-wlm /usr/lib64/slurm /usr/lib/slurm \
           /usr/local/lib/slurm; do
    [ -e "$d/select_cons_tres.so" ] && { echo "$d"; return 0; }
  done
  return 1
}

_sc_pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

_sc_read_pid() { [ -s "$1" ] && tr -dc '0-9' <"$1"; }

# Pids of this process and its ancestors: never to be killed.
_sc_self_and_ancestors() {
  local p=$BASHPID
  echo "$$"
  while [ -n "$p" ] && [ "$p" -gt 1 ] 2>/dev/null; do
    echo "$p"
    p=$(awk '{ print $4 }' "/proc/$p/stat" 2>/dev/null)
  done
}

# Pids of the cluster's processes: those in its pid files, those whose working folder or an
# open file lies in the cluster folder (daemons, slurmstepd, batch scripts), those started
# with SLURM_CONF naming its slurm.conf (job tasks, clients, a killed test's pollers), and
# all their descendants. Never the caller or its ancestors, nor, among those matched by
# SLURM_CONF only, their direct children (our own helpers and pipeline neighbours).
_sc_cluster_pids() {
  local dir=$1 p roots=() by_env=() all=() kids c i=0 mine
  for p in "$dir"/run/*.pid; do
    [ -e "$p" ] || continue
    p=$(_sc_read_pid "$p")
    _sc_pid_alive "$p" && roots+=("$p")
  done
  mapfile -t -O ${#roots[@]} roots < <(
    (find /proc/[0-9]*/fd /proc/[0-9]*/cwd -maxdepth 1 -lname "$dir/*"
     find /proc/[0-9]*/cwd -maxdepth 0 -lname "$dir") 2>/dev/null | cut -d/ -f3)
  mapfile -t by_env < <(
    (unset SLURM_CONF # so that grep does not find itself
     grep -lzxF "SLURM_CONF=$dir/slurm.conf" /proc/[0-9]*/environ) 2>/dev/null | cut -d/ -f3)
  mine=" $(_sc_self_and_ancestors | tr '\n' ' ') "
  for p in "${by_env[@]}"; do
    [[ "$mine" == *" $(awk '{ print $4 }' "/proc/$p/stat" 2>/dev/null) "* ]] || roots+=("$p")
  done
  for p in "${roots[@]}"; do
    [[ "$mine" == *" $p "* ]] || [[ " ${all[*]} " == *" $p "* ]] || all+=("$p")
  done
  while [ $i -lt ${#all[@]} ]; do
    kids=$(cat /proc/"${all[$i]}"/task/*/children 2>/dev/null)
    for c in $kids; do
      [[ "$mine" == *" $c "* ]] || [[ " ${all[*]} " == *" $c "* ]] || all+=("$c")
    done
    i=$((i + 1))
  done
  for p in "${all[@]}"; do _sc_pid_alive "$p" && echo "$p"; done | sort -un
}

slurm_cluster_logs() {
  local dir=${1:-${SLURM_CLUSTER_DIR:-}} f
  [ -n "$dir" ] && [ -d "$dir/log" ] || return 0
  for f in "$dir"/log/*.log; do
    [ -e "$f" ] || continue
    printf '\n----- %s (last 60 lines) -----\n' "$f" >&2
    tail -n 60 "$f" >&2
  done
  printf -- '----- end of logs -----\n' >&2
}

# Writes slurm.conf for this host; ports and MPI plugin chosen by the caller.
_sc_write_conf() {
  local dir=$1 ctld_port=$2 slurmd_port=$3 mpi=$4
  local host cpus
  host=$(hostname -s 2>/dev/null || hostname)
  cpus=$(nproc 2>/dev/null || echo 2)
  # The smoke job asks for 2 tasks; config_overrides lets slurmd report what we configure.
  [ "$cpus" -ge 2 ] || cpus=2
  cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh for a throw-away single-host cluster.
ClusterName=a3fta$(printf '%04x%04x' $RANDOM $RANDOM)
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge-sock/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Schedule a submitted batch job at once (the default waits up to 3 s to batch them).
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=$mpi
MailProg=/bin/true
PlugStackConfig=$dir/plugstack.conf
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
TmpFS=$dir/tmp
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ReturnToService=2
# Short timeouts: a stuck job or daemon fails the test fast instead of hanging it.
SlurmctldTimeout=20
SlurmdTimeout=20
MessageTimeout=10
BatchStartTimeout=20
KillWait=5
UnkillableStepTimeout=20
OverTimeLimit=0
CompleteWait=0
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=10 DefaultTime=5 State=UP
EOF
  : >"$dir/plugstack.conf"
}

_sc_start_once() {
  local dir=$1 port mpi=$2 i d state
  port=$(_sc_free_port_pair) || { _sc_say "no free TCP port pair found"; return 1; }
  _sc_write_conf "$dir" "$port" $((port + 1)) "$mpi"
  export SLURM_CONF=$dir/slurm.conf
  local host
  host=$(hostname -s 2>/dev/null || hostname)
  slurmctld -c -f "$SLURM_CONF" </dev/null >>"$dir/log/slurmctld.out" 2>&1 ||
    { _sc_say "slurmctld failed to start"; return 1; }
  slurmd -N "$host" -f "$SLURM_CONF" </dev/null >>"$dir/log/slurmd.out" 2>&1 ||
    { _sc_say "slurmd failed to start"; return 1; }
  # Bounded wait for the node to come up idle.
  for i in $(seq 1 $((SLURM_CLUSTER_START_TIMEOUT * 5))); do
    state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1)
    [ "$state" = idle ] && {
      _sc_say "node $host idle after $((i / 5)).$((i % 5 * 2)) s (ports $port,$((port + 1)), MpiDefault=$mpi, $dir)"
      return 0
    }
    # Daemonised, they write their pid files at once; give up early when one has died.
    if [ "$i" -ge 10 ]; then
      for d in slurmctld slurmd; do
        _sc_pid_alive "$(_sc_read_pid "$dir/run/$d.pid")" || { _sc_say "$d is not running"; return 1; }
      done
    fi
    sleep 0.2
  done
  _sc_say "node not idle after ${SLURM_CLUSTER_START_TIMEOUT} s (state '${state:-unknown}')"
  timeout 5 sinfo -N -l >&2 2>&1
  return 1
}

# Stops clusters left behind by a test that was killed before its trap could run (ctest's
# timeout sends SIGKILL): those whose owner.pid names a process that is gone.
_sc_reap_stale() {
  local f owner
  for f in "${TMPDIR:-/tmp}"/a3fta-slurm.*/owner.pid; do
    [ -f "$f" ] || continue
    owner=$(_sc_read_pid "$f")
    [ -n "$owner" ] && ! _sc_pid_alive "$owner" || continue
    _sc_say "stopping a stale cluster in ${f%/owner.pid} (its test, pid $owner, is gone)"
    (slurm_cluster_stop "${f%/owner.pid}")
  done
}

slurm_cluster_start() {
  local dir=${1:-} mpi=pmix plugdir attempt f
  [ "$(id -u)" = 0 ] || { _sc_say "needs root (SlurmUser=root, slurmd starts jobs)"; return 77; }
  local b
  for b in munged slurmctld slurmd sinfo scontrol; do
    command -v "$b" >/dev/null || {
      _sc_say "$b not found: apt-get install slurm-wlm munge"
      return 77
    }
  done
  _sc_reap_stale
  # Running inside a job of another cluster, or with a user's sbatch/srun defaults set, the
  # inherited SLURM_*, SBATCH_*, SRUN_* and SALLOC_* variables would steer our commands.
  local v
  for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC)_'); do unset "$v"; done
  if [ -z "$dir" ]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-slurm.XXXXXX") || return 1
    echo "$$" >"$dir/owner.pid" # the test (or shell) that sourced us; see _sc_reap_stale
  else
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd)
  fi
  SLURM_CLUSTER_DIR=$dir
  chmod 755 "$dir" # munged wants every folder above its socket searchable by all
  # munge: key folder 700, key 400; socket folder 755 (clients must reach the socket).
  mkdir -p "$dir"/{munge,munge-sock,state,spool,tmp,run,log}
  chmod 700 "$dir/munge"
  chmod 755 "$dir/munge-sock"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge-sock/munge.socket" --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
    </dev/null >>"$dir/log/munged.out" 2>&1 || {
    _sc_say "munged failed to start"
    cat "$dir/log/munged.out" >&2
    slurm_cluster_logs "$dir"
    return 1
  }
  # Slurm's mpi_pmix plugin dlopens libpmix.so (the unversioned name, from libpmix-dev).
  plugdir=$(_sc_plugin_dir)
  if [ -z "$plugdir" ] || ! compgen -G "$plugdir/mpi_pmix*.so" >/dev/null; then
    mpi=none
    _sc_say "Slurm's mpi_pmix plugin not found: MpiDefault=none, so srun --mpi=pmix will fail (apt-get install slurm-wlm-basic-plugins)"
  elif ! compgen -G '/usr/lib/*/pmix2/lib/libpmix.so' >/dev/null &&
       ! compgen -G '/usr/lib*/libpmix.so' >/dev/null &&
       ! compgen -G '/usr/lib/*/libpmix.so' >/dev/null &&
       ! compgen -G '/usr/local/lib/libpmix.so' >/dev/null; then
    mpi=none
    _sc_say "libpmix.so not found: MpiDefault=none, so srun --mpi=pmix will fail (apt-get install libpmix-dev)"
  fi
  SLURM_CLUSTER_MPI=$mpi
  for attempt in 1 2 3; do
    _sc_start_once "$dir" "$mpi" && return 0
    # Another cluster may have taken our ports between the check and the bind: retry.
    if grep -qs 'Address already in use' "$dir"/log/*.log "$dir"/log/*.out; then
      _sc_say "port collision, retrying on other ports"
      _sc_stop_daemons "$dir"
      for f in "$dir"/log/slurm*; do mv "$f" "$f.attempt$attempt"; done
      rm -rf "$dir"/state/* "$dir"/spool/*
      continue
    fi
    break
  done
  _sc_say "cluster failed to start; daemon logs follow"
  slurm_cluster_logs "$dir"
  return 1
}

# slurm_cluster_job_state JOBID: prints the job's state (COMPLETED, RUNNING, ...) and exit
# code as 'STATE EXIT:SIGNAL', e.g. 'COMPLETED 0:0'.
slurm_cluster_job_state() {
  local info
  info=$(timeout 10 scontrol -o show job "$1" 2>/dev/null) || return 1
  printf '%s %s\n' "$(grep -o 'JobState=[^ ]*' <<<"$info" | cut -d= -f2)" \
    "$(grep -o ' ExitCode=[^ ]*' <<<"$info" | cut -d= -f2)"
}

# slurm_cluster_wait_job JOBID [TIMEOUT_S]: polls (every 0.2 s; 'sbatch --wait' polls every
# 2 to 10 s) until the job has ended, prints 'STATE EXIT:SIGNAL', and returns 0 when it
# COMPLETED with exit 0, 1 when it ended otherwise, and 124 (after scancel) when it did not
# end within TIMEOUT_S seconds (default 120).
slurm_cluster_wait_job() {
  local job=$1 limit=${2:-120} i st
  for i in $(seq 1 $((limit * 5))); do
    # Give up when the cluster or the calling script is gone (this loop may run in a
    # $(...) subshell that outlives a killed test).
    [ -f "${SLURM_CONF:-}" ] && kill -0 "$$" 2>/dev/null || { echo "cluster gone"; return 1; }
    st=$(slurm_cluster_job_state "$job")
    case "${st%% *}" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | \
        BOOT_FAIL | DEADLINE)
        echo "$st"
        [ "$st" = "COMPLETED 0:0" ]
        return
        ;;
    esac
    sleep 0.2
  done
  echo "${st:-unknown} (still not ended after $limit s: cancelled)"
  timeout 10 scancel "$job" >/dev/null 2>&1
  return 124
}

# Stops slurmctld and slurmd (not munged): scontrol shutdown, then a bounded wait for the
# pids their pid files held before (slurmctld removes its pid file before it has exited),
# then SIGKILL.
_sc_stop_daemons() {
  local dir=$1 i pids="" alive p
  for p in slurmctld slurmd; do
    p=$(_sc_read_pid "$dir/run/$p.pid")
    _sc_pid_alive "$p" && pids="$pids $p"
  done
  if [ -f "$dir/slurm.conf" ]; then
    SLURM_CONF=$dir/slurm.conf timeout 10 scontrol shutdown >/dev/null 2>&1
  fi
  for i in $(seq 1 $((SLURM_CLUSTER_STOP_TIMEOUT * 5))); do
    alive=""
    for p in $pids; do _sc_pid_alive "$p" && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.2
  done
  if [ -n "$alive" ]; then
    _sc_say "slurm daemons did not stop within ${SLURM_CLUSTER_STOP_TIMEOUT} s: killing$alive"
    kill -KILL $alive 2>/dev/null
  fi
  rm -f "$dir/run/slurmctld.pid" "$dir/run/slurmd.pid"
}

slurm_cluster_stop() {
  local dir=${1:-${SLURM_CLUSTER_DIR:-}} i pids jobs
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  case "$dir" in /*) ;; *) _sc_say "refusing to stop a relative folder '$dir'"; return 1 ;; esac
  [ -f "$dir/slurm.conf" ] || [ -d "$dir/munge" ] || {
    _sc_say "'$dir' is not a cluster folder"; return 1; }
  # Cancel jobs first: slurmstepd outlives slurmd and would keep running them.
  if [ -f "$dir/slurm.conf" ]; then
    jobs=$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
      SLURM_CONF=$dir/slurm.conf timeout 10 scancel $jobs >/dev/null 2>&1
      for i in $(seq 1 50); do
        [ -z "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  _sc_stop_daemons "$dir"
  # munged last (slurmctld needs it to shut down cleanly), by its pid.
  local mp
  mp=$(_sc_read_pid "$dir/run/munged.pid")
  if _sc_pid_alive "$mp"; then
    kill -TERM "$mp" 2>/dev/null
    for i in $(seq 1 25); do _sc_pid_alive "$mp" || break; sleep 0.2; done
  fi
  # Whatever of the cluster is still there (stray slurmstepd, job tasks): TERM, then KILL.
  pids=$(_sc_cluster_pids "$dir")
  if [ -n "$pids" ]; then
    _sc_say "killing leftover processes:"
    ps -o pid=,ppid=,args= -p "$(echo $pids | tr ' ' ,)" 2>/dev/null | cut -c1-160 | sed 's/^/    /' >&2
    kill -TERM $pids 2>/dev/null
    for i in $(seq 1 25); do
      pids=$(_sc_cluster_pids "$dir")
      [ -z "$pids" ] && break
      sleep 0.2
    done
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    sleep 0.2
  fi
  if [ -n "${A3FTA_SLURM_KEEP:-}" ]; then
    _sc_say "A3FTA_SLURM_KEEP is set: keeping $dir"
    rm -f "$dir/owner.pid"
  else
    rm -rf "$dir"
  fi
  [ "$dir" = "${SLURM_CLUSTER_DIR:-}" ] && unset SLURM_CLUSTER_DIR
  [ "${SLURM_CONF:-}" = "$dir/slurm.conf" ] && unset SLURM_CONF
  return 0
}

# Run as a command (not sourced).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cmd=${1:-}
  shift || true
  case "$cmd" in
    start)
      slurm_cluster_start "${1:-}" || { rc=$?; slurm_cluster_stop; exit $rc; }
      rm -f "$SLURM_CLUSTER_DIR/owner.pid" # lives on after this command: never stale-reaped
      echo "$SLURM_CLUSTER_DIR"
      ;;
    env)
      [ -n "${1:-}" ] && [ -f "$1/slurm.conf" ] || { _sc_say "usage: $0 env DIR"; exit 2; }
      d=$(cd "$1" && pwd)
      echo "export SLURM_CONF=$d/slurm.conf"
      echo "export SLURM_CLUSTER_DIR=$d"
      ;;
    stop)
      [ -n "${1:-}" ] || { _sc_say "usage: $0 stop DIR"; exit 2; }
      slurm_cluster_stop "$(cd "$1" 2>/dev/null && pwd || echo "$1")"
      ;;
    logs)
      slurm_cluster_logs "${1:?usage: $0 logs DIR}"
      ;;
    status)
      export SLURM_CONF=${1:?usage: $0 status DIR}/slurm.conf
      sinfo -N -l
      squeue
      ;;
    *)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      [ -z "$cmd" ] || [ "$cmd" = -h ] || [ "$cmd" = --help ] || exit 2
      ;;
  esac
fi
