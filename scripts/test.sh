#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, integration, ui and e2e tiers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
