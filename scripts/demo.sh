#!/usr/bin/env bash
# Print the dry-run plan for syncing the bundled example directory to Split.
# No network, no token and no server needed. Extra arguments go to `plan` (e.g. --output json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/scim-agent --config config.example.toml plan "$@"
