#!/usr/bin/env bash
# Run the whole test suite. Extra arguments go to pytest (e.g. -k ldap, -m slow).
# The LDAP tests need OpenLDAP's slapd (Debian: slapd ldap-utils); the AD tests a Samba AD DC
# (samba samba-ad-dc samba-ad-provision ldb-tools winbind, run as root) and skip without it.
# .ci/run installs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
