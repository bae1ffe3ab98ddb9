#!/usr/bin/env bash
# The main job: the default benchmark (tm-lora, 100 pairs, embedded data), then the leaderboard.
# CONDENSER, BUDGET and RESULTS pick another run; further arguments go to `vlbench run`.
source "$(dirname "$0")/venv.sh"
results=${RESULTS:-results}
vlbench run --condenser "${CONDENSER:-tm-lora}" --budget "${BUDGET:-100}" --results "$results" "$@"
vlbench leaderboard --results "$results" >/dev/null
echo "leaderboard: $results/LEADERBOARD.md"
