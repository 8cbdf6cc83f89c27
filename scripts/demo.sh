#!/usr/bin/env bash
# Set up the run-time environment and run the local demo: the demo bundle behind the Lambda
# handler, driven by API Gateway (HTTP API v2 and REST v1) and S3 events, S3 emulated by moto.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh runtime
.venv/bin/pip --disable-pip-version-check -q install "moto[s3]>=5"
.venv/bin/python -m local demo --bundle demo/bundle "$@"
