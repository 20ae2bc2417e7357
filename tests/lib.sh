# Shell helpers shared by the suite's scripts (sourced, not run).

# start_tickerfeed BIN LOG [ARGS...]: starts BIN on a free loopback port with ARGS, logging to
# LOG, and waits (at most 10 s) until /readyz answers. Sets $port and $server (the pid); the
# caller kills it. Fails, showing the log, if the server does not get ready.
start_tickerfeed() {
  local bin=$1 log=$2
  shift 2
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" --bind "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "tickerfeed not ready after 10 s; its log:"
  cat "$log"
  return 1
}
