#!/usr/bin/env bash
# The tuning ruleset for the board (docs/protocol.md): `vlbench tune` for each condenser at each budget,
# in the order given, each study resumed where it stopped (a finished one costs nothing). Run two of these
# side by side on a 2-core machine, each with its own list; then commit results/tuning and configs/tuned.
#   bash scripts/tune_board.sh tm-lora:100 tm-lora:1000 tm:100 ...
source "$(dirname "$0")/venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for target in "$@"; do
    vlbench tune --condenser "${target%%:*}" --budget "${target##*:}" ${TUNE_ARGS:-}
done
