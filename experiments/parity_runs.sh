#!/usr/bin/env bash
# Issue 12's learning curves on a 2-core CPU: the paper's code (benchmarks.reference_curves) on core 0 and this
# project's Diffusion-QL (dql.train) on core 1, one seed after another, 50k steps, evaluated every 10k with 10
# episodes, the hopper-medium-replay row's gradient clip and a constant learning rate.
#
#   bash experiments/parity_runs.sh /path/to/Diffusion-Policies-for-Offline-RL [SEEDS]
#
# Each seed trains in its own resumable folder under $PARITY_ROOT (default ~/parity: outside the checkout, whose
# work tree a new session lays anew), checkpointed every 2,000 updates; rerunning the script continues where it
# stopped. A finished seed is copied, without its checkpoints, to experiments/results/dql-parity/curves/, and a
# seed already there is skipped, so finished seeds survive a change of machine once committed. Then
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

keep() {  # keep SRC DEST: the finished run folder, without checkpoints
  mkdir -p "$2"
  find "$1" -maxdepth 1 -type f ! -name checkpoint.pt -exec cp {} "$2"/ \;
}

(
  for s in $SEEDS; do
    [[ -f $RESULTS/reference/seed_$s/summary.json ]] && continue
    OMP_NUM_THREADS=1 taskset -c 0 python -m benchmarks.reference_curves --repo="$REPO" --dataset=$DATA \
      --seeds="$s" "${SETTINGS[@]}" --workdir="$ROOT/reference" --set=grad_norm=4.0 --set=lr_decay=False
    keep "$ROOT/reference/seed_$s" "$RESULTS/reference/seed_$s"
  done
) >> "$ROOT/logs/reference.log" 2>&1 &
(
  for s in $SEEDS; do
    [[ -f $RESULTS/dql/seed_$s/summary.json ]] && continue
    taskset -c 1 python -m dql.train --algo=dql --dataset=$DATA --seed="$s" "${SETTINGS[@]}" \
      --config.grad_norm=4.0 --config.lr_decay=False --workdir="$ROOT/dql/seed_$s"
    keep "$ROOT/dql/seed_$s" "$RESULTS/dql/seed_$s"
  done
) >> "$ROOT/logs/dql.log" 2>&1 &
echo "training in $ROOT; logs: $ROOT/logs/{reference,dql}.log"
wait
