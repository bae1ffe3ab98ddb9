#!/usr/bin/env bash
# The main job: the default benchmark (tm-lora, 100 pairs, embedded data), then its leaderboard
# next to the committed row. The record goes to runs/ (git-ignored), never to the committed
# results/, which only `vlbench leaderboard --results results` regenerates from results/records.
# CONDENSER, BUDGET and RESULTS pick another run; further arguments go to `vlbench run`.
source "$(dirname "$0")/venv.sh"
# Every core, by vlbench's policy (vlbench/parallel.py; VLBENCH_JOBS=N or --jobs N to use fewer): caption
# encoding, the expert trajectories and the evaluation models run on one single-threaded worker process
# per core, condensing on one thread, so the numbers are the committed ones whatever the machine's cores.
results=${RESULTS:-runs}
vlbench run --condenser "${CONDENSER:-tm-lora}" --budget "${BUDGET:-100}" --results "$results" "$@"
vlbench leaderboard --results "$results" --compare results
echo "leaderboard: $results/LEADERBOARD.md"
