#!/usr/bin/env bash
# The test command: installs the project into .venv, starts the real servers
# (Kafka, PostgreSQL, SeaweedFS S3; reused when already running; the Ray tests start
# the 2-node Ray cluster themselves), runs every tier.
#   scripts/test.sh                 all tests (unit, integration, e2e)
#   scripts/test.sh tests/unit -x   any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv
# The web view's e2e test screenshots the page in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the web view test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$PY" -m pytest -p no:cacheprovider "$@"
