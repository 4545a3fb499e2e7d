#!/usr/bin/env bash
# Run the whole test suite. Extra arguments go to pytest (e.g. -k ldap, -m slow).
# The LDAP tests need OpenLDAP's slapd (Debian: apt-get install slapd ldap-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
