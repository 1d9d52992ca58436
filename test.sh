#!/usr/bin/env bash
# Set everything up (first call only) and run the default test suite: pytest without the slow/gpu markers,
# one worker per CPU core (pytest-xdist; pass -n 0 to run in one process).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
exec .venv/bin/python -m pytest -m "not slow and not gpu" -n auto "$@"
