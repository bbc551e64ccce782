#!/usr/bin/env bash
# Runs objrec's test suite (unit and integration), after setting up .venv and sample data.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k trainer` or `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
