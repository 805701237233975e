#!/bin/sh
# Make sure systemd-analyze is installed, for the service unit's check
# (tests/deploy/test_deploy_files.py runs `systemd-analyze verify` and
# `systemd-analyze security --offline=true` on deploy/systemd/tasklease.service).
# Idempotent: does nothing when it is already there. Needs no running systemd.
#
# Missing: as root, installs the Debian package `systemd` with apt-get; otherwise says
# what to install and exits 1.
set -eu

if command -v systemd-analyze >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-systemd-analyze: installing systemd (apt-get install systemd)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends systemd
    exit 0
fi

echo "ensure-systemd-analyze: systemd-analyze is missing; install the systemd package" >&2
exit 1
