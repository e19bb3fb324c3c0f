#!/usr/bin/env bash
# PostgreSQL with pgvector for the tests of the PostgreSQL backend, from Debian's packages:
# the postgresql-15 server of this Debian release, and pgvector built from Debian's own
# pgvector source package (the release has it only from trixie on) against that server.
# Starts the cluster and makes a role `clipdex` (password `clipdex`) that may create databases.
# Prints the URL the tests take as CLIPDEX_TEST_PG.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

pg=15
need=()
for pkg in "postgresql-$pg" "postgresql-server-dev-$pg" dpkg-dev make gcc openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -f "/usr/share/postgresql/$pg/extension/vector.control" ]; then
  work=$(mktemp -d)
  chmod 755 "$work"
  cat > "$work/trixie.sources" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  mkdir -p "$work/lists/partial"
  apt_opts=(-o "Dir::Etc::sourcelist=$work/trixie.sources" -o Dir::Etc::sourceparts=/dev/null -o "Dir::State::Lists=$work/lists")
  $sudo apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" source -qq pgvector >/dev/null)
  src=$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)
  # OPTFLAGS="": no -march=native, so the build runs on any x86-64 machine.
  make -s -C "$src" PG_CONFIG="/usr/lib/postgresql/$pg/bin/pg_config" OPTFLAGS="" >/dev/null
  $sudo make -s -C "$src" PG_CONFIG="/usr/lib/postgresql/$pg/bin/pg_config" install >/dev/null
  rm -rf "$work"
fi

if ! pg_lsclusters -h | awk -v v="$pg" '$1 == v && $2 == "main"' | grep -q .; then
  $sudo pg_createcluster "$pg" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$pg" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  $sudo pg_ctlcluster "$pg" main start
fi
as_postgres=(runuser -u postgres --)
[ "$(id -u)" -eq 0 ] || as_postgres=(sudo -u postgres)

# TLS for the tests of sslmode: a certificate authority of the tests' own and a server
# certificate it signed for "localhost" only (so that verify-full to 127.0.0.1 must fail).
# The authority's certificate is readable by everyone at $tls/ca.pem (CLIPDEX_TEST_PG_CA).
tls=/etc/postgresql/$pg/main/clipdex-tls
if [ ! -f "$tls/server.crt" ]; then
  $sudo mkdir -p "$tls"
  $sudo openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=clipdex test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  $sudo openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    | $sudo tee "$tls/server.ext" >/dev/null
  $sudo openssl x509 -req -days 3650 -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
  $sudo chown postgres:postgres "$tls/server.key" "$tls/server.crt"
  $sudo chmod 600 "$tls/server.key" "$tls/ca.key"
  $sudo chmod 644 "$tls/ca.pem" "$tls/server.crt"
fi
"${as_postgres[@]}" psql -q -v ON_ERROR_STOP=1 <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$tls/server.crt';
ALTER SYSTEM SET ssl_key_file = '$tls/server.key';
SELECT pg_reload_conf();
SQL
"${as_postgres[@]}" psql -q -v ON_ERROR_STOP=1 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clipdex') THEN
    CREATE ROLE clipdex LOGIN CREATEDB PASSWORD 'clipdex';
  END IF;
END $$;
SQL
# pgvector is not a trusted extension: enabled once in template1 by the superuser, every
# database the tests create has it (clipdex's own CREATE EXTENSION IF NOT EXISTS is then a
# no-op).
"${as_postgres[@]}" psql -q -v ON_ERROR_STOP=1 -d template1 -c 'CREATE EXTENSION IF NOT EXISTS vector'
echo "postgres://clipdex:clipdex@localhost:5432/postgres"
