#!/usr/bin/env bash
# Set-up only: create .venv and install vlbench (with the test extras) into it; runs nothing else.
# Safe to rerun: it reinstalls only when pyproject.toml changed (scripts/venv.sh). As root on Debian it
# also installs the emoji data set's packages; elsewhere it prints the apt-get line for them.
source "$(dirname "$0")/venv.sh"
bash scripts/emoji-packages.sh || echo "(only the emoji data set needs them)"
echo "vlbench is installed in $PWD/.venv: source .venv/bin/activate, or call .venv/bin/vlbench"
