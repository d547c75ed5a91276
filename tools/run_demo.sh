#!/usr/bin/env bash
# Installs what is missing, builds fusedloss and runs the demo: a regression model trained with
# fusedloss.nn.MSELoss and with torch.nn.MSELoss side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
python3 -c "import fusedloss" 2>/dev/null ||
  python3 -m pip install --quiet --no-build-isolation --no-deps -e .
python3 examples/python/regression_demo.py "$@"
