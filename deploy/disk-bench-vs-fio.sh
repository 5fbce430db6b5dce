#!/usr/bin/env bash
# Runs etcd's fio disk check and `fleet-ctl disk-bench` back to back on the same directory,
# ROUNDS times, and prints each fdatasync p99 and the median ratio fleet/fio. Exits non-zero
# when the median ratio is outside 0.75..1.33.
#   usage: deploy/disk-bench-vs-fio.sh DIR [ROUNDS=3] [SIZE=22m]
# Needs fio (apt-get install fio), python3, and fleet-ctl on PATH or in ./target/{release,debug}.
set -euo pipefail
dir=${1:?usage: $0 DIR [ROUNDS] [SIZE]}
rounds=${2:-3}
size=${3:-22m}
ctl=$(command -v fleet-ctl || true)
for candidate in ./target/release/fleet-ctl ./target/debug/fleet-ctl; do
  [ -n "$ctl" ] || { [ -x "$candidate" ] && ctl=$candidate; }
done
[ -n "$ctl" ] || { echo "fleet-ctl not found: cargo build --release -p fleet-ctl" >&2; exit 2; }
command -v fio >/dev/null || { echo "fio not found: apt-get install fio" >&2; exit 2; }
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ratios=()
printf '%-6s %14s %14s %8s\n' round fio_p99_us fleet_p99_us ratio
for round in $(seq 1 "$rounds"); do
  fio --rw=write --ioengine=sync --fdatasync=1 --directory="$dir" --size="$size" --bs=2300 \
      --name=etcd-check --output-format=json > "$work/fio.json"
  rm -f "$dir"/etcd-check.*
  "$ctl" disk-bench --dir "$dir" --size "$size" --block-size 2300 -o json > "$work/fleet.json"
  read -r fio_p99 fleet_p99 ratio < <(python3 - "$work/fio.json" "$work/fleet.json" <<'PY'
import json, sys
fio = json.load(open(sys.argv[1]))["jobs"][0]["sync"]["lat_ns"]["percentile"]["99.000000"] / 1000
fleet = json.load(open(sys.argv[2]))["fdatasync_p99_us"]
print(f"{fio:.0f} {fleet:.0f} {fleet / fio:.3f}")
PY
)
  printf '%-6s %14s %14s %8s\n' "$round" "$fio_p99" "$fleet_p99" "$ratio"
  ratios+=("$ratio")
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
ratios = [float(r) for r in sys.argv[1:]]
median = statistics.median(ratios)
ok = 0.75 <= median <= 1.33
print(f"median p99 ratio fleet/fio: {median:.3f} ({'within' if ok else 'outside'} 0.75..1.33)")
sys.exit(0 if ok else 1)
PY
