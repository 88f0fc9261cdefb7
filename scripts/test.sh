#!/usr/bin/env bash
# Lint, types, then the whole test suite with coverage of alg/ (at least 90 %).
set -uo pipefail
cd "$(dirname "$0")/.."

.venv/bin/ruff check . || { echo "ruff found problems"; exit 1; }
.venv/bin/mypy alg || { echo "mypy --strict found problems in alg/"; exit 1; }

.venv/bin/python -m pytest --cov=alg --cov-report=term-missing --cov-fail-under=90 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass"
  exit 1
fi
exit "$rc"
