#!/usr/bin/env bash
# Make sure Debian's headless Chromium and its chromedriver are installed, for the console's
# browser tests (tests/test_console_browser.py). Installs them with apt-get when they are
# missing and we are root. Otherwise, or if the install fails, it says so: the browser tests
# then skip with that reason, except under CI=true, where this script fails instead.
# Safe to run again; a no-op when both are there.
set -uo pipefail
have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
give_up() {
  echo "note: $1; the browser tests will be skipped" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
}
have && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  give_up "chromium and chromedriver are missing and installing them needs root and apt-get"
fi
export DEBIAN_FRONTEND=noninteractive
# Another apt-get may hold the lock for a while (CI installs PostgreSQL the same way).
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_get update -qq || give_up "apt-get update failed"
apt_get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null \
  || give_up "apt-get install chromium chromium-driver failed"
have || give_up "chromium or chromedriver is still missing after the install"
