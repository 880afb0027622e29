#!/usr/bin/env bash
# The main job: start the servers and the five services, load the sample dataset,
# execute a clustering and print a per-cluster summary.
#   scripts/demo.sh [--method kmeans|hdbscan|...] [--n-clusters N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv
bash deploy/local/servers.sh start
eval "$(bash deploy/local/servers.sh env)"
bash deploy/local/servers.sh health
exec "$PY" -m clusterflow.client.demo "$@"
