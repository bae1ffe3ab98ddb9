#!/usr/bin/env bash
# The test suite, in the project's own venv. One torch thread per process: the tests start
# subprocesses, and two threads each would oversubscribe a 2-core machine.
source "$(dirname "$0")/venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m pytest -q "$@"
