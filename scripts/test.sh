#!/usr/bin/env bash
# Runs objrec's test suite (unit and integration), after setting up .venv and sample data.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k trainer` or `-m "not slow"`.
# Two pytest-xdist workers, each test file on one of them (its module fixtures built once):
# most of a test's time is single-threaded (TensorFlow's tracing, process start-up, waiting
# on a server), so on 2 cores two workers take about half the time of one.
# OBJREC_TEST_WORKERS=0 runs everything in this one process (for `pdb`, `-s`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2
workers=${OBJREC_TEST_WORKERS:-2}
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 \
  --numprocesses "$workers" --dist loadfile "$@"
