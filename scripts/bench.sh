#!/usr/bin/env bash
# The main job: the default benchmark (tm-lora, 100 pairs, embedded data), then its leaderboard
# next to the committed row. The record goes to runs/ (git-ignored), never to the committed
# results/, which only `vlbench leaderboard --results results` regenerates from results/records.
# CONDENSER, BUDGET and RESULTS pick another run; further arguments go to `vlbench run`.
source "$(dirname "$0")/venv.sh"
# The committed records were made with one thread (their `torch_threads`): the same here, so that
# a rerun is comparable (and two processes on a small machine do not slow each other down).
export OMP_NUM_THREADS=1
results=${RESULTS:-runs}
vlbench run --condenser "${CONDENSER:-tm-lora}" --budget "${BUDGET:-100}" --results "$results" "$@"
vlbench leaderboard --results "$results" --compare results
echo "leaderboard: $results/LEADERBOARD.md"
