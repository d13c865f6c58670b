#!/usr/bin/env bash
# scripts/local_postgres.sh [--stop]: a PostgreSQL server on this machine with a
# database for dlrun's shared searches (hydra.sweeper.storage), for the tests marked
# `cluster`. Idempotent: installs Debian's postgresql if missing (as root, apt-get),
# starts the cluster unless it answers, creates the role and database `dlrun`
# (password `dlrun`) unless they exist. Prints the database URL on stdout and exits 0,
# or exits 1 with the reason on stderr when it cannot be started here.
set -euo pipefail

url="postgresql://dlrun:dlrun@localhost:5432/dlrun"
fail() {
    echo "local_postgres.sh: $*" >&2
    exit 1
}

cluster() { pg_lsclusters -h 2>/dev/null | awk 'NR == 1 {print $1, $2}'; }

if [[ ${1:-} == --stop ]]; then
    read -r version name <<<"$(cluster)"
    [[ -n ${version:-} ]] && pg_ctlcluster "$version" "$name" stop
    exit 0
fi

if ! command -v pg_ctlcluster >/dev/null; then
    [[ $(id -u) -eq 0 ]] || fail "postgresql is not installed and this is not root; install it first"
    command -v apt-get >/dev/null || fail "postgresql is not installed and there is no apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
        >/tmp/local_postgres_apt.log 2>&1 || fail "apt-get install failed (see /tmp/local_postgres_apt.log)"
fi
[[ $(id -u) -eq 0 ]] || fail "starting the server needs root"

read -r version name <<<"$(cluster)"
if [[ -z ${version:-} ]]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -1)
    name=main
    pg_createcluster "$version" "$name" >/dev/null || fail "pg_createcluster $version $name failed"
fi
if ! pg_lsclusters -h | awk -v v="$version" -v n="$name" '$1 == v && $2 == n {print $4}' | grep -q online; then
    pg_ctlcluster "$version" "$name" start || fail "the server did not start (see /var/log/postgresql/)"
fi

psql_admin() { su postgres -c "psql -qtA -c \"$1\""; }
for _ in $(seq 30); do
    psql_admin "select 1" >/dev/null 2>&1 && break
    sleep 1
done
psql_admin "select 1" >/dev/null 2>&1 || fail "the server does not answer"
[[ $(psql_admin "select 1 from pg_roles where rolname = 'dlrun'") == 1 ]] ||
    psql_admin "create role dlrun login password 'dlrun'" >/dev/null
[[ $(psql_admin "select 1 from pg_database where datname = 'dlrun'") == 1 ]] ||
    psql_admin "create database dlrun owner dlrun" >/dev/null
echo "$url"
