# Sourced by the other scripts: create ./.venv and install vlbench into it, once. Later calls
# reinstall only when pyproject.toml changed (its checksum is stamped into the venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
stamp=.venv/.vlbench-pyproject
wanted=$(cksum < pyproject.toml)
if [ ! -x .venv/bin/vlbench ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    if [ ! -x .venv/bin/python ]; then
        "$PY" -m venv .venv
    fi
    # torch first and pinned: these wheels are the ones this project is tested with.
    if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
        .venv/bin/pip install --quiet --upgrade pip
        .venv/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
    fi
    # setuptools announces every editable install with a notice; only that notice is silenced.
    PYTHONWARNINGS="ignore:Editable installation" .venv/bin/pip install --quiet -e ".[test]"
    echo "$wanted" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
