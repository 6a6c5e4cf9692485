#!/bin/sh
# tests/softroce/suite.sh BUILD - the soft-RoCE scenarios, run INSIDE the
# guest by run.sh (through boot.sh): two pairs of rxe devices in one network
# namespace, rxa on 10.77.0.1 and rxb on 10.77.0.2, rxc on 10.78.0.1 and rxd
# on 10.78.0.2 (stage2.sh).
#
# 1. tests/integration/test_migrate and test_crash (the crash matrix) over
#    the verbs provider. test_migrate: full cache,
#    layer-major, move and copy, subset with a shared prefix, meta and layout
#    mismatch, destination out of pages, unknown sequence, receiver and sender
#    killed mid-transfer, a wrong digest (EIO after one re-read), a wrong
#    key (the NIC refuses the read).
# 2. The CLI: --transport auto picks rdma on 10.77.0.1 and tcp on 127.0.0.1,
#    --transport rdma where no RDMA device serves the address is a clear error,
#    the RDMA device removed mid-transfer aborts both sides cleanly, and a
#    live migration while `kvmig pager run` decodes into the source.
# 3. kvmigd: two agents with rdma data listeners, one migration started
#    through the API (agent.sh).
# 4. What users run: scripts/rxe.sh makes an rxe device on each end of a new
#    veth pair (a third rxe pair), `kvmig demo --transport rdma` runs over
#    it, rxe.sh down removes them.
# 5. Several paths: test_migrate again with every migration on two queue
#    pairs, and one migration striped over both device pairs (recv --devices,
#    send --qps 2: four queue pairs), byte for byte, with both pairs' packet
#    counters showing their share.
set -u
build=$1
K=$build/tools/kvmig
A=10.77.0.1
fails=0
tmp=$(mktemp -d)

ok() { echo "ok - $1"; }
no() { echo "not ok - $1"; fails=$((fails + 1)); }
check() {
	name=$1
	shift
	if "$@"; then ok "$name"; else no "$name"; fi
}

ibv_devices
echo "== the provider contract, every provider (tcp and rdma)"
check "test_provider: every provider keeps the contract on $A" \
	env KVMIG_TEST_LISTEN=$A:0 KVMIG_TEST_EVERY_PROVIDER=1 timeout 600 "$build/tests/test_provider"

echo "== test_migrate over rdma"
check "test_migrate (rdma)" env KVMIG_TEST_TRANSPORT=rdma KVMIG_TEST_LISTEN=$A:0 \
	timeout 900 "$build/tests/test_migrate"

echo "== a Python migration over rdma (numpy vLLM-layout pager -> FlashInfer-layout pager)"
pyrdma() {
	py=$(dirname "$0")/../../python
	export PYTHONPATH=$py:$py/tests KVMIG_LIB=$build/libkvmig.so KVMIG_TEST_TRANSPORT=rdma \
		KVMIG_TEST_LISTEN=$A:0 PYTHONDONTWRITEBYTECODE=1
	/usr/bin/python3 "$py/tests/peer.py" recv flashinfer >"$tmp/py.rx" 2>"$tmp/py.rxe" &
	rx=$!
	for _ in $(seq 100); do [ -s "$tmp/py.rx" ] && break; sleep 0.1; done
	addr=$(head -n 1 "$tmp/py.rx")
	timeout 120 /usr/bin/python3 "$py/tests/peer.py" send vllm "$addr" >"$tmp/py.tx" || return 1
	wait $rx || return 1
	# the destination's digests (line 2) equal the source's before the move
	[ "$(sed -n 2p "$tmp/py.rx")" = "$(cat "$tmp/py.tx")" ] && [ -s "$tmp/py.tx" ]
}
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
	check "python: numpy pager migrated over rdma, byte for byte" pyrdma
else
	no "python: python3-numpy is missing in the guest"
fi

echo "== the agent over rdma (tests/softroce/agent.sh)"
check "agent: a migration started through kvmigd's API moved over rdma, byte for byte" \
	sh "$(dirname "$0")/agent.sh" "$build"

echo "== what users run: scripts/rxe.sh on a new veth pair, kvmig demo over rdma"
rxe_demo() {
	sc=$(dirname "$0")/../../scripts
	ip link add vx type veth peer name vy && ip addr add 10.79.0.1/24 dev vx &&
		ip addr add 10.79.0.2/24 dev vy && ip link set vx up && ip link set vy up || return 1
	sh "$sc/rxe.sh" up vx > "$tmp/rxe.out" && sh "$sc/rxe.sh" up vy >> "$tmp/rxe.out" || return 1
	cat "$tmp/rxe.out"
	grep -q "RDMA address 10.79.0.1" "$tmp/rxe.out" && rdma link show | grep -q "rxe_vy" || return 1
	timeout 300 $K demo --transport rdma --listen 10.79.0.1:0 --seqs 2 --pages-per-seq 6 \
		--shared-prefix 2 > "$tmp/demo.out" 2>&1
	r=$?
	cat "$tmp/demo.out"
	sh "$sc/rxe.sh" down || return 1
	ip link delete vx
	[ $r -eq 0 ] && grep -q " over rdma 10.79.0.1:" "$tmp/demo.out" &&
		grep -q "): identical" "$tmp/demo.out" && ! rdma link show | grep -q "rxe_v"
}
check "rxe.sh up on two new interfaces, kvmig demo over rdma byte for byte, rxe.sh down" rxe_demo

echo "== several paths: queue pairs and devices"
check "test_migrate (rdma, every migration on 2 queue pairs)" env KVMIG_TEST_TRANSPORT=rdma \
	KVMIG_TEST_LISTEN=$A:0 KVMIG_TEST_PATHS=2 timeout 900 "$build/tests/test_migrate"
# Packets each device sent and received, from its hardware counters.
pkts() {
	c=/sys/class/infiniband/$1/ports/1/hw_counters
	echo $(($(cat $c/sent_pkts) + $(cat $c/rcvd_pkts)))
}
stripe_devices() {
	$K pager init shm:st-a --seqs 3 --pages-per-seq 4 --capacity 16 > /dev/null || return 1
	$K pager init shm:st-b --capacity 16 > /dev/null || return 1
	M4=$($K capture --pager shm:st-a --store "$tmp/store") || return 1
	a0=$(($(pkts rxa) + $(pkts rxb)))
	c0=$(($(pkts rxc) + $(pkts rxd)))
	timeout 300 $K recv --transport rdma --listen $A:7476 --devices 10.77.0.1,10.78.0.1 \
		--pager shm:st-b --json --accept-timeout 60000 > "$tmp/recv6.json" 2> "$tmp/recv6.err" &
	rp=$!
	sleep 1
	timeout 300 $K send --transport rdma --to $A:7476 --qps 2 --pager shm:st-a --json \
		> "$tmp/send6.json" 2> "$tmp/send6.err"
	src=$?
	wait $rp
	rrc=$?
	a1=$(($(pkts rxa) + $(pkts rxb)))
	c1=$(($(pkts rxc) + $(pkts rxd)))
	cat "$tmp/send6.err" "$tmp/recv6.err"
	tail -n 1 "$tmp/send6.json"
	echo "packets: rxa+rxb $((a1 - a0)), rxc+rxd $((c1 - c0)) (24 MiB moved, 4 KiB MTU)"
	[ $src -eq 0 ] && [ $rrc -eq 0 ] || return 1
	python3 - "$tmp/send6.json" "$tmp/recv6.json" <<'PY' || return 1
import json, sys
for f in sys.argv[1:]:
    r = [json.loads(l) for l in open(f)][-1]
    assert r["event"] == "result" and r["transport"] == "rdma" and r["paths"] == 4, r
    assert r["pages"] == 12 and r["pages_verified"] == 12, r
PY
	$K verify --pager shm:st-b --store "$tmp/store" --manifest "$M4" || return 1
	# Each pair carried a share: at least a quarter of the 6144 4 KiB packets.
	[ $((a1 - a0)) -ge 1536 ] && [ $((c1 - c0)) -ge 1536 ]
}
check "striped over two device pairs (recv --devices, send --qps 2): byte for byte, both pairs carried reads" \
	stripe_devices
$K pager rm shm:st-a > /dev/null 2>&1
$K pager rm shm:st-b > /dev/null 2>&1

echo "== test_crash over rdma"
check "test_crash (rdma): a side dies at every protocol step, records resolve it" \
	env KVMIG_TEST_TRANSPORT=rdma KVMIG_TEST_LISTEN=$A:0 timeout 1500 "$build/tests/test_crash"

echo "== cli"
$K pager init shm:sr-a --preset tiny --seqs 4 --pages-per-seq 5 --shared-prefix 2 --capacity 64 > /dev/null
$K pager init shm:sr-b --preset tiny --capacity 64 > /dev/null
M=$($K capture --pager shm:sr-a --store "$tmp/store")

# auto on an rxe address: rdma on both sides, the receiver's json says so.
timeout 120 $K recv --transport auto --listen $A:7471 --pager shm:sr-b --json \
	--accept-timeout 60000 > "$tmp/recv.json" 2> "$tmp/recv.err" &
rp=$!
sleep 1
timeout 120 $K send --transport auto --to $A:7471 --pager shm:sr-a --mode copy --json \
	> "$tmp/send.json" 2> "$tmp/send.err"
src=$?
wait $rp
rrc=$?
check "auto send/recv exit 0 (sender $src, receiver $rrc)" [ $src -eq 0 ] && [ $rrc -eq 0 ]
cat "$tmp/send.err" "$tmp/recv.err"
check "both sides report rdma, 4 sequences, every page verified" python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
ev = {side: [json.loads(l) for l in open(f"{d}/{side}.json")] for side in ("send", "recv")}
assert ev["recv"][0] == {"event": "listening", "addr": "10.77.0.1:7471", "transport": "rdma"}, ev["recv"][0]
assert ev["send"][0]["transport"] == "rdma", ev["send"][0]
for side in ("send", "recv"):
    r = ev[side][-1]
    assert r["event"] == "result" and r["transport"] == "rdma", r
    assert r["seqs"] == 4 and r["pages"] == 14 and r["pages_verified"] == 14, r
PY
check "destination holds the source's sequences byte for byte (kvmig verify)" \
	$K verify --pager shm:sr-b --store "$tmp/store" --manifest "$M"

# auto on loopback: no RDMA device serves 127.0.0.1, so tcp.
timeout 60 $K recv --transport auto --listen 127.0.0.1:7472 --pager shm:sr-b --json \
	--accept-timeout 30000 > "$tmp/recv2.json" 2>&1 &
rp=$!
sleep 1
timeout 60 $K send --transport auto --to 127.0.0.1:7472 --pager shm:sr-a --mode copy --seqs seq-0 \
	--json > "$tmp/send2.json" 2>&1
src=$?
wait $rp
check "auto on 127.0.0.1 picks tcp (and seq-0, already there, is refused)" \
	python3 - "$tmp" "$src" <<'PY'
import json, sys
d = sys.argv[1]
s = [json.loads(l) for l in open(f"{d}/send2.json")]
r = [json.loads(l) for l in open(f"{d}/recv2.json")]
assert r[0]["transport"] == "tcp" and s[0]["transport"] == "tcp", (r[0], s[0])
assert r[-1]["event"] == "error" and r[-1]["errno"] == "EEXIST", r[-1]
PY

# Live over rdma: a decoding engine writes into the source while send --live
# pre-copies; the rounds re-read changed pages with RDMA READ, and the
# destination verifies against a capture taken from it.
$K pager init shm:lv-a --preset tiny --seqs 3 --pages-per-seq 4 --capacity 4096 > /dev/null
$K pager init shm:lv-b --preset tiny --capacity 4096 > /dev/null
$K pager run shm:lv-a --rate 300 --seconds 20 --json > "$tmp/run.json" 2>&1 &
ep=$!
timeout 120 $K recv --transport rdma --listen $A:7475 --pager shm:lv-b --json \
	--accept-timeout 60000 > "$tmp/recv5.json" 2> "$tmp/recv5.err" &
rp=$!
sleep 1
KVMIG_FAULT=send-round-stall:20 timeout 120 $K send --transport rdma --to $A:7475 \
	--pager shm:lv-a --live --max-rounds 3 --max-downtime-ms 0 --json \
	> "$tmp/send5.json" 2> "$tmp/send5.err"
src=$?
wait $rp
rrc=$?
cat "$tmp/send5.err" "$tmp/recv5.err"
check "live over rdma: exit 0 (sender $src, receiver $rrc)" [ $src -eq 0 ] && [ $rrc -eq 0 ]
check "live over rdma: pre-copy rounds (2 or 3) and the paused one, changed pages re-read" \
	python3 - "$tmp/send5.json" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
assert r["event"] == "result" and r["transport"] == "rdma", r
# Round 1 always finds pages the engine wrote during round 0; later rounds
# stop early once nothing is dirty.
paused = [x["paused"] for x in r["rounds"]]
assert paused in ([False, False, True], [False, False, False, True]), r["rounds"]
assert r["rounds"][1]["pages"] > 0 and r["bytes_sent"] > r["bytes"], r
PY
M3=$($K capture --pager shm:lv-b --store "$tmp/store")
check "live over rdma: the destination verifies" \
	$K verify --pager shm:lv-b --store "$tmp/store" --manifest "$M3"
kill -TERM $ep 2> /dev/null
wait $ep
$K pager rm shm:lv-a > /dev/null
$K pager rm shm:lv-b > /dev/null

# rdma where nothing serves the address: a clear error, not a hang.
timeout 60 $K send --transport rdma --to 127.0.0.1:7473 --pager shm:sr-a > "$tmp/out3" 2>&1
src=$?
cat "$tmp/out3"
check "send --transport rdma to 127.0.0.1 fails (exit $src) naming RDMA" \
	sh -c "[ $src -ne 0 ] && [ $src -ne 124 ] && grep -q 'no RDMA device serves' '$tmp/out3'"

# The RDMA device disappears mid-transfer: both sides abort, the source is
# resumed with the same bytes, the destination frees what it allocated.
$K pager init shm:dr-a --seqs 2 --pages-per-seq 24 --capacity 48 > /dev/null   # 96 MiB
$K pager init shm:dr-b --capacity 48 > /dev/null
M2=$($K capture --pager shm:dr-a --store "$tmp/store")
timeout 120 $K recv --transport rdma --listen $A:7474 --pager shm:dr-b --json \
	--accept-timeout 60000 --timeout 10000 > "$tmp/recv4.json" 2>&1 &
rp=$!
sleep 1
timeout 120 $K send --transport rdma --to $A:7474 --pager shm:dr-a --timeout 10000 --json \
	> "$tmp/send4.json" 2>&1 &
sp=$!
for i in $(seq 100); do
	grep -q '"pages":[1-9]' "$tmp/recv4.json" 2> /dev/null && break
	sleep 0.1
done
rdma link delete rxa
wait $sp
src=$?
wait $rp
rrc=$?
tail -n 1 "$tmp/send4.json" "$tmp/recv4.json"
check "device removed mid-transfer: both sides exit 6 (sender $src, receiver $rrc)" \
	[ $src -eq 6 ] && [ $rrc -eq 6 ]
check "device removed: the source holds the same bytes and sequences" \
	$K verify --pager shm:dr-a --store "$tmp/store" --manifest "$M2"
check "device removed: the destination freed every page it allocated" python3 -c '
import json, subprocess, sys
d = json.loads(subprocess.check_output([sys.argv[1], "pager", "show", "shm:dr-b", "--json"]))
assert d["occupied_pages"] == 0 and not d["logical_seqs"], d' "$K"
rdma link add rxa type rxe netdev va

$K pager rm shm:dr-a > /dev/null
$K pager rm shm:dr-b > /dev/null
$K pager rm shm:sr-a > /dev/null
$K pager rm shm:sr-b > /dev/null
rm -rf "$tmp"
echo "softroce: $fails failed"
[ $fails -eq 0 ]
