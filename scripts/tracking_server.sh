#!/usr/bin/env bash
# A shared MLflow tracking server on PostgreSQL, on one host, loopback only.
#
#   scripts/tracking_server.sh start   [STATE_DIR]   # PostgreSQL + mlflow server; prints the export lines
#   scripts/tracking_server.sh stop    [STATE_DIR]   # both stopped; data and artifacts kept
#   scripts/tracking_server.sh restart [STATE_DIR]   # the mlflow server process only (the database stays up)
#   scripts/tracking_server.sh status  [STATE_DIR]
#   scripts/tracking_server.sh destroy [STATE_DIR]   # stop and delete the database and artifacts
#
# STATE_DIR (default ./tracking-server) holds artifacts/, logs, pids and env.sh, which says how to
# reach the server:  . STATE_DIR/env.sh && python -m mfexp -m ...   (only MLFLOW_TRACKING_URI, and
# MLFLOW_TRACKING_USERNAME/PASSWORD with auth, are needed: mfexp itself is unchanged).
#
# Settings (environment):
#   MFEXP_SERVER_PORT     mlflow server port            (default 5000)
#   MFEXP_PG_PORT         PostgreSQL port               (default 5433, 127.0.0.1 only)
#   MFEXP_SERVER_WORKERS  mlflow server worker processes (default 1; 4-8 on a real server)
#   MFEXP_SERVER_AUTH=1   start with --app-name basic-auth; the admin user's password is generated
#                         (STATE_DIR/env.sh exports it as MLFLOW_TRACKING_USERNAME/PASSWORD)
#   MLFLOW                the mlflow executable          (default: mlflow on PATH, else ./.venv/bin/mlflow)
#   PG_BIN                PostgreSQL's bin directory     (default: the newest /usr/lib/postgresql/*/bin)
#
# PostgreSQL runs from a private data directory (initdb) with a generated password (scram-sha-256)
# on 127.0.0.1; as root it runs as the `postgres` user (initdb refuses root), with its data in
# /tmp/mfexp-pg.* (a STATE_DIR under a 0700 folder is not reachable by that user).
set -euo pipefail

cmd=${1:-}
STATE=${2:-./tracking-server}
PORT=${MFEXP_SERVER_PORT:-5000}
PG_PORT=${MFEXP_PG_PORT:-5433}
WORKERS=${MFEXP_SERVER_WORKERS:-1}
AUTH=${MFEXP_SERVER_AUTH:-0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "tracking_server: $*" >&2; exit 1; }

find_pg_bin() {
    if [[ -n ${PG_BIN:-} ]]; then echo "$PG_BIN"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [[ -n $d && -x $d/initdb ]]; then echo "$d"; return; fi
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
    die "PostgreSQL binaries not found (Debian: apt-get install -y postgresql; or set PG_BIN)"
}

find_mlflow() {
    if [[ -n ${MLFLOW:-} ]]; then echo "$MLFLOW"; return; fi
    command -v mlflow 2>/dev/null && return
    [[ -x $HERE/../.venv/bin/mlflow ]] && { echo "$HERE/../.venv/bin/mlflow"; return; }
    die "mlflow not found (pip install -e '.[scale]', or set MLFLOW)"
}

# Run a PostgreSQL command as the database owner: `postgres` when we are root.
as_owner() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pgdata() { cat "$STATE/pgdata.path"; }

pg_start() {
    local bin; bin=$(find_pg_bin)
    if [[ ! -f $STATE/pgdata.path ]]; then
        local base data pwfile
        if [[ $(id -u) == 0 ]]; then
            id postgres >/dev/null 2>&1 || die "running as root needs the postgres user (apt-get install postgresql)"
            base=$(mktemp -d /tmp/mfexp-pg.XXXXXX)
            chown postgres: "$base"
        else
            base=$STATE/pg
            mkdir -p "$base"
        fi
        chmod 700 "$base"
        data=$base/data
        head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$STATE/pg.password"
        chmod 600 "$STATE/pg.password"
        pwfile=$base/pwfile
        cp "$STATE/pg.password" "$pwfile"
        [[ $(id -u) == 0 ]] && chown postgres: "$pwfile"
        as_owner "$bin/initdb" -D "$data" -U mlflow --pwfile="$pwfile" --auth-host=scram-sha-256 \
            --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 \
            || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
        rm -f "$pwfile"
        echo "$data" > "$STATE/pgdata.path"
    fi
    local data; data=$(pgdata)
    if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$data" -w -t 60 -l "$data/postgres.log" \
            -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $data -c max_connections=200" start >/dev/null \
            || { cat "$data/postgres.log" >&2; die "PostgreSQL did not start"; }
    fi
    local db
    for db in mlflow mlflow_auth; do
        if ! as_owner "$bin/psql" -h "$data" -p "$PG_PORT" -U mlflow -d postgres -tAc \
                "select 1 from pg_database where datname='$db'" | grep -q 1; then
            as_owner "$bin/createdb" -h "$data" -p "$PG_PORT" -U mlflow "$db"
        fi
    done
}

pg_stop() {
    [[ -f $STATE/pgdata.path ]] || return 0
    local bin; bin=$(find_pg_bin)
    as_owner "$bin/pg_ctl" -D "$(pgdata)" -m fast -w stop >/dev/null 2>&1 || true
}

db_uri() { echo "postgresql+psycopg2://mlflow:$(cat "$STATE/pg.password")@127.0.0.1:$PG_PORT/$1"; }

server_pid() { [[ -f $STATE/server.pid ]] && cat "$STATE/server.pid"; }

server_alive() { local p; p=$(server_pid) && kill -0 "$p" 2>/dev/null; }

server_start() {
    local mlflow; mlflow=$(find_mlflow)
    server_alive && die "mlflow server already running (pid $(server_pid))"
    mkdir -p "$STATE/artifacts"
    local args=(server --backend-store-uri "$(db_uri mlflow)" --artifacts-destination "$STATE/artifacts"
                --serve-artifacts --host 127.0.0.1 --port "$PORT" --workers "$WORKERS")
    local envs=()
    if [[ $AUTH == 1 ]]; then
        [[ -f $STATE/admin.password ]] || {
            head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$STATE/admin.password"
            chmod 600 "$STATE/admin.password"; }
        cat > "$STATE/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $(db_uri mlflow_auth)
admin_username = admin
admin_password = $(cat "$STATE/admin.password")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# A credential check is a PBKDF2 hash: cache it per worker for 60 s, or every metric write pays for it.
auth_cache_ttl_seconds = 60
EOF
        chmod 600 "$STATE/basic_auth.ini"
        [[ -f $STATE/flask.secret ]] || {
            head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$STATE/flask.secret"
            chmod 600 "$STATE/flask.secret"; }
        args+=(--app-name basic-auth)
        # CSRF protection of the auth app's forms needs one secret shared by all workers and restarts.
        envs+=("MLFLOW_AUTH_CONFIG_PATH=$STATE/basic_auth.ini" "MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$STATE/flask.secret")")
    fi
    # Own session: `stop` ends the server and its workers as one process group.
    env "${envs[@]}" setsid "$mlflow" "${args[@]}" >>"$STATE/server.log" 2>&1 < /dev/null &
    echo $! > "$STATE/server.pid"
    local i
    for i in $(seq 1 240); do
        if curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; then break; fi
        server_alive || { tail -30 "$STATE/server.log" >&2; die "mlflow server exited"; }
        sleep 0.5
    done
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" || { tail -30 "$STATE/server.log" >&2; die "no /health after 120 s"; }
    {
        echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT"
        if [[ $AUTH == 1 ]]; then
            echo "export MLFLOW_TRACKING_USERNAME=admin"
            echo "export MLFLOW_TRACKING_PASSWORD=$(cat "$STATE/admin.password")"
        fi
    } > "$STATE/env.sh"
    chmod 600 "$STATE/env.sh"
}

server_stop() {
    local p
    p=$(server_pid) || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$p" 2>/dev/null || true
    fi
    rm -f "$STATE/server.pid"
}

case $cmd in
    start)
        mkdir -p "$STATE"; STATE=$(cd "$STATE" && pwd)
        pg_start
        server_start
        echo "mlflow server on http://127.0.0.1:$PORT (PostgreSQL 127.0.0.1:$PG_PORT, artifacts $STATE/artifacts)" >&2
        cat "$STATE/env.sh"
        ;;
    stop)
        [[ -d $STATE ]] || exit 0
        server_stop; pg_stop ;;
    restart)
        server_stop
        STATE=$(cd "$STATE" && pwd)
        pg_start
        server_start ;;
    status)
        server_alive && echo "mlflow server: running (pid $(server_pid)), port $PORT" || echo "mlflow server: stopped"
        if [[ -f $STATE/pgdata.path ]]; then
            as_owner "$(find_pg_bin)/pg_ctl" -D "$(pgdata)" status | head -1 || true
        else
            echo "PostgreSQL: not initialised"
        fi ;;
    destroy)
        [[ -d $STATE ]] || exit 0
        server_stop; pg_stop
        [[ -f $STATE/pgdata.path ]] && rm -rf "$(dirname "$(pgdata)")"
        rm -rf "$STATE" ;;
    *)
        sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
