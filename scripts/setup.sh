#!/usr/bin/env bash
# Set-up only: create .venv and install vlbench (with the test extras) into it; runs nothing else.
# Safe to rerun: it reinstalls only when pyproject.toml changed (scripts/venv.sh).
source "$(dirname "$0")/venv.sh"
echo "vlbench is installed in $PWD/.venv: source .venv/bin/activate, or call .venv/bin/vlbench"
