#!/usr/bin/env bash
# Run the test suite in the project's venv (created by scripts/setup.sh). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh test/test_ros_image.py -x`.
#
# DDS traffic of the ROS tests stays on this machine and on a domain id of its own per run, so parallel
# runs (or other ROS 2 systems on the network) never see each other. Override by exporting ROS_DOMAIN_ID
# or ROS_AUTOMATIC_DISCOVERY_RANGE yourself.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="${ONLINE3R_VENV:-$REPO/.venv}/bin/python"
[[ -x "$PY" ]] || { echo "[test] ERROR: $PY not found: run 'bash scripts/setup.sh' first" >&2; exit 1; }

export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 101 + 1))}  # 1..101: ports outside the ephemeral range
export PYTHONDONTWRITEBYTECODE=1

cd "$REPO"
echo "[test] $PY -m pytest -q $* (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery $ROS_AUTOMATIC_DISCOVERY_RANGE)"
exec "$PY" -m pytest -q "$@"
