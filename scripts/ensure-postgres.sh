#!/usr/bin/env bash
# Start PostgreSQL on 127.0.0.1:5432 (trust auth, database "test"), installing it from
# Debian's packages if it is missing. Safe to run again.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
ready && exit 0
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
conf=/etc/postgresql/$version/main
grep -q "^host all all 127.0.0.1/32 trust" "$conf/pg_hba.conf" || \
  sed -i '1i host all all 127.0.0.1/32 trust\nlocal all all trust' "$conf/pg_hba.conf"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 60); do ready && break; sleep 0.5; done
ready
su postgres -c "psql -h 127.0.0.1 -tAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 || \
  su postgres -c "createdb -h 127.0.0.1 test"
