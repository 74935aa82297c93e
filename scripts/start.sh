#!/usr/bin/env bash
# Set up (if needed), make the demo dataset (if missing) and start the dashboard on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh  # as root this also brings Chromium for the crawler
.venv/bin/python -m carviz demo-data
exec .venv/bin/streamlit run dashboard.py --server.address 127.0.0.1 --server.port "${PORT:-8501}" \
  --server.headless true --browser.gatherUsageStats false "$@"
