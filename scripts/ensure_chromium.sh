#!/usr/bin/env bash
# Make sure Debian's headless Chromium is here (the /status page's browser test
# loads the page in it): install the `chromium` package when it is absent and apt
# can run; otherwise say so (that test is then skipped locally, and fails in CI).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "no chromium; installing Debian's chromium package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  echo "chromium: $(command -v chromium)"
  exit 0
fi
echo "no chromium, and apt-get cannot run here: install the chromium package to run the /status browser test" >&2
if [ "${CI:-}" = "true" ]; then
  exit 1
fi
