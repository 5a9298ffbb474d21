#!/usr/bin/env bash
# Deep scrub under load: fills a size-3 pool (3 OSDs, one host, as osd-bench.sh), then
# measures 4 KiB writes alone and again while every PG is deep-scrubbed. Prints TSV lines:
#   test  value  unit  load1
# deep_scrub_MBps_per_osd is what every OSD read and checksummed per second (each holds a
# copy of everything); the p99 pair shows what scrub costs client writes.
#
#   Usage: bench/scripts/scrub-bench.sh [FILL_SECS] [SECS]   (defaults 20 and 10; CAIRN_BIN
#          to pick the binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
FILL="${1:-20}"
SECS="${2:-10}"
BIN="$(realpath "${CAIRN_BIN:-target/release/cairn}")"
WORK="$(mktemp -d /tmp/cairn-scrub-bench.XXXXXX)"
cd "$WORK"
cleanup() {
  "$BIN" dev down > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
load1() { cut -d' ' -f1 /proc/loadavg; }
now_ms() { date +%s%3N; }

"$BIN" dev up --base-port 16889 > dev-up.log
"$BIN" pool create bench --size 3 --pg-num 32 > /dev/null
"$BIN" bench bench "$FILL" write -b 4M -t 16 --no-cleanup --run-name fill --format json > fill.json
pgs=$("$BIN" pg dump --format json | python3 -c 'import json,sys; print(" ".join(p["pg"] for p in json.load(sys.stdin)["pgs"]))')

# p99, and avg and max as rados bench reports them (bench/scripts/ceph-scrub-bench.sh).
lat() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.2f" % r["latency_ms"][sys.argv[2]])' "$1" "$2"; }
report() {
  for what in p99 avg max; do echo -e "write_4K_${what}_$1\t$(lat "$2" "$what")\tms\t$(load1)"; done
}
"$BIN" bench bench "$SECS" write -b 4K -t 16 --run-name alone --format json > alone.json
report alone alone.json

start=$(now_ms)
for pg in $pgs; do "$BIN" pg deep-scrub "$pg" > /dev/null; done
"$BIN" bench bench "$SECS" write -b 4K -t 16 --run-name scrubbing --format json > scrubbing.json
report during_deep_scrub scrubbing.json
# Waits for every PG's deep-scrub stamp to pass the start (bounded: 30 min).
for _ in $(seq 1 3600); do
  left=$("$BIN" pg dump --format json | python3 -c '
import json, sys
start = int(sys.argv[1])
print(sum(1 for p in json.load(sys.stdin)["pgs"] if p["last_deep_scrub_ms"] <= start))' "$start")
  [ "$left" = 0 ] && break
  sleep 0.5
done
[ "$left" = 0 ] || { echo "deep scrub did not finish: $left PGs left" >&2; exit 1; }
end=$(now_ms)
bytes=$("$BIN" pg stat --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
python3 - "$bytes" "$start" "$end" "$(load1)" <<'EOF'
import sys
stored, start, end, load = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
secs = (end - start) / 1000
print(f"deep_scrub_stored_MiB\t{stored / 1048576:.0f}\tMiB\t{load}")
print(f"deep_scrub_seconds\t{secs:.1f}\ts\t{load}")
print(f"deep_scrub_MBps_per_osd\t{stored / 1e6 / secs:.0f}\tMB/s\t{load}")
EOF
# Writes raced the scrub's chunks: none of them may show as a bad copy.
errors=$("$BIN" pg dump --format json | python3 -c 'import json,sys; print(sum(p["last_scrub_errors"] for p in json.load(sys.stdin)["pgs"]))')
echo -e "deep_scrub_errors_found\t$errors\tcopies\t$(load1)"
[ "$errors" = 0 ] || { echo "the deep scrub reported bad copies on a healthy cluster" >&2; exit 1; }
