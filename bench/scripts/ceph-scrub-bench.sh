#!/usr/bin/env bash
# Ceph 16's deep scrub under load, measured the way bench/scripts/scrub-bench.sh measures
# cairn's, for a side-by-side figure: 1 mon, 1 mgr and 3 BlueStore OSDs (sparse files) on
# loopback, a size-3 pool of 32 PGs filled with 4 MiB objects, then 4 KiB writes alone and
# again while every PG is deep-scrubbed. Prints TSV lines:  test  value  unit  load1
# rados bench has no percentiles: it reports average and maximum latency, so this prints
# those (scrub-bench.sh prints p99; cairn bench's JSON has avg and max too).
#
#   Usage: bench/scripts/ceph-scrub-bench.sh [FILL_SECS] [SECS]   (defaults 20 and 10)
#   Needs the Ceph packages (ceph-mon ceph-osd ceph-mgr ceph-common); the reference script
#   ../shared/reference/ceph-baseline.sh installs them. State in $CEPH_DIR
#   (/var/tmp/cairn-ceph-scrub), wiped at start and end; only daemons whose command line
#   names this run's config are stopped.
set -euo pipefail
FILL="${1:-20}"
SECS="${2:-10}"
DIR="${CEPH_DIR:-/var/tmp/cairn-ceph-scrub}"
CONF="$DIR/ceph.conf"
export CEPH_CONF="$CONF"
for b in ceph-mon ceph-osd ceph-mgr ceph rados; do
  command -v "$b" > /dev/null || { echo "$b is missing: install ceph-mon ceph-osd ceph-mgr ceph-common" >&2; exit 1; }
done
load1() { cut -d' ' -f1 /proc/loadavg; }
C() { timeout 120 ceph --connect-timeout 15 "$@"; }

teardown() {
  [ -d "$DIR/run" ] || return 0
  local pf pid
  for pf in "$DIR"/run/*.pid; do
    [ -f "$pf" ] || continue
    pid=$(cat "$pf")
    if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -qF -- "$CONF"; then
      kill -TERM "$pid" 2> /dev/null || true
      for _ in $(seq 1 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
      kill -KILL "$pid" 2> /dev/null || true
    fi
  done
}
cleanup() { teardown; rm -rf "$DIR"; }
trap cleanup EXIT
teardown
rm -rf "$DIR"
mkdir -p "$DIR"/{run,log}

FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$CONF" << EOF
[global]
fsid = $FSID
mon_host = [v2:127.0.0.1:3400,v1:127.0.0.1:6889]
mon_initial_members = a
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
keyring = $DIR/keyring
run_dir = $DIR/run
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_delete = true
mon_data_avail_warn = 2
mon_data_avail_crit = 1
[client]
log_to_file = false
[mon]
mon_data = $DIR/\$name
keyring = $DIR/\$name/keyring
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
[mgr]
mgr_data = $DIR/\$name
keyring = $DIR/\$name/keyring
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
[osd]
osd_data = $DIR/\$name
keyring = $DIR/\$name/keyring
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $((20 << 30))
bluestore_fsck_on_mkfs = false
bluestore_debug_enforce_settings = ssd
EOF
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' > /dev/null
ceph-authtool "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
  --cap mgr 'allow *' > /dev/null
monmaptool --create --fsid "$FSID" --addv a '[v2:127.0.0.1:3400,v1:127.0.0.1:6889]' "$DIR/monmap" > /dev/null
mkdir -p "$DIR/mon.a" "$DIR/mgr.x"
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
ceph-mon -c "$CONF" -i a
until C status > /dev/null 2>&1; do sleep 0.2; done
C auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' -o "$DIR/mgr.x/keyring"
ceph-mgr -c "$CONF" -i x
for i in 0 1 2; do
  uuid=$(cat /proc/sys/kernel/random/uuid)
  secret=$(ceph-authtool --gen-print-key)
  echo "{\"cephx_secret\": \"$secret\"}" > "$DIR/new.json"
  id=$(C osd new "$uuid" -i "$DIR/new.json")
  mkdir -p "$DIR/osd.$id"
  printf '[osd.%s]\n\tkey = %s\n' "$id" "$secret" > "$DIR/osd.$id/keyring"
  ceph-osd -c "$CONF" -i "$id" --mkfs --key "$secret" --osd-uuid "$uuid" > "$DIR/log/mkfs.$id.out" 2>&1
  ceph-osd -c "$CONF" -i "$id"
done
rm -f "$DIR/new.json"
C osd pool create bench 32 32 replicated > /dev/null
C osd pool set bench size 3 > /dev/null
C osd pool application enable bench rados > /dev/null
for _ in $(seq 1 600); do
  C pg stat 2> /dev/null | grep -qE '^33 pgs: 33 active\+clean;|^32 pgs: 32 active\+clean;' && break
  sleep 0.5
done

rados -p bench bench "$FILL" write -b 4M -t 16 --no-cleanup --run-name fill > "$DIR/fill.txt"
lat() { awk -F: -v what="$2" '$1 == what { printf "%.2f", $2 * 1000 }' "$1"; }
rados -p bench bench "$SECS" write -b 4096 -t 16 --run-name alone > "$DIR/alone.txt"
echo -e "write_4K_avg_alone\t$(lat "$DIR/alone.txt" "Average Latency(s)")\tms\t$(load1)"
echo -e "write_4K_max_alone\t$(lat "$DIR/alone.txt" "Max latency(s)")\tms\t$(load1)"

start=$(date -u +%s.%N)
C osd pool deep-scrub bench > /dev/null
rados -p bench bench "$SECS" write -b 4096 -t 16 --run-name scrubbing > "$DIR/scrubbing.txt"
echo -e "write_4K_avg_during_deep_scrub\t$(lat "$DIR/scrubbing.txt" "Average Latency(s)")\tms\t$(load1)"
echo -e "write_4K_max_during_deep_scrub\t$(lat "$DIR/scrubbing.txt" "Max latency(s)")\tms\t$(load1)"
# Every PG of the pool deep-scrubbed since the start (bounded: 30 min).
left=32
for _ in $(seq 1 3600); do
  left=$(C pg ls-by-pool bench -f json 2> /dev/null | python3 -c '
import calendar, json, sys, time
start = float(sys.argv[1])
d = json.load(sys.stdin)
pgs = d["pg_stats"] if isinstance(d, dict) else d
def utc(s):  # "2026-11-22T22:50:01.123456+0000"
    return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) + float("0." + s[20:26])
print(sum(1 for p in pgs if utc(p["last_deep_scrub_stamp"]) <= start))' "$start")
  [ "$left" = 0 ] && break
  sleep 0.5
done
[ "$left" = 0 ] || { echo "deep scrub did not finish: $left PGs left" >&2; exit 1; }
end=$(date -u +%s.%N)
stored=$(C df -f json | python3 -c '
import json, sys
print(next(p["stats"]["stored"] for p in json.load(sys.stdin)["pools"] if p["name"] == "bench"))')
python3 - "$stored" "$start" "$end" "$(load1)" << 'EOF'
import sys
stored, start, end, load = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
secs = end - start
print(f"deep_scrub_stored_MiB\t{stored / 1048576:.0f}\tMiB\t{load}")
print(f"deep_scrub_seconds\t{secs:.1f}\ts\t{load}")
print(f"deep_scrub_MBps_per_osd\t{stored / 1e6 / secs:.0f}\tMB/s\t{load}")
EOF
