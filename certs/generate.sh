#!/usr/bin/env bash
# Generates the development certificates used by config/ examples and benches/:
#   dev-ca.crt          a throwaway CA (its key is deleted once the leaf is signed)
#   tls.crt, tls.key    ECDSA P-256 leaf for localhost, 127.0.0.1, ::1 and *.localtest.me
# For local runs and examples only. Never use them in production: the key is public.
set -euo pipefail
cd "$(dirname "$0")"
days=${DAYS:-3650}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$days" \
  -subj "/CN=sessiongate development CA" -out dev-ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/tls.ec.key"
openssl pkcs8 -topk8 -nocrypt -in "$tmp/tls.ec.key" -out tls.key
openssl req -new -key tls.key -subj "/CN=localhost" -out "$tmp/tls.csr"
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:*.localtest.me,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in "$tmp/tls.csr" -CA dev-ca.crt -CAkey "$tmp/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$tmp/ext.cnf" -out "$tmp/leaf.crt"
# The chain the server presents: leaf then CA.
cat "$tmp/leaf.crt" dev-ca.crt > tls.crt
rm -f dev-ca.srl
echo "wrote $(pwd)/tls.crt, tls.key, dev-ca.crt (valid $days days)"
