#!/bin/sh
# `make gpu-check` on a machine with no package index, e.g. a lent GPU machine: the machine's own
# python3 (with its torch) runs the check, plus the wheels `make gpu-wheels` put in $GPU_WHEELS (default
# .whl/), installed into a scratch folder: nothing of the machine's own Python changes.
# Arguments go to tools.gpu_check.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${GPU_PYTHON:-python3}
wheels=${GPU_WHEELS:-.whl}
site="${TMPDIR:-/tmp}/liverbench-gpu-site"
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "error: $wheels/: no wheels; run 'make gpu-wheels' where PyPI is reachable (or 'make gpu-check' with a venv)" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled exec "$PYTHON" -m tools.gpu_check "$@"
