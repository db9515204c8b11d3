#!/bin/sh
# Installs the Debian packages testrack's own test suite drives for real, when they are missing:
# PostgreSQL (the shared rack and the results store on a server) and Chromium (the HTML report,
# checked in a real browser), and pypy3 (an interpreter too old for pytest, which an
# [[environments]] entry must be refused with). Uses apt-get, through sudo when not run as root. Safe to run again.
set -eu

missing=""
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  missing="$missing postgresql"
fi
if ! command -v chromium >/dev/null 2>&1; then
  missing="$missing chromium"
fi
if ! command -v pypy3 >/dev/null 2>&1; then
  missing="$missing pypy3"
fi
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "testrack tests need the Debian packages:$missing; install them as root (apt-get install$missing), or install sudo" >&2
  exit 1
fi
echo "installing Debian packages the tests need:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
# shellcheck disable=SC2086  # the package list is meant to split
$as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
