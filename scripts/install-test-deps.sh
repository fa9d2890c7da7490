#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine:
# the Debian packages in scripts/apt-test-packages.txt, then rumpfs with its
# test extra, then the one-time downloads of scripts/setup-*.sh (test kernel...),
# and last tests/preflight.py checks that every tool the tests run is there.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(sed -e 's/#.*//' scripts/apt-test-packages.txt | tr -s ' \n' ' ')
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null | awk '$4 != "installed" {print $1}' || true)
# dpkg-query prints nothing for packages it has never heard of: catch those too.
for p in $pkgs; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "${missing// /}" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
python3 -m pip install -q -e '.[test]'
for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done
# Name anything the tests run that the lists above did not bring.
python3 tests/preflight.py
