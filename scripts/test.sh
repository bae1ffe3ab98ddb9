#!/usr/bin/env bash
# The test suite, in the project's own venv.
source "$(dirname "$0")/venv.sh"
python -m pytest -q "$@"
