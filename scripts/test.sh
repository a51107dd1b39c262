#!/usr/bin/env bash
# Sets up the environment (idempotent) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest -ra "$@" tests
