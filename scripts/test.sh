#!/usr/bin/env bash
# The test suite, in the project's own venv. One torch thread and one core per process: the tests
# start subprocesses, and threads or worker pools in each would oversubscribe a 2-core machine (the
# tests of the pools set VLBENCH_JOBS themselves).
source "$(dirname "$0")/venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} VLBENCH_JOBS=${VLBENCH_JOBS:-1}
python -m pytest -q "$@"
