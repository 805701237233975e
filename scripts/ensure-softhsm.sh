#!/bin/sh
# Make sure SoftHSM2 (its PKCS#11 module and softhsm2-util) is installed, for the tests of
# the PKCS#11 key provider. Idempotent: does nothing when it is already there.
#
# Missing: as root, installs the Debian package `softhsm2` with apt-get; otherwise says
# what to install and exits 1. Nothing is configured: the tests make a throwaway token
# in a temp directory (SOFTHSM2_CONF pointing to their own config; tests/keystore).
set -eu

found() {
    command -v softhsm2-util >/dev/null 2>&1 || return 1
    for module in \
        /usr/lib/softhsm/libsofthsm2.so \
        /usr/lib/*/softhsm/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so; do
        if [ -f "$module" ]; then
            return 0
        fi
    done
    return 1
}

if found; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-softhsm: installing SoftHSM2 (apt-get install softhsm2)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends softhsm2
    if found; then
        exit 0
    fi
    echo "ensure-softhsm: softhsm2 installed but softhsm2-util or libsofthsm2.so still not found" >&2
    exit 1
fi

cat >&2 <<'MSG'
ensure-softhsm: SoftHSM2 (softhsm2-util and libsofthsm2.so) not found.
Install it, then run the tests again, for example:
  Debian/Ubuntu:  sudo apt-get install --no-install-recommends softhsm2
  Fedora/RHEL:    sudo dnf install softhsm
  macOS:          brew install softhsm
MSG
exit 1
