#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests. Where none is
# running, installs Debian's postgresql package, starts its cluster and gives the postgres
# role the password the tests use (HUB_TEST_POSTGRES_URL overrides the whole URL).
set -euo pipefail
cd "$(dirname "$0")/.."

reachable() {
    .venv/bin/python - <<'PY' 2>/dev/null
import os, psycopg
from sqlalchemy.engine import make_url
url = os.environ.get("HUB_TEST_POSTGRES_URL",
                     "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres")
psycopg.connect(make_url(url).set(drivername="postgresql")
                .render_as_string(hide_password=False), connect_timeout=3).close()
PY
}

reachable && exit 0
echo "PostgreSQL is not answering on 127.0.0.1:5432: installing/starting it." >&2
if ! command -v pg_ctlcluster >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 && break
    sleep 1
done
reachable || { echo "PostgreSQL still unreachable on 127.0.0.1:5432" >&2; exit 1; }
