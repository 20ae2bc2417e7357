#!/usr/bin/env bash
# Autobahn|Testsuite's fuzzingclient against the release binary (TICKERFEED_BIN, default
# target/release/tickerfeed) on loopback, then check.py on its report: every case must be OK or
# INFORMATIONAL. Part of tests/run.sh; what runs where and what is left out: docs/CONFORMANCE.md.
#
# - The cases that expect no message back run against /ws itself; those judged on an echo run
#   against GET /test/echo, the test-only echo on /ws's decoder and framing (--test-echo true).
# - Installs what it needs: Autobahn|Testsuite runs on Python 2.7 only, which this script takes
#   from pyenv (2.7.18; PYTHON2 overrides) and fails without. Its packages, pinned in
#   requirements.txt (the last releases that run on 2.7), go into a virtualenv outside the repo:
#   ${XDG_CACHE_HOME:-~/.cache}/tickerfeed/autobahn (TICKERFEED_AUTOBAHN_PREFIX overrides),
#   made again when requirements.txt changes.
# - Reports (index.html, index.json, a file per case) and the server's log go to
#   tests/artifacts/autobahn/.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
root=$(cd ../.. && pwd)
artifacts="$root/tests/artifacts/autobahn"
bin="${TICKERFEED_BIN:-$root/target/release/tickerfeed}"
prefix="${TICKERFEED_AUTOBAHN_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/tickerfeed/autobahn}"
# The last virtualenv that runs on Python 2.7 (it brings pip 20.3.4, the last pip for 2.7).
virtualenv_version=20.15.1
[ -x "$bin" ] || { echo "no tickerfeed binary at $bin: run cargo build --release first"; exit 1; }

python2="${PYTHON2:-}"
if [ -z "$python2" ]; then
  pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  python2="$pyenv_root/versions/2.7.18/bin/python2.7"
fi
if [ ! -x "$python2" ] || ! "$python2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
  echo "Autobahn|Testsuite needs Python 2.7, expected at $python2 (pyenv's 2.7.18): none there."
  echo "Install it (pyenv install 2.7.18) or point PYTHON2 at a python2.7; this step fails without it."
  exit 1
fi

venv="$prefix/venv"
if [ ! -x "$venv/bin/wstest" ] || ! cmp -s requirements.txt "$venv/requirements.installed"; then
  echo "installing Autobahn|Testsuite into $venv (Python 2.7)"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  timeout 300 "$python2" -m pip install -q --disable-pip-version-check --no-warn-script-location --target "$prefix/bootstrap" "virtualenv==$virtualenv_version" 2>&1 | grep -v DEPRECATION || true
  PYTHONPATH="$prefix/bootstrap" timeout 120 "$python2" -m virtualenv -q "$venv"
  # --no-deps: requirements.txt is the whole set, each pinned (pip would otherwise pick
  # releases that no longer run on 2.7).
  timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r requirements.txt 2>&1 | grep -v DEPRECATION || true
  "$venv/bin/wstest" --autobahnversion >/dev/null || { echo "wstest does not run; see the pip output above"; exit 1; }
  cp requirements.txt "$venv/requirements.installed"
fi

rm -rf "$artifacts"
mkdir -p "$artifacts/reports"
source ../lib.sh
trap 'kill ${server:-} 2>/dev/null || true' EXIT
# The cases' messages reach 1 MiB (9.1.3, 9.5.*): the message limit is raised to its maximum,
# 1 MiB (the cases over it are left out). A heartbeat ping during a case would be an event the
# case does not expect, so the server pings less often than a run lasts.
start_tickerfeed "$bin" "$artifacts/server.log" --test-echo true --max-message-bytes 1048576 --ping-interval 900 --idle-timeout 1800
sed -e "s|@PORT@|$port|g" -e "s|@OUTDIR@|$artifacts/reports|g" fuzzingclient.json >"$artifacts/fuzzingclient.json"

echo "wstest -m fuzzingclient against 127.0.0.1:$port (/ws and /test/echo)"
status=0
(cd "$artifacts" && timeout 360 "$venv/bin/wstest" -m fuzzingclient -s "$artifacts/fuzzingclient.json" >"$artifacts/wstest.log" 2>&1) || status=$?
[ "$status" = 0 ] || { echo "wstest exited with $status (124: over its 6 minutes); tail of tests/artifacts/autobahn/wstest.log:"; tail -20 "$artifacts/wstest.log"; exit 1; }
kill -TERM "$server"
wait "$server" || true
trap - EXIT

# The case counts are what fuzzingclient.json selects from Autobahn|Testsuite 25.10.1: a change
# of either that runs other cases must change these too.
python3 "$here/check.py" "$artifacts/reports/index.json" --protocol-v1 ws --expect ws=140 --expect echo=137
echo "report: tests/artifacts/autobahn/reports/index.html"
