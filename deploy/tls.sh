#!/usr/bin/env bash
# A private CA and the control plane's HTTPS certificate, made with openssl:
# for the compose stack, a first install, or check.sh's smoke test. With
# your own PKI or cert-manager, skip this: the control plane needs only a
# PEM chain and key (--tls-cert/--tls-key), and nodes and the CLI the CA
# that signed it (--ca-file / OUTPOST_CA_FILE).
#
#   bash deploy/tls.sh [--file BASENAME] [--peer] DIR NAME [NAME...]
#
# NAMEs are what nodes and the CLI put in the control plane's URL (DNS
# names, `*.` wildcards or IP addresses); the first is also the
# certificate's CN. Writes:
#   DIR/ca.pem              the CA certificate: give it to nodes and the CLI
#   DIR/ca.key              the CA's key: keep it off the servers (0600)
#   DIR/control-plane.crt   the certificate, then the CA (a chain)
#   DIR/control-plane.key   its key (0600)
# An existing CA in DIR is kept, so re-running renews the certificate
# without touching what nodes trust.
#
# The HA variant needs more servers' certificates from the same CA, so
# every client trusts one ca.pem:
#   --file BASENAME   write DIR/BASENAME.crt and .key instead of control-plane.*
#                     (e.g. --file registry, --file etcd)
#   --peer            the certificate may also authenticate as a TLS client
#                     (extendedKeyUsage serverAuth + clientAuth): etcd
#                     members present it to each other (--peer-client-cert-auth)
set -euo pipefail

usage() {
  echo "usage: $0 [--file BASENAME] [--peer] DIR NAME [NAME...]" >&2
  exit 2
}
file=control-plane
eku=serverAuth
while [ "$#" -gt 0 ]; do
  case "$1" in
    --file)
      [ "$#" -ge 2 ] && [[ "$2" =~ ^[A-Za-z0-9._-]+$ ]] && [ "$2" != ca ] || usage
      file="$2"
      shift 2
      ;;
    --peer) eku=serverAuth,clientAuth; shift ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
if [ "$#" -lt 2 ]; then
  usage
fi
dir="$1"
shift
command -v openssl >/dev/null || { echo "$0: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

sans=""
for name in "$@"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
    sans="${sans:+$sans,}IP:$name"
  else
    sans="${sans:+$sans,}DNS:$name"
  fi
done

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/CN=Outpost control plane CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made a new CA: $dir/ca.pem"
fi

ext="$(mktemp)"
csr="$(mktemp)"
trap 'rm -f "$ext" "$csr"' EXIT
printf '%s\n' \
  "subjectAltName=$sans" \
  "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=$eku" > "$ext"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$dir/$file.key" -out "$csr" -subj "/CN=$1" 2>/dev/null
openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 397 -extfile "$ext" -out "$dir/$file.leaf" 2>/dev/null
cat "$dir/$file.leaf" "$dir/ca.pem" > "$dir/$file.crt"
rm -f "$dir/$file.leaf" "$dir/ca.srl"
chmod 0644 "$dir/ca.pem" "$dir/$file.crt"
echo "made $dir/$file.crt for $sans (valid 397 days)"
