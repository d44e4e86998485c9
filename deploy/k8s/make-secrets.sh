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
# Rotating: run it again, then restart the pods (docs: deploy/k8s/README.md, Day 2).
set -euo pipefail
ns=${1:?usage: make-secrets.sh NAMESPACE in-cluster|CONNECTION-STRING}
target=${2:?usage: make-secrets.sh NAMESPACE in-cluster|CONNECTION-STRING}
umask 077
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
if [ "$target" = in-cluster ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/password"
  printf 'postgres:Host=clusterdistill-postgres;Username=clusterdistill;Password=%s;Database=clusterdistill' "$(cat "$dir/password")" >"$dir/journal"
else
  : "${PGPASSWORD:?set PGPASSWORD to the external database's password}"
  printf '%s' "$PGPASSWORD" >"$dir/password"
  printf 'postgres:%s;Password=%s' "$target" "$PGPASSWORD" >"$dir/journal"
fi
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
kubectl -n "$ns" create secret generic clusterdistill-db --from-file=journal="$dir/journal" --from-file=password="$dir/password" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$ns" create secret generic clusterdistill-api-token --from-file=token="$dir/token" --dry-run=client -o yaml | kubectl apply -f -
if [ "${KEEP_TLS:-}" != 1 ]; then
  "$(dirname "$0")/../../scripts/make-test-ca.sh" "$dir/ca" node >/dev/null
  kubectl -n "$ns" create secret generic clusterdistill-tls --from-file="$dir/ca/node/tls.crt" --from-file="$dir/ca/node/tls.key" \
    --from-file="$dir/ca/node/ca.crt" --dry-run=client -o yaml | kubectl apply -f -
fi
echo "secrets clusterdistill-db, clusterdistill-api-token and clusterdistill-tls are in namespace $ns (KEEP_TLS=1 leaves the TLS one as it is)"
