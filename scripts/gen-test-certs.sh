#!/usr/bin/env bash
# Generates the test PKI used by the TLS tests and the example configs: a CA, a server certificate for
# localhost/127.0.0.1, a client certificate, and a second ("rogue") CA with its own client certificate
# that must be refused. Certificates are valid for 100 years so the committed copies never expire.
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

ca ca "Strait Test CA"
leaf server ca "localhost" serverAuth "DNS:localhost,IP:127.0.0.1"
leaf client ca "strait-client" clientAuth "DNS:strait-client.test,URI:spiffe://strait.test/client"
ca rogue-ca "Rogue CA"
leaf rogue-client rogue-ca "rogue-client" clientAuth "DNS:rogue.test"
rm -f ./*.srl
echo "test certificates written to $out"
