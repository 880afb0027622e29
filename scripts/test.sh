#!/usr/bin/env bash
# The test command: installs the project into .venv, starts the real servers
# (Kafka, PostgreSQL, SeaweedFS S3; reused when already running), runs every tier.
#   scripts/test.sh                 all tests (unit, integration, e2e)
#   scripts/test.sh tests/unit -x   any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv
"$PY" -m pytest -p no:cacheprovider "$@"
