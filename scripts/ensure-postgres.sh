#!/usr/bin/env bash
# Start PostgreSQL on 127.0.0.1:5432 (trust auth, database "test"), installing it from
# Debian's packages if it is missing. Safe to run again. The tests create (and drop) a
# database of their own per test next to "test", so the role needs CREATEDB: postgres has it.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
has_test_db() {
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null \
    | grep -q 1
}
if ready && has_test_db; then
  exit 0
fi
if ! ready; then
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
fi
has_test_db || su postgres -c "createdb -h 127.0.0.1 test"
has_test_db
