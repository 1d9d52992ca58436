#!/usr/bin/env bash
# Set everything up (first call only) and run the default test suite: pytest without the slow/gpu markers.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
exec .venv/bin/python -m pytest -m "not slow and not gpu" "$@"
