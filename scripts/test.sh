#!/usr/bin/env bash
# Set up everything (scripts/setup.sh dev) and run the checks: ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# sam build targets the python3.12 runtime and needs that interpreter on PATH.
for py312 in /root/.pyenv/versions/3.12*/bin; do [ -x "$py312/python3.12" ] && export PATH="$PATH:$py312"; done
echo "• ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check lambda_app export tests scripts local bench layers/runtime
echo "• mypy"
.venv/bin/mypy
echo "• pytest"
.venv/bin/pytest "$@"
