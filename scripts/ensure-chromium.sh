#!/bin/sh
# Make sure a Chromium the console's browser tests can drive is installed (tests/console:
# Playwright for Python pointed at the system's Chromium; never `playwright install`).
# Idempotent: does nothing when it is already there.
#
# Looks for /usr/bin/chromium (or $TASKLEASE_CHROMIUM). Missing: as root on Debian or
# Ubuntu, installs the Debian package `chromium` with apt-get; otherwise says what to
# install and exits 1, and the browser tests fail saying the same.
set -eu

browser="${TASKLEASE_CHROMIUM:-/usr/bin/chromium}"

works() {
    [ -x "$browser" ] && "$browser" --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1
}

if works; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: installing Chromium (apt-get install chromium)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core
    if works; then
        exit 0
    fi
    echo "ensure-chromium: chromium installed but $browser does not run" >&2
    exit 1
fi

cat >&2 <<MSG
ensure-chromium: no Chromium at $browser for the console's browser tests.
Install it, then run the tests again, for example:
  Debian/Ubuntu:  sudo apt-get install --no-install-recommends chromium
or set TASKLEASE_CHROMIUM to a Chromium binary.
MSG
exit 1
