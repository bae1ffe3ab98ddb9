#!/usr/bin/env bash
# Records of the coresets herding, kcenter and forgetting at budgets 100-1000 on the embedded
# default, 5 evaluation models each, then the leaderboard. `random`, the fourth coreset, comes
# from scripts/baseline_records.sh (or: CONDENSERS="random herding kcenter forgetting").
# Runs are not skipped when a record exists: run this once, after the evaluation protocol is final.
# One torch thread: the numbers are the same, and it does not oversubscribe a shared 2-core machine.
source "$(dirname "$0")/venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for condenser in ${CONDENSERS:-herding kcenter forgetting}; do
    for budget in 100 200 500 1000; do
        vlbench run --condenser "$condenser" --budget "$budget" --evals 5
    done
done
vlbench leaderboard >/dev/null
echo "leaderboard: results/LEADERBOARD.md"
