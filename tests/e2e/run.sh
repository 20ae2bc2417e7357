#!/usr/bin/env bash
# End-to-end tests of the browser dashboard in a real headless Chromium (Debian's `chromium`,
# driven by playwright-core; no browser download). Builds nothing: expects the release binary
# (target/release/tickerfeed, or TICKERFEED_BIN) built by the caller. Each test file starts its
# own servers on free 127.0.0.1 ports. Artifacts (screenshots, server logs, load figures, the
# test log) go to tests/artifacts/e2e/.
#   tests/e2e/run.sh                              # all tests
#   tests/e2e/run.sh replay.test.mjs              # one file
#   UPDATE_README_SCREENSHOT=1 tests/e2e/run.sh   # also refresh dashboards/screenshot.png
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
artifacts="$root/tests/artifacts/e2e"
mkdir -p "$artifacts"

export TICKERFEED_BIN="${TICKERFEED_BIN:-$root/target/release/tickerfeed}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$TICKERFEED_BIN" ] || { echo "no tickerfeed binary at $TICKERFEED_BIN: run cargo build --release first"; exit 1; }

if [ ! -x "$CHROMIUM" ]; then
  echo "installing chromium (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
fi
command -v node >/dev/null || { echo "Node.js >= 20 is required"; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { echo "Node.js >= 20 is required (found $(node --version))"; exit 1; }

npm ci --no-audit --no-fund --loglevel=error

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(dashboard.test.mjs channels.test.mjs reconnect.test.mjs replay.test.mjs sse.test.mjs socketio.test.mjs auth.test.mjs tls.test.mjs load.test.mjs)
# One file at a time (they share the machine's CPUs with the servers); 5 minutes at most.
timeout --kill-after=10 300 node --test --test-concurrency=1 --test-timeout=90000 --test-reporter=spec "${files[@]}" 2>&1 \
  | tee "$artifacts/e2e.log"
