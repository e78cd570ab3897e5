#!/usr/bin/env bash
# Generates the test PKI used by the TLS tests and the example configs: a CA, a server certificate for
# localhost/127.0.0.1, a client certificate, and a second ("rogue") CA with its own client certificate
# that must be refused. Certificates are valid for 100 years so the committed copies never expire,
# except two server certificates with fixed dates outside their validity (expired in 2001, valid
# from 2090), for the validity warnings of `strait check` and startup.
#   scripts/gen-test-certs.sh [OUT_DIR]     (default: tests/fixtures/certs)
set -euo pipefail
out=${1:-"$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/certs"}
mkdir -p "$out"
cd "$out"
days=36500

ca() { # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=$2" -keyout "$1-key.pem" -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() { # name ca subject extended-usage san
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$4" "$5" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
dated() { # name not-before not-after (YYYYMMDDHHMMSSZ): a localhost server certificate with fixed dates
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' \
    > "$1.ext"
  # `openssl x509` (3.0) cannot set dates; `openssl ca` can, with a throwaway database.
  local db; db=$(mktemp -d)
  printf '[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index\nnew_certs_dir = %s\nserial = %s/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n' \
    "$db" "$db" "$db" > "$db/ca.cnf"
  touch "$db/index"; openssl rand -hex 8 > "$db/serial"
  openssl ca -batch -config "$db/ca.cnf" -cert ca.pem -keyfile ca-key.pem -in "$1.csr" -out "$1.pem" \
    -startdate "$2" -enddate "$3" -extfile "$1.ext" -notext 2>/dev/null
  rm -rf "$db" "$1.csr" "$1.ext"
}

ca ca "Strait Test CA"
leaf server ca "localhost" serverAuth "DNS:localhost,IP:127.0.0.1"
leaf client ca "strait-client" clientAuth "DNS:strait-client.test,URI:spiffe://strait.test/client"
ca rogue-ca "Rogue CA"
leaf rogue-client rogue-ca "rogue-client" clientAuth "DNS:rogue.test"
dated expired 20000101000000Z 20010101000000Z
dated not-yet-valid 20900101000000Z 21000101000000Z
rm -f ./*.srl
echo "test certificates written to $out"
