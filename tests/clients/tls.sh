#!/usr/bin/env bash
# TLS with tools from outside the project: openssl makes a CA and a certificate for localhost,
# the binary serves them (--tls-cert/--tls-key), and curl (OpenSSL underneath, not rustls)
# trusting only that CA checks https REST, the dashboard and an SSE stream, that ALPN gives
# HTTP/1.1 even to a client asking for HTTP/2, that plain HTTP on the port gets no answer, and
# that the start log says https:// and wss://. About 5 s.
#
# Usage: tests/clients/tls.sh [BINARY]   (default target/release/tickerfeed)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/tickerfeed}
out=tests/artifacts/tls
rm -rf "$out" && mkdir -p "$out"
for tool in openssl curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done

# A CA, and a server certificate for localhost it signs (EC P-256 keys, PKCS#8 PEM).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=tickerfeed test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$out/key.pem" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial -days 2 \
  -extfile "$out/server.ext" -out "$out/cert.pem" 2>/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --bind "127.0.0.1:$port" --tls-cert "$out/cert.pem" --tls-key "$out/key.pem" >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
base="https://localhost:$port"
tls_curl() { curl -s --max-time 5 --cacert "$out/ca.pem" --resolve "localhost:$port:127.0.0.1" "$@"; }
for _ in $(seq 1 100); do
  tls_curl -f "$base/readyz" >/dev/null && break
  kill -0 $server 2>/dev/null || { echo "tickerfeed exited; its log:"; cat "$out/server.log"; exit 1; }
  sleep 0.1
done
fail() { echo "TLS: $*"; echo "server log:"; cat "$out/server.log"; exit 1; }

symbols=$(tls_curl -f "$base/api/symbols" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$symbols" -ge 90 ] || fail "GET /api/symbols over https gave $symbols symbols"
# Into a file, not a pipe: under pipefail, `grep -q` leaving early makes curl fail with a write error.
tls_curl -f -o "$out/index.html" "$base/" || fail "GET / over https failed"
grep -q '<html' "$out/index.html" || fail "the dashboard page is not served over https: $(head -c 200 "$out/index.html")"
version=$(tls_curl -f --http2 -o /dev/null -w '%{http_version}' "$base/healthz")
[ "$version" = 1.1 ] || fail "ALPN gave HTTP/$version to a client offering h2; the server offers http/1.1 only"
# SSE: curl reads the stream until --max-time (exit 28), which is the expected end here.
tls_curl -N --max-time 3 "$base/sse?symbols=AAPL&throttle_ms=100" >"$out/sse.txt" || [ $? = 28 ] || fail "the SSE request failed"
grep -q '^event: quotes' "$out/sse.txt" || fail "no quotes event on /sse over https: $(head -c 300 "$out/sse.txt")"
if curl -s --max-time 3 -o "$out/plain.txt" "http://127.0.0.1:$port/healthz"; then
  fail "plain HTTP on the TLS port was answered: $(head -c 200 "$out/plain.txt")"
fi
tls_curl -f "$base/healthz" >/dev/null || fail "the server stopped answering after a plain-HTTP request"
grep -q "dashboard at https://127.0.0.1:$port/, WebSocket at wss://127.0.0.1:$port/ws" "$out/server.log" || fail "the start log does not say https/wss"
echo "TLS: curl (OpenSSL) trusting a test CA: $symbols symbols, the dashboard, /sse quotes, HTTP/$version under ALPN h2,http/1.1; plain HTTP refused; log says https/wss"
