# Shared by scripts/start and scripts/test: make sure PostgreSQL answers at $DATABASE_URL.
#
# On a fresh Debian machine that has only Rust, this installs PostgreSQL with apt-get, starts
# it, and makes the URL's credentials work. The default URL carries the password `postgres`:
# a local server with `trust` auth ignores it, and a fresh Debian install (peer auth for the
# socket, scram for TCP) accepts it once this script has set it. Needs root or sudo only when
# it has to install, start or configure the server.
#
# Usage: source this file, then `ensure_postgres URL` (creates the URL's database too).

set -euo pipefail

pg_log() { printf '[postgres] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Runs a command as the `postgres` operating-system user (peer auth on the local socket).
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# Splits postgres://user[:password]@host[:port]/database into PG_* variables.
parse_url() {
    local url=$1 rest userinfo hostport
    rest=${url#*://}
    rest=${rest%%\?*}
    if [[ $rest == *@* ]]; then userinfo=${rest%%@*}; rest=${rest#*@}; else userinfo=postgres; fi
    PG_USER=${userinfo%%:*}
    PG_PASSWORD=
    if [[ $userinfo == *:* ]]; then PG_PASSWORD=${userinfo#*:}; fi
    hostport=${rest%%/*}
    PG_DATABASE=postgres
    if [[ $rest == */* && -n ${rest#*/} ]]; then PG_DATABASE=${rest#*/}; fi
    PG_HOST=${hostport%%:*}
    PG_PORT=5432
    if [[ $hostport == *:* ]]; then PG_PORT=${hostport#*:}; fi
    # The same server, but its always-present maintenance database.
    PG_ADMIN_URL="postgres://${userinfo}@${hostport}/postgres"
}

port_open() {
    (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
}

# A server in crash recovery (or still starting) listens but refuses every connection until
# it has replayed its WAL, which after a heavy write load can take minutes: wait for it
# rather than mistake it for a login problem. pg_isready exits 1 exactly in that state.
wait_until_accepting() {
    command -v pg_isready >/dev/null || return 0
    local waited=0 status
    while :; do
        status=0
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 5 || status=$?
        [ "$status" -ne 1 ] && return 0
        if [ "$waited" -ge 1800 ]; then
            pg_log "PostgreSQL at $PG_HOST:$PG_PORT still refuses connections after ${waited}s (recovery?)"
            exit 1
        fi
        if [ $((waited % 30)) -eq 0 ]; then
            pg_log "PostgreSQL at $PG_HOST:$PG_PORT is starting up (crash recovery?); waiting (${waited}s so far)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

can_log_in() {
    command -v psql >/dev/null && psql -w "$PG_ADMIN_URL" -Atqc 'SELECT 1' >/dev/null 2>&1
}

is_local() {
    [[ $PG_HOST == 127.0.0.1 || $PG_HOST == localhost || $PG_HOST == ::1 ]]
}

install_packages() {
    if ! command -v apt-get >/dev/null; then
        pg_log "need $* but apt-get is not available: install PostgreSQL 15+ yourself"
        exit 1
    fi
    pg_log "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Starts the local cluster listening on the URL's port, creating one if there is none.
start_postgres() {
    local version cluster name
    cluster=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1 " " $2; exit }')
    if [ -z "$cluster" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
        name=main
        if pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
            name="murmur_$PG_PORT"
        fi
        pg_log "creating cluster $version/$name on port $PG_PORT"
        as_root pg_createcluster "$version" "$name" --port "$PG_PORT" >/dev/null
        cluster="$version $name"
    fi
    pg_log "starting cluster ${cluster/ //}"
    # shellcheck disable=SC2086 # "version name" is two arguments
    as_root pg_ctlcluster $cluster start || true
    for _ in $(seq 1 60); do
        port_open && wait_until_accepting && return 0
        sleep 0.5
    done
    pg_log "PostgreSQL did not start listening on $PG_HOST:$PG_PORT"
    exit 1
}

# Makes the URL's user able to log in over TCP: sets its password when the URL has one,
# otherwise trusts loopback connections.
configure_auth() {
    if [ -n "$PG_PASSWORD" ]; then
        pg_log "setting the password of role $PG_USER"
        local sql
        sql=$(printf "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE \"%s\" SUPERUSER LOGIN; END IF;
END \$\$; ALTER ROLE \"%s\" WITH LOGIN PASSWORD '%s';" "$PG_USER" "$PG_USER" "$PG_USER" "${PG_PASSWORD//\'/\'\'}")
        as_postgres psql -p "$PG_PORT" -q -c "$sql" >/dev/null
    else
        local hba
        hba=$(as_postgres psql -p "$PG_PORT" -Atqc "SHOW hba_file")
        pg_log "trusting loopback connections in $hba"
        as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        as_postgres psql -p "$PG_PORT" -q -c "SELECT pg_reload_conf()" >/dev/null
    fi
}

ensure_postgres() {
    parse_url "$1"
    port_open && wait_until_accepting
    if can_log_in; then
        pg_log "PostgreSQL answers at $PG_HOST:$PG_PORT"
    else
        if ! is_local; then
            pg_log "cannot log in to $PG_HOST:$PG_PORT and it is not this machine: check DATABASE_URL"
            exit 1
        fi
        if port_open; then
            command -v psql >/dev/null || install_packages postgresql-client
        else
            if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
                install_packages postgresql postgresql-client
            fi
            port_open || start_postgres
        fi
        can_log_in || configure_auth
        if ! can_log_in; then
            pg_log "PostgreSQL runs but refuses $PG_USER at $PG_HOST:$PG_PORT"
            exit 1
        fi
        pg_log "PostgreSQL ready at $PG_HOST:$PG_PORT"
    fi
    if [ "$(psql "$PG_ADMIN_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = '${PG_DATABASE//\'/\'\'}'")" != 1 ]; then
        pg_log "creating database $PG_DATABASE"
        psql "$PG_ADMIN_URL" -q -c "CREATE DATABASE \"$PG_DATABASE\"" >/dev/null
    fi
}
