#!/bin/sh
# tests/softroce/bench.sh BUILD - run INSIDE the guest (run.sh BUILD bench):
# kvmig migrations over the verbs provider (kvmig bench --transport rdma:
# digests ahead, hashed now, unverified) on one queue pair and on two
# (--paths 2), against ib_read_bw -R between the same two rxe devices with
# the same 1 MiB message size and bytes, interleaved in one guest boot.
# Emulated RDMA is slow and noisy: compare ratios only.
set -u
build=$1
K=$build/tools/kvmig
A=10.77.0.1
pages=${KVMIG_BENCH_PAGES:-128} # 2 MiB pages: 256 MiB per migration
runs=${KVMIG_BENCH_RUNS:-5}
iters=$((pages * 2))            # ib_read_bw moves the same bytes in 1 MiB reads
out=$(mktemp -d)
mb=$((pages * 2 * 1048576))

# "median    KIND WORDS  SECONDS s  ...": MB/s of kind $2 from its seconds.
rate() {
	awk -v b=$mb -v k="$2" 'index($0, "median    " k) == 1 {
		for (i = 2; i <= NF; i++) if ($(i + 1) == "s") { printf "%.2f", b / $i / 1e6; exit } }' "$1"
}

for i in $(seq "$runs"); do
	timeout 300 ib_read_bw -d rxa -R -s 1048576 -n $iters -F > /dev/null 2>&1 &
	sleep 1
	timeout 300 ib_read_bw -d rxb -R -s 1048576 -n $iters -F $A > "$out/ib.$i" 2>&1
	wait
	ib=$(awk '$1 == 1048576 { print $4 }' "$out/ib.$i")
	for q in 1 2; do
		timeout 900 $K bench --transport rdma --listen $A:0 --pages $pages --rounds 1 \
			--no-pin --paths $q > "$out/kv.$i.$q" 2>&1
		grep -q "^median" "$out/kv.$i.$q" || cat "$out/kv.$i.$q"
	done
	ahead=$(rate "$out/kv.$i.1" "digests ahead")
	hashed=$(rate "$out/kv.$i.1" "hashed now")
	off=$(rate "$out/kv.$i.1" "verify off")
	ahead2=$(rate "$out/kv.$i.2" "digests ahead")
	echo "run $i  ib_read_bw ${ib:-?} MB/s; kvmig 1 qp: ahead ${ahead:-?}, hashed ${hashed:-?}," \
		"off ${off:-?} MB/s; 2 qps: ahead ${ahead2:-?} MB/s"
	echo "$ib $ahead $hashed $off $ahead2" >> "$out/all"
done
python3 - "$out/all" "$pages" <<'PY'
import statistics, sys
rows = [[float(x) for x in l.split()] for l in open(sys.argv[1]) if len(l.split()) == 5]
if not rows:
    sys.exit("bench: no complete run")
med = [statistics.median(r[i] for r in rows) for i in range(5)]
ib, ahead, hashed, off, ahead2 = med
print(f"median of {len(rows)} runs, {int(sys.argv[2]) * 2} MiB per migration (MB/s): "
      f"ib_read_bw {ib:.1f}; kvmig 1 qp: digests ahead {ahead:.1f}, hashed now {hashed:.1f}, "
      f"verify off {off:.1f}; 2 qps: digests ahead {ahead2:.1f}")
for name, i in (("digests ahead", 1), ("hashed now", 2), ("verify off", 3)):
    rs = sorted(r[i] / r[0] for r in rows)
    print(f"ratio  kvmig ({name}) / ib_read_bw = {med[i] / ib:.2f}x  "
          f"(per run {rs[0]:.2f}..{rs[-1]:.2f}; target >= 0.9x)")
rs = sorted(r[4] / r[1] for r in rows)
print(f"ratio  kvmig 2 qps / 1 qp (digests ahead) = {ahead2 / ahead:.2f}x  "
      f"(per run {rs[0]:.2f}..{rs[-1]:.2f}; target >= 1.0x)")
PY
rm -rf "$out"
