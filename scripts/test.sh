#!/usr/bin/env bash
# Lint, types, then the whole test suite with coverage of alg/, demux/ and ryu_apps/ (at least 90 %).
set -uo pipefail
cd "$(dirname "$0")/.."

.venv/bin/ruff check . || { echo "ruff found problems"; exit 1; }
.venv/bin/mypy || { echo "mypy --strict found problems in alg/, demux/, ryu_apps/ or bench/"; exit 1; }

# Four workers that steal work from each other: the e2e tests mostly wait on peers and
# timers, and each builds a lab of its own name, so they run side by side (measured on
# 2 cores: see docs/testing.md).
.venv/bin/python -m pytest -n 4 --dist worksteal --cov=alg --cov=demux --cov=ryu_apps --cov-report=term-missing \
    --cov-fail-under=90 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass"
  exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

# The app unchanged under os-ken (pptp-alg-gateway runs os-ken's manager): real pptp-linux
# clients through the lab.
PPTP_ALG_FRAMEWORK=os-ken .venv/bin/python -m pytest -p no:cacheprovider -q \
    tests/e2e/test_gateway_pptp.py::test_four_pptp_linux_clients_pass_ppp_both_ways
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "the os-ken run collected no test: that is a failure here, not a pass"
  exit 1
fi
exit "$rc"
