#!/bin/sh
# A self-signed certificate for the TLS proxy (docker-compose.yml, service `proxy`), for a
# laptop or a test machine. Writes DIR/tls.crt and DIR/tls.key (mode 600), valid 365 days for
# localhost, 127.0.0.1, ::1 and any extra NAMEs (DNS names or IP addresses).
#
#   scripts/make-local-cert.sh                        # -> deploy/proxy/certs/ (git-ignored)
#   scripts/make-local-cert.sh deploy/proxy/certs trading.lan 192.168.1.20
#   scripts/make-local-cert.sh --force                # replace an existing pair
#
# Browsers and clients will not trust it until told to (curl --cacert DIR/tls.crt, or import
# it). For a real certificate, put its chain and key at DIR/tls.crt and DIR/tls.key instead
# (see docs/operations.md, "TLS and API replicas"). Needs the openssl CLI (1.1.1 or later).
set -eu

usage() {
    echo "usage: $0 [--force] [DIR] [NAME...]   (DIR defaults to deploy/proxy/certs)" >&2
    exit 2
}

force=0
case "${1:-}" in
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --force) force=1; shift ;;
    -*) echo "error: unknown option $1" >&2; usage ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/deploy/proxy/certs}
[ $# -gt 0 ] && shift

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
    case "$name" in
        ""|*[!A-Za-z0-9.:-]*)
            echo "error: '$name' is not a host name or IP address (letters, digits, '.', '-', ':' only)" >&2
            exit 2 ;;
        *[!0-9.]*) case "$name" in *:*) san="$san,IP:$name" ;; *) san="$san,DNS:$name" ;; esac ;;
        *) san="$san,IP:$name" ;;
    esac
done

command -v openssl >/dev/null 2>&1 || {
    echo "error: the openssl CLI is missing (Debian/Ubuntu: apt-get install openssl)" >&2
    exit 127
}

if [ "$force" -eq 0 ] && { [ -e "$dir/tls.crt" ] || [ -e "$dir/tls.key" ]; }; then
    echo "error: $dir already holds tls.crt or tls.key; nothing was changed." >&2
    echo "       Run again with --force to replace them." >&2
    exit 1
fi

mkdir -p "$dir"
# write beside the target, then move: an interrupted run never leaves half a pair
tmp=$(mktemp -d "$dir/.new.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 365 \
    -subj "/CN=localhost/O=trading local proxy" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>"$tmp/openssl.err" || {
    cat "$tmp/openssl.err" >&2
    echo "error: openssl could not create the certificate (needs OpenSSL 1.1.1 or later)" >&2
    exit 1
}
chmod 644 "$tmp/tls.crt"
chmod 600 "$tmp/tls.key"
mv -f "$tmp/tls.key" "$dir/tls.key"
mv -f "$tmp/tls.crt" "$dir/tls.crt"
echo "wrote $dir/tls.crt and $dir/tls.key ($san)"
