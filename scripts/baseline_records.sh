#!/usr/bin/env bash
# Records of `random` at budgets 100-1000 and the full-data reference on the embedded default,
# 5 evaluation models each, then the leaderboard. One torch thread: the numbers are the same,
# and it does not oversubscribe a shared 2-core machine.
source "$(dirname "$0")/venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for budget in 100 200 500 1000; do
    vlbench run --condenser random --budget "$budget" --evals 5
done
vlbench run --condenser full --evals 5
vlbench leaderboard >/dev/null
