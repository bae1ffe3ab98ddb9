#!/usr/bin/env bash
# The main job: the default benchmark on the embedded data set, then the leaderboard.
source "$(dirname "$0")/venv.sh"
vlbench run --condenser "${CONDENSER:-tm-lora}" --budget "${BUDGET:-100}" "$@"
vlbench leaderboard --results "${RESULTS:-results}" --output "${RESULTS:-results}/LEADERBOARD.md" >/dev/null
echo "leaderboard: ${RESULTS:-results}/LEADERBOARD.md"
