#!/usr/bin/env bash
# The main job: the default benchmark (tm-lora, 100 pairs, embedded data), then its leaderboard
# next to the committed row. The record goes to runs/ (git-ignored), never to the committed
# results/, which only `vlbench leaderboard --results results` regenerates from results/records.
# CONDENSER, BUDGET and RESULTS pick another run; further arguments go to `vlbench run`.
source "$(dirname "$0")/venv.sh"
# One thread: the committed records were made so (their `torch_threads`), and it is the fastest
# setting on a shared machine: with 2 threads, torch's ops wait for each other's thread whenever
# another job holds a core (caption encoding took 1.6-1.8x the wall time of 1 thread on a busy 2-core
# machine; docs/benchmarks.md). Caption encoding still uses every core: one single-threaded batch
# per core (VLBENCH_ENCODE_WORKERS to change), which nothing waits on.
export OMP_NUM_THREADS=1
results=${RESULTS:-runs}
vlbench run --condenser "${CONDENSER:-tm-lora}" --budget "${BUDGET:-100}" --results "$results" "$@"
vlbench leaderboard --results "$results" --compare results
echo "leaderboard: $results/LEADERBOARD.md"
