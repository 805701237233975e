#!/bin/sh
# Make sure libfaketime is installed, for the clock tests (tests/faults/test_clock*.py):
# they run the broker with libfaketime preloaded and move its wall clock while it runs.
# Idempotent: does nothing when it is already there.
#
# Missing: as root, installs the Debian packages `libfaketime` and `faketime` with
# apt-get; otherwise says what to install and exits 1.
set -eu

found() {
    for library in \
        /usr/lib/*/faketime/libfaketime.so.1 \
        /usr/lib/faketime/libfaketime.so.1 \
        /usr/local/lib/faketime/libfaketime.so.1; do
        if [ -f "$library" ]; then
            return 0
        fi
    done
    return 1
}

if found; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-faketime: installing libfaketime (apt-get install libfaketime faketime)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends libfaketime faketime
    if found; then
        exit 0
    fi
    echo "ensure-faketime: libfaketime installed but libfaketime.so.1 still not found" >&2
    exit 1
fi

cat >&2 <<'MSG'
ensure-faketime: libfaketime (libfaketime.so.1) not found.
Install it, then run the tests again, for example:
  Debian/Ubuntu:  sudo apt-get install --no-install-recommends libfaketime faketime
  Fedora/RHEL:    sudo dnf install libfaketime
MSG
exit 1
