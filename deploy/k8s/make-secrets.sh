#!/usr/bin/env bash
# Creates (or replaces) the Secrets the manifests read, with random values where it can, passing no
# secret on a command line (kubectl reads them from files made private to this script):
#   clusterdistill-db         journal: the --db value (postgres:...;Password=...); password: for the dev PostgreSQL
#   clusterdistill-api-token  token: the API's bearer token (printed nowhere; read it with kubectl)
#   clusterdistill-tls        tls.crt, tls.key, ca.crt: the nodes' certificate, from a new CA
#                             (scripts/make-test-ca.sh; for production issue it from your own CA,
#                             e.g. a cert-manager Certificate with secretName clusterdistill-tls)
#
#   deploy/k8s/make-secrets.sh NAMESPACE in-cluster                 # dev overlay: a random password for its PostgreSQL
#   PGPASSWORD=... deploy/k8s/make-secrets.sh NAMESPACE 'Host=...;Username=...;Database=...'   # an external PostgreSQL
# Run again, it makes a new API token and keeps what a restart cannot take back: the in-cluster
# journal's password (its PostgreSQL reads it once, at initdb) and the TLS Secret (nodes with
# certificates of two CAs refuse each other). NEW_TLS=1 makes a new CA and certificate anyway;
# an external database's Secret is written from PGPASSWORD each time. Day 2: deploy/k8s/README.md.
set -euo pipefail
ns=${1:?usage: make-secrets.sh NAMESPACE in-cluster|CONNECTION-STRING}
target=${2:?usage: make-secrets.sh NAMESPACE in-cluster|CONNECTION-STRING}
umask 077
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
exists() { kubectl -n "$ns" get secret "$1" >/dev/null 2>&1; }
if [ "$target" = in-cluster ] && exists clusterdistill-db; then
  echo "clusterdistill-db kept: the in-cluster PostgreSQL was initialised with its password"
else
  if [ "$target" = in-cluster ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/password"
    printf 'postgres:Host=clusterdistill-postgres;Username=clusterdistill;Password=%s;Database=clusterdistill' "$(cat "$dir/password")" >"$dir/journal"
  else
    : "${PGPASSWORD:?set PGPASSWORD to the password of the external database}"
    printf '%s' "$PGPASSWORD" >"$dir/password"
    printf 'postgres:%s;Password=%s' "$target" "$PGPASSWORD" >"$dir/journal"
  fi
  kubectl -n "$ns" create secret generic clusterdistill-db --from-file=journal="$dir/journal" --from-file=password="$dir/password" \
    --dry-run=client -o yaml | kubectl apply -f -
fi
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
kubectl -n "$ns" create secret generic clusterdistill-api-token --from-file=token="$dir/token" --dry-run=client -o yaml | kubectl apply -f -
if exists clusterdistill-tls && [ "${NEW_TLS:-}" != 1 ]; then
  echo "clusterdistill-tls kept (NEW_TLS=1 makes a new CA: then restart every pod at once)"
else
  # a test CA, valid for a year here; production issues the certificate from its own CA (cert-manager)
  CA_DAYS=365 "$(dirname "$0")/../../scripts/make-test-ca.sh" "$dir/ca" node >/dev/null
  kubectl -n "$ns" create secret generic clusterdistill-tls --from-file="$dir/ca/node/tls.crt" --from-file="$dir/ca/node/tls.key" \
    --from-file="$dir/ca/node/ca.crt" --dry-run=client -o yaml | kubectl apply -f -
fi
echo "secrets clusterdistill-db, clusterdistill-api-token and clusterdistill-tls are in namespace $ns"
