#!/usr/bin/env bash
# A test certificate authority and node certificates for TLS between nodes (openssl, ECDSA P-256):
#   scripts/make-test-ca.sh OUT NAME...
# writes OUT/ca.crt and OUT/ca.key, and for each NAME a folder OUT/NAME with tls.crt, tls.key and
# ca.crt: the layout of a Kubernetes TLS Secret with its CA, which `--tls OUT/NAME` reads.
# Certificates name the cluster (CN=clusterdistill-NAME, SAN DNS clusterdistill), not a host: nodes
# check that a peer's certificate chains to the CA, not its address. Valid for CA_DAYS days (30).
# For production, issue node certificates from your own CA (cert-manager: deploy/k8s/README.md).
set -euo pipefail
out=${1:?usage: make-test-ca.sh OUT NAME...}; shift
mkdir -p "$out"
umask 077
if [ ! -f "$out/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "${CA_DAYS:-30}" -subj "/CN=clusterdistill test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$out/ca.crt" 2>/dev/null
fi
for name in "$@"; do
  d="$out/$name"; mkdir -p "$d"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/key.sec1"
  openssl pkcs8 -topk8 -nocrypt -in "$d/key.sec1" -out "$d/tls.key" && rm "$d/key.sec1"
  openssl req -new -key "$d/tls.key" -subj "/CN=clusterdistill-$name" -out "$d/tls.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:clusterdistill\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days "${CA_DAYS:-30}" -sha256 -extfile "$d/ext.cnf" -out "$d/tls.crt" 2>/dev/null
  rm -f "$d/tls.csr" "$d/ext.cnf"
  cp "$out/ca.crt" "$d/ca.crt"
done
chmod -R go-rwx "$out"
