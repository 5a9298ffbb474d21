#!/usr/bin/env bash
# The OSD data path under `cairn bench`, laid out as the Ceph reference is (one host, 3 OSDs,
# a replicated pool of size 3, 16 ops in flight): 4 MiB and 4 KiB write, seq and rand, with
# the peak RSS of the OSD processes sampled every 0.5 s. Prints one TSV line per figure:
#   test  value  unit  load1
# Run the Ceph side by side (before or after, never at once) and compare:
#   RUNS=1 BENCH_SECS=$SECS RGW=0 ../shared/reference/ceph-baseline.sh
#
#   Usage: bench/scripts/osd-bench.sh [SECS]   (default 20; CAIRN_BIN to pick the binary,
#          OSD_TRANSPORT=quic to reach OSDs over QUIC instead of TCP,
#          POOL="erasure --k 2 --m 1" PG_NUM=32 for the reference's erasure-coded pool,
#          OSDS=6 POOL="erasure --k 4 --m 2" for a pool that needs more than 3 OSDs)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-20}"
BIN="$(realpath "${CAIRN_BIN:-target/release/cairn}")"
WORK="$(mktemp -d /tmp/cairn-osd-bench.XXXXXX)"
cd "$WORK"
cleanup() {
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2> /dev/null || true
  "$BIN" dev down > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
load1() { cut -d' ' -f1 /proc/loadavg; }

"$BIN" dev up --base-port 16789 --osds "${OSDS:-3}" > dev-up.log
if [ "${OSD_TRANSPORT:-tcp}" != tcp ]; then
  "$BIN" dev down > /dev/null
  for f in cairn-data/client.toml cairn-data/osd.*/client.toml; do
    sed -i "1i osd_transport = \"$OSD_TRANSPORT\"" "$f"
  done
  "$BIN" dev up --base-port 16789 --osds "${OSDS:-3}" >> dev-up.log
fi
# shellcheck disable=SC2086 # POOL is several words on purpose
"$BIN" pool create bench ${POOL:---size 3} --pg-num "${PG_NUM:-64}" > /dev/null
pids=$(for f in cairn-data/osd.*/osd.pid; do cat "$f"; echo; done)
rss_now() { for p in $pids; do awk '/VmRSS/{print $2}' "/proc/$p/status" 2> /dev/null; done | sort -n | tail -1; }
echo -e "osd_rss_idle\t$(( $(rss_now) / 1024 ))\tMiB\t$(load1)"
( peak=0; while true; do r=$(rss_now); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > rss.peak; sleep 0.5; done ) &
SAMPLER=$!

for bs in 4M 4K; do
  "$BIN" bench bench "$SECS" write -b "$bs" -t 16 --no-cleanup --format json > "write-$bs.json"
  l=$(load1)
  for mode in seq rand; do
    "$BIN" bench bench "$SECS" "$mode" -t 16 --format json > "$mode-$bs.json"
  done
  for mode in write seq rand; do
    python3 - "$mode-$bs.json" "$bs" "$mode" "$l" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); bs, mode, load = sys.argv[2:5]
lat = r["latency_ms"]
print(f"{mode}_{bs}_MiBps\t{r['mib_per_s']:.1f}\tMiB/s\t{load}")
print(f"{mode}_{bs}_iops\t{r['iops']:.0f}\tIOPS\t{load}")
print(f"{mode}_{bs}_lat_p50_p99\t{lat['p50']:.2f}/{lat['p99']:.2f}\tms\t{load}")
EOF
  done
  "$BIN" bench bench 0 cleanup > /dev/null
done
echo -e "osd_rss_peak\t$(( $(cat rss.peak) / 1024 ))\tMiB\t$(load1)"
