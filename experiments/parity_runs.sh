#!/usr/bin/env bash
# Issue 12's learning curves on a 2-core CPU: the paper's code (benchmarks.reference_curves) and this project's
# Diffusion-QL (dql.train), 50k steps, evaluated every 10k with 10 episodes, the hopper-medium-replay row's gradient
# clip and a constant learning rate.
#
#   bash experiments/parity_runs.sh /path/to/Diffusion-Policies-for-Offline-RL [SEEDS]
#
# The runs (reference seed 0, ours seed 0, reference seed 1, ...) form one queue that two workers, one pinned to
# each core, take from in turn, so the faster side's core moves on to the slower side's seeds when its own are done.
# Each run trains in its own resumable folder under $PARITY_ROOT (default ~/parity: outside the checkout, whose work
# tree a new session lays anew), checkpointed every 2,000 updates; rerunning the script continues where it stopped
# (a folder holding a run on other data, e.g. the replay generated on another CPU, is refused). A finished run is
# copied, without its checkpoints, to experiments/results/dql-parity/curves/, and a run already there is skipped,
# so finished runs survive a change of machine once committed. Then
# `python -m experiments.parity_curves experiments/results/dql-parity/curves` writes the take-off steps and figure.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=${1:?usage: parity_runs.sh REFERENCE_CHECKOUT [SEEDS]}
SEEDS=${2:-0 1 2 3 4}
ROOT=${PARITY_ROOT:-$HOME/parity}
RESULTS=experiments/results/dql-parity/curves
DATA=gym:Hopper-v5/full-replay
SETTINGS=(--steps=50000 --eval_every=10000 --eval_episodes=10 --save_every=2000)
mkdir -p "$ROOT/logs"
CLAIMS=$(mktemp -d)  # this invocation's claims: a run is taken by the first worker to make its folder here
trap 'rm -rf "$CLAIMS"' EXIT

keep() {  # keep SRC DEST: the finished run folder, without checkpoints
  mkdir -p "$2"
  find "$1" -maxdepth 1 -type f ! -name checkpoint.pt -exec cp {} "$2"/ \;
}

train() {  # train CORE SIDE SEED
  local core=$1 side=$2 seed=$3
  if [[ $side == reference ]]; then
    OMP_NUM_THREADS=1 taskset -c "$core" python -m benchmarks.reference_curves --repo="$REPO" --dataset=$DATA \
      --seeds="$seed" "${SETTINGS[@]}" --workdir="$ROOT/reference" --set=grad_norm=4.0 --set=lr_decay=False
  else
    taskset -c "$core" python -m dql.train --algo=dql --dataset=$DATA --seed="$seed" "${SETTINGS[@]}" \
      --config.grad_norm=4.0 --config.lr_decay=False --workdir="$ROOT/dql/seed_$seed"
  fi
}

worker() {  # worker CORE: take the queue's unclaimed, unfinished runs in order
  local core=$1 side seed
  for seed in $SEEDS; do
    for side in reference dql; do
      [[ -f $RESULTS/$side/seed_$seed/summary.json ]] && continue
      mkdir "$CLAIMS/$side-$seed" 2>/dev/null || continue
      echo "== core $core: $side seed $seed ($(date -u +%FT%TZ))"
      if train "$core" "$side" "$seed"; then
        keep "$ROOT/$side/seed_$seed" "$RESULTS/$side/seed_$seed"
      else
        echo "== core $core: $side seed $seed failed (exit $?), see above"
      fi
    done
  done
}

worker 0 >> "$ROOT/logs/core0.log" 2>&1 &
worker 1 >> "$ROOT/logs/core1.log" 2>&1 &
echo "training in $ROOT; logs: $ROOT/logs/core{0,1}.log"
wait
