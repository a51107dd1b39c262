#!/usr/bin/env bash
# Sets up the environment (idempotent) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`; PYTHON=python3.13 and
# MASK2FORMER_VENV choose the interpreter and virtualenv (see scripts/venv_path.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/venv_path.sh
export PATH="$VENV/bin:$PATH"
python -m pytest -ra "$@" tests
