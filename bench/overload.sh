#!/usr/bin/env bash
# Overload check: `npm start` (API and worker in one process, compiled) on a private Redis
# (port 6391) and a scratch database, offered echo tasks open loop at <rate>/s for <seconds>;
# prints accepted, refused and completed tasks, and completions per 5 s from PostgreSQL.
# Usage: bash bench/overload.sh <admission_max_wait_ms (0: off)> <rate> <seconds>
set -u
cd "$(dirname "$0")/.."
wait_ms=${1:-2000}; rate=${2:-500}; seconds=${3:-20}
db=orch_overload_$$
redis-server --port 6391 --save "" --appendonly no --daemonize yes >/dev/null
psql -U postgres -h 127.0.0.1 -qc "create database $db" >/dev/null
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  redis-cli -p 6391 shutdown nosave >/dev/null 2>&1
  psql -U postgres -h 127.0.0.1 -qc "drop database if exists $db" >/dev/null
}
trap cleanup EXIT
node scripts/build.mjs >/dev/null
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/$db REDIS_URL=redis://127.0.0.1:6391 PORT=3911 LOG_LEVEL=warn \
  ADMISSION_MAX_WAIT_MS=$wait_ms node dist/src/main.js >"/tmp/overload-$$.log" 2>&1 &
pid=$!
for _ in $(seq 60); do curl -sf localhost:3911/ready >/dev/null && break; sleep 1; done
start=$(date +%s.%N)
npx --no tsx bench/open-loop.ts http://127.0.0.1:3911 "$rate" "$seconds"
end=$(date +%s.%N)
sleep 1
psql -U postgres -h 127.0.0.1 -d "$db" -Atc "
  select 'completed in the window: ' || count(*) from tasks where status = 'completed' and finished_at <= to_timestamp($end);
  select 'completions per 5 s: ' || string_agg(n::text, ', ' order by b) from (
    select floor(extract(epoch from finished_at - to_timestamp($start)) / 5) as b, count(*) as n
      from tasks where finished_at between to_timestamp($start) and to_timestamp($end) group by 1) x;"
curl -s localhost:3911/metrics | grep -E '^orchestrator_admission_refused_total'
