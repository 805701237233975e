#!/bin/sh
# Make sure PostgreSQL's server binaries (initdb, pg_ctl) are installed, for the tests'
# throwaway clusters. Idempotent: does nothing when they are already there.
#
# Looks on PATH and in /usr/lib/postgresql/*/bin (Debian puts them there, off PATH).
# Missing: as root, installs the Debian package `postgresql` with apt-get; otherwise
# says what to install and exits 1. Nothing is started or configured: the tests run
# their own cluster in a temp directory (tests/postgres/pgcluster.py).
set -eu

found() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            return 0
        fi
    done
    return 1
}

if found; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: installing PostgreSQL server binaries (apt-get install postgresql)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends postgresql
    if found; then
        exit 0
    fi
    echo "ensure-postgres: postgresql installed but initdb/pg_ctl still not found" >&2
    exit 1
fi

cat >&2 <<'MSG'
ensure-postgres: PostgreSQL server binaries (initdb, pg_ctl) not found.
Install them, then run the tests again, for example:
  Debian/Ubuntu:  sudo apt-get install --no-install-recommends postgresql
  Fedora/RHEL:    sudo dnf install postgresql-server
  macOS:          brew install postgresql@15
MSG
exit 1
