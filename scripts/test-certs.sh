#!/usr/bin/env bash
# scripts/test-certs.sh DIR [CLIENT_CN]: throwaway certificates for tests and benchmarks.
#
# Writes into DIR (created if missing), with openssl, P-256 keys, valid 2 days:
#   ca.pem / ca.key          a self-signed CA ("raftmq test CA")
#   server.pem / server.key  signed by it, CN localhost, SAN DNS:localhost, IP:127.0.0.1
#   client.pem / client.key  signed by it, CN CLIENT_CN (default device-1), clientAuth
# Made at test time, never committed: nothing here is a secret worth keeping.
set -euo pipefail

dir=${1:?usage: test-certs.sh DIR [CLIENT_CN]}
client_cn=${2:-device-1}
command -v openssl >/dev/null || { echo "test-certs.sh: openssl not found" >&2; exit 2; }
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=raftmq test CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -out ca.pem

sign() { # NAME CN EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

sign server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
sign client "$client_cn" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 600 ./*.key
