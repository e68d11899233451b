#!/bin/bash
# a3fta scaling study: submits (or, with --local, runs here) three series of sweeps, one results
# file per member, for tools/scaling-report:
#
#   strong  a fixed grid on 1, 2, 4, ... MAX_NODES nodes: the config's grid times a seed axis of
#           S values (SEED_KEY = 0 .. S-1; S = --strong-seeds, default the rank groups of
#           MAX_NODES nodes), the same points at every node count   -> OUTPUT_DIR/strong-nodesN/
#   weak    the grid grows with the nodes: the config's grid times a seed axis with one value
#           per rank group (N x GPUS_PER_NODE / ranks_per_run on N nodes): every group trains
#           the config's grid once, at any node count              -> OUTPUT_DIR/weak-nodesN/
#   dp      data-parallel scaling of one run: the config with its sweep emptied (one point,
#           sweep.grid/zip/points cleared) on 1, 2, 4, ... GPUs_PER_NODE x MAX_NODES GPUs, all
#           of them one group (parallel.ranks_per_run = GPUs)       -> OUTPUT_DIR/dp-gpusG/
#
#   jobs/scaling-study.sh [options] CONFIG MAX_NODES OUTPUT_DIR
#   jobs/scaling-study.sh --local MAX_RANKS [options] CONFIG OUTPUT_DIR
#
# Options:
#   --partition P        sbatch --partition=P
#   --gpus-per-node G    ranks per node, one per GPU (default 4); with --cpu: ranks per node
#   --cpu                CPU nodes: jobs/sweep-cpu.sbatch (no GPUs asked for), parallel.backend=cpu
#   --time T             sbatch --time=T (default: the job script's)
#   --series LIST        comma-separated subset of strong,weak,dp (default all three)
#   --seed-key KEY       the integer key the seed axis sweeps (default train.seed; it must not
#                        be swept by the config already)
#   --strong-seeds S     values of the seed axis in the strong series (default: as weak's on
#                        MAX_NODES nodes, so that both series end on the same grid)
#   --samples            keep the sample images (default --no-samples: only training is timed)
#   -o KEY=VALUE         one more config override for every member (repeatable)
#   --dry-run            print what would be submitted or run, check every member's grid
#                        (a3fta sweep --dry-run), write the manifest, run nothing
#   --local N            no Slurm: run the members one after another here with mpirun
#                        --oversubscribe on 1, 2, 4, ... N ranks (a "node" is one rank;
#                        members are named strong-ranksR, weak-ranksR, dp-ranksR), each
#                        one's log in its folder (sweep.log)
#
# Every member's folder is its sweep's output.dir (results.h5, point-NNNNNN/), and the
# Slurm job output goes there too (job-JOBID.out). OUTPUT_DIR/scaling.tsv lists the members
# (series, unit, count, ranks, ranks_per_run, folder); tools/scaling-report OUTPUT_DIR REPORT_DIR
# reads it. The sweep's own log line 'sweep: ... in T s' (in job-*.out or sweep.log) gives each
# member's time to solution.
#
# Environment: A3FTA_BIN (the a3fta binary, default a3fta on PATH; used here to resolve the
# config and check the grids, and by the jobs), MPIEXEC (--local; default mpirun), and for the
# jobs everything jobs/sweep.sbatch reads (A3FTA_LAUNCHER, A3FTA_SRUN_MPI, OMP_NUM_THREADS...).
# Exit: 0 submitted/ran everything, 1 a member failed to submit or run, 2 usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
a3fta=${A3FTA_BIN:-a3fta}
mpiexec=${MPIEXEC:-mpirun}

usage() {
  echo "usage: jobs/scaling-study.sh [options] CONFIG MAX_NODES OUTPUT_DIR" >&2
  echo "       jobs/scaling-study.sh --local MAX_RANKS [options] CONFIG OUTPUT_DIR   (--help: all)" >&2
  exit 2
}
die() { echo "scaling-study: $*" >&2; exit 2; }

partition="" gpus=4 cpu=0 time_limit="" series="strong,weak,dp" seed_key=train.seed
strong_seeds="" samples=0 dry=0 local_max="" overrides=()
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    --partition) partition=${2:?--partition needs a value}; shift 2 ;;
    --gpus-per-node) gpus=${2:?--gpus-per-node needs a value}; shift 2 ;;
    --cpu) cpu=1; shift ;;
    --time) time_limit=${2:?--time needs a value}; shift 2 ;;
    --series) series=${2:?--series needs a value}; shift 2 ;;
    --seed-key) seed_key=${2:?--seed-key needs a value}; shift 2 ;;
    --strong-seeds) strong_seeds=${2:?--strong-seeds needs a value}; shift 2 ;;
    --samples) samples=1; shift ;;
    -o | --override) overrides+=(-o "${2:?-o needs KEY=VALUE}"); shift 2 ;;
    --dry-run) dry=1; shift ;;
    --local) local_max=${2:?--local needs the largest rank count}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; positional+=("$@"); break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done

is_count() { [[ $1 =~ ^[1-9][0-9]{0,5}$ ]]; }
if [ -n "$local_max" ]; then
  [ ${#positional[@]} = 2 ] || usage
  config=${positional[0]} outdir=${positional[1]} max=$local_max
  is_count "$max" || die "--local expects a rank count >= 1, not '$max'"
  gpus=1 # one rank per "node"
else
  [ ${#positional[@]} = 3 ] || usage
  config=${positional[0]} max=${positional[1]} outdir=${positional[2]}
  is_count "$max" || die "MAX_NODES must be a count >= 1, not '$max'"
  is_count "$gpus" || die "--gpus-per-node expects a count >= 1, not '$gpus'"
fi
[ -r "$config" ] || die "cannot read the config $config"
[ -z "$strong_seeds" ] || is_count "$strong_seeds" ||
  die "--strong-seeds expects a count >= 1, not '$strong_seeds'"
for s in ${series//,/ }; do
  case $s in strong | weak | dp) ;; *) die "--series: '$s' is not strong, weak or dp" ;; esac
done
command -v "$a3fta" >/dev/null || die "$a3fta not found (set A3FTA_BIN)"
[ "$(id -u)" != 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ "$cpu" = 0 ] || overrides+=(-o parallel.backend=cpu)

# 1, 2, 4, ... up to and including max.
counts() {
  local n=1 out=()
  while [ "$n" -lt "$1" ]; do out+=("$n"); n=$((n * 2)); done
  out+=("$1")
  echo "${out[@]}"
}

# The config's resolved sweep.grid as a flow map body "k1: [..], k2: [..]" (one line per key in
# 'a3fta config show'), and its parallel.ranks_per_run.
resolved=$("$a3fta" config show "$config" "${overrides[@]}") ||
  die "$config does not resolve (a3fta config show failed; see above)"
grid=$(awk '/^sweep:/ {s = 1; next} /^[^ ]/ {s = 0}
            s && /^  grid: *\{\} *$/ {next}
            s && /^  grid:/ {g = 1; next} s && /^  [^ ]/ {g = 0}
            s && g && /^    [^ ]/ {sub(/^ +/, ""); printf "%s%s", sep, $0; sep = ", "}' <<<"$resolved")
rpr=$(awk '/^parallel:/ {p = 1; next} /^[^ ]/ {p = 0} p && /^  ranks_per_run:/ {print $2}' <<<"$resolved")
[ -n "$rpr" ] || die "cannot read parallel.ranks_per_run from 'a3fta config show $config'"
groups() { echo $(($1 * gpus / rpr > 0 ? $1 * gpus / rpr : 1)); } # rank groups on N nodes
strong_seeds=${strong_seeds:-$(groups "$max")}
case ", $grid" in *", $seed_key:"*) die "the config sweeps $seed_key already: pick another --seed-key" ;; esac
seeds() { # seeds K -> "[0, 1, ..., K-1]"
  local i list=""
  for ((i = 0; i < $1; i++)); do list+="${list:+, }$i"; done
  echo "[$list]"
}
grid_with_seeds() { echo "{${grid}${grid:+, }$seed_key: $(seeds "$1")}"; }

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
manifest=$outdir/scaling.tsv
printf 'series\tunit\tcount\tranks\tranks_per_run\tdir\n' >"$manifest"
sweep_flags=()
[ "$samples" = 1 ] || sweep_flags+=(--no-samples)
failed=0

# member SERIES UNIT COUNT RANKS RANKS_PER_RUN NODES TASKS_PER_NODE OVERRIDES...
member() {
  local series=$1 unit=$2 count=$3 ranks=$4 per_run=$5 nodes=$6 tasks=$7
  shift 7
  local name="$series-$unit$count" dir
  dir=$outdir/$name
  if [ $((ranks % per_run)) != 0 ]; then
    echo "scaling-study: $name: skipped: ranks_per_run $per_run does not divide $ranks ranks" >&2
    return 0
  fi
  mkdir -p "$dir"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$series" "$unit" "$count" "$ranks" "$per_run" "$name" >>"$manifest"
  local opts=("${overrides[@]}" "$@" -o "parallel.ranks_per_run=$per_run")
  local points
  points=$("$a3fta" sweep "$config" "${opts[@]}" -o "output.dir=$dir" --dry-run 2>&1 |
    sed -n 's/^# \([0-9]*\) points.*/\1/p') || true
  [ -n "$points" ] || {
    echo "scaling-study: $name: the sweep does not check out:" >&2
    "$a3fta" sweep "$config" "${opts[@]}" -o "output.dir=$dir" --dry-run >&2 || true
    failed=1
    return 0
  }
  if [ -n "$local_max" ]; then
    local cmd=("$mpiexec" --oversubscribe -np "$ranks" "$a3fta" sweep "$config" "${opts[@]}"
      -o "output.dir=$dir" "${sweep_flags[@]}")
    echo "scaling-study: $name: $points point(s) on $ranks rank(s): ${cmd[*]}"
    [ "$dry" = 1 ] && return 0
    if "${cmd[@]}" >"$dir/sweep.log" 2>&1; then
      local summary
      summary=$(grep -h "sweep: .* done, .* in .* s; results in" "$dir/sweep.log" | tail -1)
      echo "  ${summary#*] }"
      case $summary in
        *" 0 failed, 0 pending"*) ;;
        *) echo "scaling-study: $name: not every point is done (reasons: a3fta info $dir/results.h5)" >&2
          failed=1 ;;
      esac
    else
      echo "scaling-study: $name: the sweep failed; see $dir/sweep.log" >&2
      tail -5 "$dir/sweep.log" >&2
      failed=1
    fi
    return 0
  fi
  local script=$here/sweep.sbatch
  local sb=(sbatch --parsable --nodes="$nodes" --ntasks-per-node="$tasks" --job-name="a3fta-$name"
    --output="$dir/job-%j.out")
  if [ "$cpu" = 1 ]; then
    script=$here/sweep-cpu.sbatch
  else
    sb+=(--gpus-per-node="$tasks")
  fi
  [ -z "$partition" ] || sb+=(--partition="$partition")
  [ -z "$time_limit" ] || sb+=(--time="$time_limit")
  # sweep.sbatch CONFIG OUTPUT_DIR [a3fta sweep options...]
  local cmd=("${sb[@]}" "$script" "$config" "$dir" "${opts[@]}" "${sweep_flags[@]}")
  if [ "$dry" = 1 ]; then
    echo "scaling-study: $name: $points point(s) on $ranks rank(s): ${cmd[*]}"
    return 0
  fi
  local jid
  if jid=$("${cmd[@]}"); then
    echo "scaling-study: $name: $points point(s) on $ranks rank(s): job $jid"
  else
    echo "scaling-study: $name: sbatch failed: ${cmd[*]}" >&2
    failed=1
  fi
}

# Node counts (local: rank counts) of strong and weak; GPU counts (local: ranks) of dp.
unit=nodes dp_unit=gpus
[ -z "$local_max" ] || unit=ranks dp_unit=ranks
for s in ${series//,/ }; do
  case $s in
    strong)
      for n in $(counts "$max"); do
        member strong "$unit" "$n" $((n * gpus)) "$rpr" "$n" "$gpus" \
          -o "sweep.grid=$(grid_with_seeds "$strong_seeds")"
      done ;;
    weak)
      for n in $(counts "$max"); do
        member weak "$unit" "$n" $((n * gpus)) "$rpr" "$n" "$gpus" \
          -o "sweep.grid=$(grid_with_seeds "$(groups "$n")")"
      done ;;
    dp)
      for g in $(counts $((max * gpus))); do
        nodes=$(((g + gpus - 1) / gpus)) tasks=$((g < gpus ? g : gpus))
        if [ $((nodes * tasks)) != "$g" ]; then
          echo "scaling-study: dp-$dp_unit$g: skipped: $g GPUs are not whole nodes of $gpus" >&2
          continue
        fi
        member dp "$dp_unit" "$g" "$g" "$g" "$nodes" "$tasks" \
          -o 'sweep.grid={}' -o 'sweep.zip={}' -o 'sweep.points=[]'
      done ;;
  esac
done
echo "scaling-study: members listed in $manifest; report: tools/scaling-report $outdir REPORT_DIR"
exit "$failed"
