#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, integration, ui and e2e tiers, on two xdist workers that
# take whole files (the Ray tests share one head on fixed ports; module fixtures train once). Arguments go to
# pytest after these, so `scripts/test.sh -n 0 tests/unit/test_x.py` runs one file in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --no-loadscope-reorder: keep tests/conftest.py's order (files with slow tests first); xdist otherwise hands out the
# files with the most tests first, which left the one-test e2e and shared-data files to the end on one worker.
exec .venv/bin/python -m pytest -n "${CARVIZ_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
