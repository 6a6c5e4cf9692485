#!/bin/sh
# tests/softroce/bench.sh BUILD - run INSIDE the guest (run.sh BUILD bench):
# kvmig migration over the verbs provider (rxb -> rxa) against ib_read_bw -R
# between the same two rxe devices, same 1 MiB message size, interleaved
# in one guest boot. Emulated RDMA is slow and noisy: compare ratios only.
set -u
build=$1
K=$build/tools/kvmig
A=10.77.0.1
pages=${KVMIG_BENCH_PAGES:-32}   # 2 MiB pages: 64 MiB per migration
runs=${KVMIG_BENCH_RUNS:-5}
iters=$((pages * 2))             # ib_read_bw moves the same bytes in 1 MiB reads
out=$(mktemp -d)

for i in $(seq "$runs"); do
	timeout 120 ib_read_bw -d rxa -R -s 1048576 -n $iters -F > /dev/null 2>&1 &
	sleep 1
	timeout 120 ib_read_bw -d rxb -R -s 1048576 -n $iters -F $A > "$out/ib.$i" 2>&1
	wait
	mbs=$(awk '$1 == 1048576 { print $4 }' "$out/ib.$i")
	echo "run $i  ib_read_bw -R -s 1048576 -n $iters: ${mbs:-?} MB/s"
	timeout 600 $K bench --transport rdma --listen $A:0 --pages $pages --rounds 1 --no-pin > "$out/kv.$i" 2>&1
	grep -q "^median" "$out/kv.$i" || cat "$out/kv.$i"
	# "median    verify on  SECONDS s  ...": MB/s from the seconds (3 decimals)
	mb=$((pages * 2 * 1048576))
	on=$(awk -v b=$mb '/^median +verify on/ { printf "%.2f", b / $4 / 1e6 }' "$out/kv.$i")
	off=$(awk -v b=$mb '/^median +verify off/ { printf "%.2f", b / $4 / 1e6 }' "$out/kv.$i")
	echo "run $i  kvmig verify on ${on:-?} MB/s, verify off ${off:-?} MB/s"
	echo "$mbs $on $off" >> "$out/all"
done
python3 - "$out/all" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 3]
ib, on, off = (statistics.median(float(r[i]) for r in rows) for i in range(3))  # MB/s
print(f"median of {len(rows)} runs: ib_read_bw {ib:.1f} MB/s, kvmig verify on "
      f"{on:.1f} MB/s, verify off {off:.1f} MB/s")
print(f"ratio  kvmig (verify on) / ib_read_bw = {on / ib:.2f}x   (target >= 0.9x)")
print(f"ratio  kvmig (verify off) / ib_read_bw = {off / ib:.2f}x")
PY
rm -rf "$out"
