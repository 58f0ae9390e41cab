#!/usr/bin/env bash
# The Debian packages behind the tests that drive real engines: Chromium (browser tests) and PostgreSQL
# (the gradebook test). Used by `make test` and by .ci/run, so both find or install them the same way:
# present -> nothing to do; missing, as root with apt-get -> installed; otherwise -> the one command that
# enables them is printed, and those tests skip with the same command in their message.
# ALIGNLAB_NO_APT=1 never installs (only prints).
set -uo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${ALIGNLAB_NO_APT:-0}" != 1 ]; then
  echo "installing ${missing[*]} for the browser and PostgreSQL tests (apt-get; ALIGNLAB_NO_APT=1 to skip)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1; then
    exit 0
  fi
  echo "warning: apt-get could not install ${missing[*]}"
fi
echo "note: ${missing[*]} missing, so their tests will be skipped; enable them with: sudo apt-get install ${missing[*]}"
exit 0
