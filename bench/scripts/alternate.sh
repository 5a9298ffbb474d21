#!/usr/bin/env bash
# Two `cairn` binaries under the OSD bench, alternating (old, new, old, new, ...), with a
# pause before each run so that each starts at a similar load. The figures of one binary
# against another are only comparable within such a run.
#
#   Usage: bench/scripts/alternate.sh OLD_BIN NEW_BIN [PAIRS] [SECS]   (defaults 4, 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD="$(realpath "$1")"
NEW="$(realpath "$2")"
PAIRS="${3:-4}"
SECS="${4:-10}"
for i in $(seq 1 "$PAIRS"); do
  for side in old new; do
    bin=$OLD
    [ "$side" = new ] && bin=$NEW
    sleep "${PAUSE_SECS:-20}" # lets the load of the previous run fall
    echo "== $side $i $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    CAIRN_BIN="$bin" bench/scripts/osd-bench.sh "$SECS"
  done
done
echo "== end $(date -u +%H:%M:%S)"
