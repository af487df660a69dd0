#!/usr/bin/env bash
# The one test command: ./scripts/test.sh
#
#   1. the Rust tests of the whole workspace (cargo test --workspace --all-targets),
#      with a fresh PostgreSQL database for the store tests when PostgreSQL answers at 127.0.0.1:5432;
#   2. the `tessera` binary (cargo build -p tessera-server), and a smoke run of the benchmark
#      harness (tessera-bench --quick);
#   3. the end-to-end suite (e2e/: openid-client + headless Chromium against the running binary),
#      once on SQLite and once on PostgreSQL.
#
# Runs on Debian 12 as root (installs Chromium with apt-get and the e2e dependencies with npm ci
# when they are missing). Needs cargo, Node 20+ and npm; psql for the PostgreSQL part.
#
# Environment:
#   TESSERA_REQUIRE_POSTGRES=1  fail instead of skipping the PostgreSQL part when it does not answer
#   PGHOST/PGPORT/PGUSER        where PostgreSQL is (default 127.0.0.1, 5432, postgres)
#   Cargo's own variables (CARGO_TERM_COLOR, CARGO_TARGET_DIR, ...) are respected.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

PG_HOST="${PGHOST:-127.0.0.1}"
PG_PORT="${PGPORT:-5432}"
PG_USER="${PGUSER:-postgres}"

section() {
  printf '\n==================== %s ====================\n' "$*"
}

note() {
  printf '[test.sh] %s\n' "$*"
}

die() {
  printf '[test.sh] ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: fresh databases of our own, dropped on exit.

CREATED_DBS=()

psql_admin() {
  psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

postgres_available() {
  command -v psql >/dev/null 2>&1 || return 1
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -h "$PG_HOST" -p "$PG_PORT" -q -t 5 || return 1
  fi
  psql_admin -tAc 'SELECT 1' >/dev/null 2>&1
}

# create_db VAR: creates a fresh database, stores its name in VAR and drops it on exit.
create_db() {
  local name
  name="tessera_test_$(date +%s)_$$_${RANDOM}"
  CREATED_DBS+=("$name")
  psql_admin -c "CREATE DATABASE \"$name\"" >/dev/null
  printf -v "$1" '%s' "$name"
}

drop_db() {
  psql_admin -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null 2>&1 || true
}

cleanup() {
  local db
  for db in "${CREATED_DBS[@]+"${CREATED_DBS[@]}"}"; do
    drop_db "$db"
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_OK=0
if postgres_available; then
  PG_OK=1
elif [[ "${TESSERA_REQUIRE_POSTGRES:-0}" == "1" ]]; then
  die "PostgreSQL does not answer at $PG_HOST:$PG_PORT (user $PG_USER) and TESSERA_REQUIRE_POSTGRES=1"
fi

# ---------------------------------------------------------------------------------------------
section "End-to-end prerequisites (Node, npm ci, Chromium)"

command -v node >/dev/null 2>&1 || die "Node.js 20+ is needed for the end-to-end tests (node is not installed)"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$NODE_MAJOR" -ge 20 ]] || die "Node.js 20+ is needed for the end-to-end tests (found $(node --version))"
command -v npm >/dev/null 2>&1 || die "npm is not installed"

LOCK_SUM="$(sha256sum e2e/package-lock.json e2e/package.json | sha256sum | cut -d' ' -f1)"
STAMP="e2e/node_modules/.tessera-lock-sha256"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$LOCK_SUM" ]]; then
  note "installing the e2e dependencies (npm ci)"
  (cd e2e && npm ci --no-audit --no-fund)
  printf '%s' "$LOCK_SUM" >"$STAMP"
else
  note "e2e dependencies are up to date"
fi

if [[ ! -x /usr/bin/chromium ]]; then
  note "installing Debian's chromium (apt-get)"
  SUDO=()
  if [[ "$(id -u)" != "0" ]]; then
    command -v sudo >/dev/null 2>&1 || die "Chromium is missing and this is not root: run apt-get install -y chromium as root"
    SUDO=(sudo)
  fi
  "${SUDO[@]+"${SUDO[@]}"}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]+"${SUDO[@]}"}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
note "browser: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"

# ---------------------------------------------------------------------------------------------
section "Rust tests (cargo test --workspace --all-targets)"

command -v cargo >/dev/null 2>&1 || die "cargo is not installed"
if [[ "$PG_OK" == "1" ]]; then
  create_db STORE_DB
  export TESSERA_TEST_POSTGRES_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$STORE_DB"
  note "PostgreSQL answers: store tests use $TESSERA_TEST_POSTGRES_URL (dropped on exit)"
else
  unset TESSERA_TEST_POSTGRES_URL
  note "PostgreSQL does not answer at $PG_HOST:$PG_PORT: the PostgreSQL tests are skipped (start it, or set TESSERA_REQUIRE_POSTGRES=1 to make this an error)"
fi
cargo test --workspace --all-targets

# ---------------------------------------------------------------------------------------------
section "Build the tessera binary (cargo build -p tessera-server)"

cargo build -p tessera-server
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).target_directory))')"
export TESSERA_BIN="$TARGET_DIR/debug/tessera"
[[ -x "$TESSERA_BIN" ]] || die "the build produced no binary at $TESSERA_BIN"
note "binary: $TESSERA_BIN"

# ---------------------------------------------------------------------------------------------
section "Benchmark harness smoke run (tessera-bench --quick)"

# Keeps the harness from rotting: it must run every scenario and print its table. Speed is
# not asserted here (docs/benchmarks.md has the measured figures and how to reproduce them).
BENCH_REPORT="$(mktemp)"
cargo run -q -p tessera-bench -- --quick --install-peer --tessera "$TESSERA_BIN" --out "$BENCH_REPORT"
grep -q '^| Scenario | System' "$BENCH_REPORT" || die "the benchmark harness printed no result table"
rm -f "$BENCH_REPORT"

# ---------------------------------------------------------------------------------------------
# The e2e suite, once per database; its exit status is remembered, both runs happen.

E2E_FAILED=()

run_e2e() {
  local label="$1" url="$2" rc=0
  section "End-to-end tests on $label"
  (
    cd e2e
    if [[ -n "$url" ]]; then
      export TESSERA_E2E_DATABASE_URL="$url"
    else
      unset TESSERA_E2E_DATABASE_URL
    fi
    exec timeout --kill-after=30 1200 node --test --test-reporter=tap oidc.test.mjs
  ) || rc=$?
  if [[ "$rc" != "0" ]]; then
    E2E_FAILED+=("$label (exit $rc)")
  fi
}

if [[ "$PG_OK" != "1" ]]; then
  note "the end-to-end tests on PostgreSQL are SKIPPED: PostgreSQL does not answer at $PG_HOST:$PG_PORT"
fi

run_e2e "SQLite" ""

if [[ "$PG_OK" == "1" ]]; then
  create_db E2E_DB
  run_e2e "PostgreSQL" "postgres://$PG_USER@$PG_HOST:$PG_PORT/$E2E_DB"
  drop_db "$E2E_DB"
fi

if [[ "${#E2E_FAILED[@]}" -gt 0 ]]; then
  printf '[test.sh] FAILED: end-to-end tests on %s\n' "${E2E_FAILED[@]}" >&2
  exit 1
fi
