#!/bin/sh
# CLI integration: pager init/show/rm, capture, restore, verify, inspect,
# store check, demo, --help, and clear errors with documented exit codes. Independent
# checkers: xxhsum -H2 over blob files, python3's json and xxhash modules
# over the manifest.
set -u
KVMIG=$1
PY=/usr/bin/python3
T=$(mktemp -d /tmp/kvmig-cli-XXXXXX)
SRC=kvmig-cli-src-$$
DST=kvmig-cli-dst-$$
BIG=kvmig-cli-big-$$
fails=0
passes=0

cleanup() {
	"$KVMIG" pager rm --force shm:$SRC 2>/dev/null
	"$KVMIG" pager rm --force shm:$DST 2>/dev/null
	"$KVMIG" pager rm --force shm:$BIG 2>/dev/null
	for p in ma mb mc md me mf mg mh mi mj mk ml mm mn mo mp mq; do "$KVMIG" pager rm --force shm:kvmig-cli-$p-$$ >/dev/null 2>&1; done
	rm -rf "$T"
}
trap cleanup EXIT

ok() { passes=$((passes + 1)); echo "ok - $1"; }
bad() { fails=$((fails + 1)); echo "not ok - $1"; }
# expect CODE NAME CMD...: run, check exit code
expect() {
	want=$1; name=$2; shift 2
	"$@" >"$T/out" 2>"$T/err"
	got=$?
	if [ "$got" -eq "$want" ]; then ok "$name"; else
		bad "$name (exit $got, expected $want)"; cat "$T/out" "$T/err"; fi
}
# expect_err CODE PATTERN NAME CMD...: also check stderr names the problem
expect_err() {
	want=$1; pat=$2; name=$3; shift 3
	expect "$want" "$name" "$@"
	if grep -q -- "$pat" "$T/err"; then ok "$name: message"; else
		bad "$name: stderr lacks \"$pat\""; cat "$T/err"; fi
	if [ "$(wc -l < "$T/err")" -eq 1 ]; then ok "$name: one line"; else
		bad "$name: error is not one line"; fi
}

for c in demo pager capture restore verify inspect send recv store; do
	expect 0 "$c --help" "$KVMIG" $c --help
	grep -q usage "$T/out" || bad "$c --help prints usage"
done
expect 2 "no command" "$KVMIG"
expect_err 2 'names "seq-0" twice' "send --seqs naming one twice: a usage error, before connecting" \
	"$KVMIG" send --to 127.0.0.1:1 --pager shm:$SRC --seqs seq-0,seq-1,seq-0
expect_err 2 "unknown command" "unknown command" "$KVMIG" frobnicate

expect 0 "pager init" "$KVMIG" pager init shm:$SRC --preset tiny --layout layer-major \
	--capacity 32 --seqs 3 --pages-per-seq 5 --shared-prefix 2 --seed 11
expect 0 "pager init dst" "$KVMIG" pager init shm:$DST --preset tiny --layout layer-major \
	--capacity 32
expect_err 1 "File exists" "pager init twice" "$KVMIG" pager init shm:$DST --preset tiny
expect_err 2 "unknown dtype" "bad dtype" "$KVMIG" pager init shm:x --dtype int4
expect_err 5 "capacity is" "seqs do not fit" "$KVMIG" pager init shm:$BIG --preset tiny \
	--capacity 4 --seqs 3
expect 0 "pager show" "$KVMIG" pager show shm:$SRC
grep -q "seq-2" "$T/out" && ok "show lists sequences" || bad "show lists sequences"
expect 0 "pager show --json" "$KVMIG" pager show shm:$SRC --json
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["occupied_pages"]==11 and len(d["logical_seqs"])==3' \
	"$T/out" && ok "show --json parses" || bad "show --json parses"
# A name with a quote and a byte that is not UTF-8 still gives valid JSON,
# and so does an error line naming it.
Q="kvmig-cli-q\"$(printf '\351')-$$"
expect 0 "pager init, odd name" "$KVMIG" pager init "shm:$Q" --preset tiny --capacity 4
expect 0 "pager show --json, odd name" "$KVMIG" pager show "shm:$Q" --json
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["pager"].startswith("shm:kvmig-cli-q")' \
	"$T/out" && ok "show --json, odd name: valid JSON" || { bad "show --json, odd name"; cat "$T/out"; }
expect 1 "send --json, odd missing name" "$KVMIG" send --json --to 127.0.0.1:1 --pager "shm:$Q-x"
$PY -c 'import json,sys; d=[json.loads(l) for l in open(sys.argv[1])][-1]; assert d["event"]=="error" and "kvmig-cli-q" in d["message"], d' \
	"$T/out" && ok "send --json error line, odd name: valid JSON" || { bad "send --json error, odd name"; cat "$T/out"; }
"$KVMIG" pager rm "shm:$Q" > /dev/null

expect 0 "capture" "$KVMIG" capture --pager shm:$SRC --store "$T/store"
M=$(cat "$T/out")
case "$M" in xxh128:????????????????????????????????) ok "capture prints digest";;
	*) bad "capture prints digest ($M)";; esac
HEX=${M#xxh128:}
MF="$T/store/objects/$(echo "$HEX" | cut -c1-2)/$(echo "$HEX" | cut -c3-)"
# Independent checks: xxhsum over the manifest and every page blob it names,
# python3's json over the manifest.
[ "$(xxhsum -H2 "$MF" | cut -d' ' -f1)" = "$HEX" ] && ok "xxhsum manifest" || bad "xxhsum manifest"
$PY - "$MF" "$T/store" <<'PYEOF' && ok "python json + xxhsum blobs" || bad "python json + xxhsum blobs"
import json, subprocess, sys
m = json.load(open(sys.argv[1]))
assert list(m) == ["layout", "page_size_tokens", "n_layers", "n_heads", "head_dim", "dtype",
                   "pages", "logical_seqs"], list(m)
assert m["layout"] == "layer_major" and m["dtype"] == "f16"
assert [p["ix"] for p in m["pages"]] == sorted(p["ix"] for p in m["pages"])
assert len(m["pages"]) == 11 and len(m["logical_seqs"]) == 3
for p in m["pages"]:
    for h in ("k", "v"):
        hx = p[h][len("xxh128:"):]
        f = "%s/objects/%s/%s" % (sys.argv[2], hx[:2], hx[2:])
        out = subprocess.run(["xxhsum", "-H2", f], capture_output=True, text=True).stdout
        assert out.split()[0] == hx, (out, hx)
        assert len(open(f, "rb").read()) == 2 * 2 * 16 * 4 * 2
import xxhash  # python3-xxhash: a second, independent XXH3-128
data = open(sys.argv[1], "rb").read()
assert xxhash.xxh3_128_hexdigest(data) == sys.argv[1].split("/")[-2] + sys.argv[1].split("/")[-1]
PYEOF

expect 0 "inspect" "$KVMIG" inspect --store "$T/store" --manifest "$M"
grep -q "pages:    11" "$T/out" && ok "inspect counts pages" || bad "inspect counts pages"
expect 0 "restore" "$KVMIG" restore --pager shm:$DST --store "$T/store" --manifest "$M"
expect 0 "verify" "$KVMIG" verify --pager shm:$DST --store "$T/store" --manifest "$M"
expect_err 1 "already installed" "restore twice" "$KVMIG" restore --pager shm:$DST \
	--store "$T/store" --manifest "$M"

# Meta mismatch: exit 4, destination untouched.
"$KVMIG" pager init shm:$BIG --preset tiny --heads 4 --capacity 32 >/dev/null
expect_err 4 "differs\|but the pager is" "meta mismatch" "$KVMIG" restore --pager shm:$BIG \
	--store "$T/store" --manifest "$M"
"$KVMIG" pager show shm:$BIG --json > "$T/big.json"
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["occupied_pages"]==0' "$T/big.json" \
	&& ok "mismatch left pager untouched" || bad "mismatch left pager untouched"
"$KVMIG" pager rm shm:$BIG

# Bad input.
expect_err 2 "32 hex" "bad digest" "$KVMIG" restore --pager shm:$DST --store "$T/store" \
	--manifest xxh128:abc
expect_err 1 "not in the store" "absent manifest" "$KVMIG" inspect --store "$T/store" \
	--manifest xxh128:00000000000000000000000000000000
expect_err 1 "unknown pager spec" "bad pager spec" "$KVMIG" capture --pager mem --store "$T/store"
expect_err 1 "No such file" "absent pager" "$KVMIG" capture --pager shm:nope-$$ --store "$T/store"
expect_err 2 "is required" "missing --store" "$KVMIG" capture --pager shm:$SRC

# Corrupt a page blob: verify against the (intact) source still passes, a
# restore into a fresh pager fails with exit 3 and installs nothing.
K=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["pages"][0]["k"][7:])' "$MF")
KF="$T/store/objects/$(echo "$K" | cut -c1-2)/$(echo "$K" | cut -c3-)"
printf 'X' | dd of="$KF" bs=1 seek=5 conv=notrunc 2>/dev/null
"$KVMIG" pager init shm:$BIG --preset tiny --layout layer-major --capacity 32 >/dev/null
expect_err 3 "corrupt" "corrupt blob" "$KVMIG" restore --pager shm:$BIG --store "$T/store" \
	--manifest "$M"
"$KVMIG" pager show shm:$BIG --json > "$T/big.json"
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["occupied_pages"]==0 and not d["logical_seqs"]' \
	"$T/big.json" && ok "corrupt blob installed nothing" || bad "corrupt blob installed nothing"

# Verify notices a changed destination page (exit 3).
"$KVMIG" pager rm shm:$SRC
"$KVMIG" pager init shm:$SRC --preset tiny --layout layer-major --capacity 32 --seqs 3 \
	--pages-per-seq 5 --shared-prefix 2 --seed 12 >/dev/null
"$KVMIG" capture --pager shm:$SRC --store "$T/store2" > "$T/m2" 2>/dev/null
expect_err 3 "differs from the manifest" "verify mismatch" "$KVMIG" verify --pager shm:$DST \
	--store "$T/store2" --manifest "$(cat "$T/m2")"

# A FIFO in a blob's place: a restore fails at once (exit 3) naming it, where
# it used to block for ever opening it.
S3="$T/store3"
"$KVMIG" capture --pager shm:$SRC --store "$S3" > "$T/m3" 2>/dev/null
M3=$(cat "$T/m3")
H3=${M3#xxh128:}
NB=$(find "$S3/objects" -type f | wc -l)
expect 0 "store check, good store" "$KVMIG" store check "$S3"
grep -q "^$NB blobs checked, 0 bad" "$T/out" && ok "store check counts $NB blobs" ||
	{ bad "store check counts $NB blobs"; cat "$T/out"; }
$PY -c 'import json,sys; p=json.load(open(sys.argv[1]))["pages"]; print(p[0]["k"][7:], p[1]["k"][7:], p[2]["v"][7:])' \
	"$S3/objects/$(echo "$H3" | cut -c1-2)/$(echo "$H3" | cut -c3-)" > "$T/b3"
read -r B1 B2 B3 < "$T/b3"
blobf() { echo "$S3/objects/$(echo "$1" | cut -c1-2)/$(echo "$1" | cut -c3-)"; }
F1=$(blobf "$B1"); F2=$(blobf "$B2"); F3=$(blobf "$B3")
rm "$F3" && mkfifo "$F3"
expect_err 3 "xxh128:$B3 in .* is a FIFO, not a regular file" "restore, FIFO blob" \
	timeout 20 "$KVMIG" restore --pager shm:$BIG --store "$S3" --manifest "$M3"
"$KVMIG" pager show shm:$BIG --json > "$T/big.json"
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["occupied_pages"]==0 and not d["logical_seqs"]' \
	"$T/big.json" && ok "FIFO blob: nothing installed" || bad "FIFO blob: nothing installed"

# store check names a corrupt (same size), a truncated and a FIFO blob: exit 3.
$PY -c 'import sys; f=open(sys.argv[1],"r+b"); b=f.read(1); f.seek(0); f.write(bytes([b[0]^0xff]))' "$F1"
truncate -s 100 "$F2"
expect 3 "store check, 3 bad blobs" "$KVMIG" store check "$S3"
grep -q "^corrupt .*objects/.*${B1#??}: blob xxh128:$B1 is corrupt" "$T/out" &&
	grep -q "^corrupt .*objects/.*${B2#??}: .*its 100 bytes hash to" "$T/out" &&
	grep -q "^not-regular .*objects/.*${B3#??}: blob xxh128:$B3 is a FIFO" "$T/out" &&
	grep -q "^$NB blobs checked, 3 bad" "$T/out" && ok "store check names each bad blob" ||
	{ bad "store check names each bad blob"; cat "$T/out"; }
expect 3 "store check --json" "$KVMIG" store check --json "$S3"
$PY - "$T/out" "$B1" "$B2" "$B3" "$NB" <<'PY' && ok "store check --json lines" || { bad "store check --json lines"; cat "$T/out"; }
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
issues = {e["digest"][7:]: e for e in ev if e["event"] == "issue"}
assert issues[sys.argv[2]]["problem"] == "corrupt" and issues[sys.argv[2]]["errno"] == "EIO"
assert issues[sys.argv[3]]["problem"] == "corrupt"
assert issues[sys.argv[4]]["problem"] == "not-regular" and "FIFO" in issues[sys.argv[4]]["message"]
assert len(issues) == 3 and not any(e["removed"] for e in issues.values())
s = ev[-1]
assert s["event"] == "summary" and s["bad"] == 3 and s["blobs"] == int(sys.argv[5]) and s["exit"] == 3, s
PY
# The next capture writes all three again, and says so.
expect 0 "capture repairs" "$KVMIG" capture --pager shm:$SRC --store "$S3"
grep -q "3 blobs written (3 repaired" "$T/err" && ok "capture reports 3 repaired" ||
	{ bad "capture reports 3 repaired"; cat "$T/err"; }
[ "$(xxhsum -H2 "$F1" | cut -d' ' -f1)" = "$B1" ] && [ -f "$F3" ] &&
	[ "$(xxhsum -H2 "$F3" | cut -d' ' -f1)" = "$B3" ] && ok "repaired blobs hash to their names" ||
	bad "repaired blobs hash to their names"
expect 0 "store check after repair" "$KVMIG" store check "$S3"
# --repair removes a bad blob; the next capture writes it back.
truncate -s 10 "$F2"
expect 3 "store check --repair" "$KVMIG" store check --repair "$S3"
grep -q "^corrupt .*${B2#??}: .*(removed)" "$T/out" && [ ! -e "$F2" ] &&
	ok "--repair removed the bad blob" || { bad "--repair removed the bad blob"; cat "$T/out"; }
"$KVMIG" capture --pager shm:$SRC --store "$S3" 2>"$T/err" >/dev/null
grep -q "1 blobs written" "$T/err" && [ "$(xxhsum -H2 "$F2" | cut -d' ' -f1)" = "$B2" ] &&
	ok "capture after --repair writes it back" || { bad "capture after --repair"; cat "$T/err"; }
expect_err 1 "no store at" "store check, no store" "$KVMIG" store check "$T/typo"
expect_err 2 "one store directory" "store check without DIR" "$KVMIG" store check
expect_err 2 "unknown subcommand" "store frob" "$KVMIG" store frob "$S3"

# A capture killed mid-write leaves a temp file; check calls it a dead
# writer's (not bad: exit 0), and the next capture removes it.
S6="$T/store6"
KVMIG_FAULT=store-write-stall:20000 "$KVMIG" capture --pager shm:$SRC --store "$S6" \
	>/dev/null 2>&1 &
CPID=$!
for _ in $(seq 200); do [ -n "$(ls -A "$S6/tmp" 2>/dev/null)" ] && break; sleep 0.05; done
kill -KILL $CPID
wait $CPID 2>/dev/null
expect 0 "store check, dead writer's temp file" "$KVMIG" store check "$S6"
grep -q "^temp .*tmp/$CPID\.[0-9]*\.[0-9a-f]*\.[0-9]*: left by process $CPID, which is gone" "$T/out" &&
	ok "store check names the dead writer" || { bad "store check names the dead writer"; cat "$T/out"; }
expect 0 "capture after a killed one" "$KVMIG" capture --pager shm:$SRC --store "$S6"
[ -z "$(ls -A "$S6/tmp")" ] && ok "dead writer's temp file removed" ||
	{ bad "dead writer's temp file removed"; ls -A "$S6/tmp"; }

# SIGINT during a restore: exit 1, nothing installed, every page it
# allocated freed: the pager shows exactly what it showed before.
# cas-stall (test-only) makes each batch of 32 pages take 300 ms.
MI=kvmig-cli-mi-$$
MJ=kvmig-cli-mj-$$
"$KVMIG" pager init shm:$MI --preset tiny --capacity 256 --seqs 4 --pages-per-seq 40 >/dev/null
"$KVMIG" capture --pager shm:$MI --store "$T/store7" > "$T/m7" 2>/dev/null
"$KVMIG" pager init shm:$MJ --preset tiny --capacity 512 --seqs 2 --pages-per-seq 3 --seed 4 \
	>/dev/null
"$KVMIG" pager show shm:$MJ --json > "$T/mj-before.json"
KVMIG_FAULT=cas-stall:300 "$KVMIG" restore --pager shm:$MJ --store "$T/store7" \
	--manifest "$(cat "$T/m7")" > "$T/out" 2>"$T/err" &
RPID=$!
# Its pages allocated, the restore is between batches with its handler set.
for _ in $(seq 200); do
	n=$("$KVMIG" pager show shm:$MJ --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["occupied_pages"])')
	[ "$n" -gt 6 ] && break
	sleep 0.05
done
kill -INT $RPID
wait $RPID
rc=$?
[ $rc -eq 1 ] && ok "restore SIGINT: exit 1" || { bad "restore SIGINT: exit $rc"; cat "$T/err"; }
grep -q "^kvmig restore: interrupted by SIGINT: nothing installed into shm:$MJ, every page allocated here freed" \
	"$T/err" && [ "$(wc -l < "$T/err")" -eq 1 ] && ok "restore SIGINT: one line says so" ||
	{ bad "restore SIGINT: message"; cat "$T/err"; }
"$KVMIG" pager show shm:$MJ --json > "$T/mj-after.json"
cmp -s "$T/mj-before.json" "$T/mj-after.json" && ok "restore SIGINT: pager as before" ||
	{ bad "restore SIGINT: pager as before"; cat "$T/mj-before.json" "$T/mj-after.json"; }
# SIGTERM during a capture: exit 1, no manifest printed, no temp file left
# (test_capture checks that the pager was resumed: its pause depth is 0).
KVMIG_FAULT=cas-stall:300 "$KVMIG" capture --pager shm:$MI --store "$T/store8" \
	> "$T/out" 2>"$T/err" &
CPID=$!
for _ in $(seq 200); do
	[ -n "$(find "$T/store8/objects" -type f 2>/dev/null | head -n 1)" ] && break
	sleep 0.05
done
kill -TERM $CPID
wait $CPID
rc=$?
[ $rc -eq 1 ] && [ ! -s "$T/out" ] && grep -q "interrupted by SIGTERM: shm:$MI resumed" "$T/err" &&
	ok "capture SIGTERM: exit 1, no manifest" || { bad "capture SIGTERM: exit $rc"; cat "$T/out" "$T/err"; }
[ -z "$(ls -A "$T/store8/tmp")" ] && ok "capture SIGTERM: no temp file" ||
	bad "capture SIGTERM: temp files left"
# A second signal does not wait for the clean abort: a capture stuck in a
# write (store-write-stall sleeps through signals, as on a hung filesystem)
# dies of the second SIGINT.
KVMIG_FAULT=store-write-stall:10000 "$KVMIG" capture --pager shm:$MI --store "$T/store9" \
	> /dev/null 2>&1 &
CPID=$!
for _ in $(seq 200); do [ -n "$(ls -A "$T/store9/tmp" 2>/dev/null)" ] && break; sleep 0.05; done
kill -INT $CPID
sleep 0.3
kill -0 $CPID 2>/dev/null && ok "capture, stuck: the first SIGINT waits for the batch" ||
	bad "capture, stuck: the first SIGINT waits for the batch"
kill -INT $CPID
wait $CPID
rc=$?
[ $rc -eq 130 ] && ok "capture, stuck: the second SIGINT kills it" ||
	bad "capture, stuck: second SIGINT: exit $rc, expected 130"
for p in $MI $MJ; do "$KVMIG" pager rm shm:$p >/dev/null; done

expect 0 "demo" "$KVMIG" demo --seqs 2 --pages-per-seq 6 --shared-prefix 2
grep -q "^checked .*identical" "$T/out" && ok "demo checks bytes" || bad "demo checks bytes"

# send / recv over loopback, --json checked by python3's json module.
MA=kvmig-cli-ma-$$
MB=kvmig-cli-mb-$$
MC=kvmig-cli-mc-$$
"$KVMIG" pager init shm:$MA --preset tiny --capacity 32 --seqs 3 --pages-per-seq 5 \
	--shared-prefix 2 >/dev/null
"$KVMIG" pager init shm:$MB --preset tiny --capacity 32 >/dev/null
"$KVMIG" pager init shm:$MC --capacity 4 >/dev/null
# start_recv PAGER [opts]: receiver in the background, its bound address in $ADDR
start_recv() {
	pg=$1; shift
	rm -f "$T/recv.json"
	KVMIG_FAULT="${RECV_FAULT:-}" "$KVMIG" recv --listen 127.0.0.1:0 --pager shm:$pg --json \
		--timeout 5000 "$@" > "$T/recv.json" 2>"$T/recv.err" &
	RPID=$!
	for _ in $(seq 100); do
		ADDR=$($PY -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["event"] == "listening": print(e["addr"])' "$T/recv.json" 2>/dev/null)
		[ -n "$ADDR" ] && return 0
		sleep 0.05
	done
	bad "receiver did not report its address"; cat "$T/recv.err"
}
start_recv $MB
expect 0 "send --json --seqs --mode copy" "$KVMIG" send --to "$ADDR" --pager shm:$MA --json \
	--seqs seq-0,seq-2 --mode copy
wait $RPID; rc=$?
[ $rc -eq 0 ] && ok "recv exit 0" || { bad "recv exit $rc"; cat "$T/recv.err"; }
$PY - "$T/out" "$T/recv.json" <<'PY' && ok "json events and results" || bad "json events and results"
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
r = [json.loads(l) for l in open(sys.argv[2])]
for ev in (s, r):
    assert ev[-1]["event"] == "result", ev[-1]
    assert ev[-1]["pages"] == 2 + 2 * 3 and ev[-1]["seqs"] == 2, ev[-1]
    assert ev[-1]["pages_verified"] == 8
    assert any(e["event"] == "phase" and e["phase"] == "transfer" for e in ev)
assert s[-1]["mode"] == "copy" and s[-1]["pages_freed"] == 0 and "pause_ms" in s[-1]
assert r[-1]["bytes"] == 8 * 1024
PY
"$KVMIG" pager show shm:$MB > "$T/show"
grep -q "2 sequences" "$T/show" && ok "destination holds the two sequences" || bad "destination seqs"
grep -q "3 sequences" "$T/out" 2>/dev/null; "$KVMIG" pager show shm:$MA | grep -q "3 sequences" \
	&& ok "copy mode keeps the source" || bad "copy mode keeps the source"

# Several paths: --streams 3 to a receiver with two path hosts (both this
# host): six connections, said in both results; the flags' usage errors.
"$KVMIG" pager init shm:kvmig-cli-mq-$$ --preset tiny --capacity 32 >/dev/null
start_recv kvmig-cli-mq-$$ --devices 127.0.0.1,127.0.0.1
expect 0 "send --streams 3 to two path hosts" "$KVMIG" send --to "$ADDR" --pager shm:$MA --json \
	--seqs seq-1 --mode copy --streams 3
wait $RPID; rc=$?
[ $rc -eq 0 ] && ok "recv --devices exit 0" || { bad "recv --devices exit $rc"; cat "$T/recv.err"; }
$PY - "$T/out" "$T/recv.json" <<'PY' && ok "both results say 6 paths" || bad "both results say 6 paths"
import json, sys
for f in sys.argv[1:]:
    r = [json.loads(l) for l in open(f)][-1]
    assert r["event"] == "result" and r["paths"] == 6 and r["pages_verified"] == 5, r
PY
expect_err 2 "1 to 8" "send --qps 9" "$KVMIG" send --to 127.0.0.1:1 --pager shm:$MA --qps 9
expect_err 2 "option of send" "recv --paths" "$KVMIG" recv --pager shm:$MB --paths 2
expect_err 2 "option of recv" "send --devices" "$KVMIG" send --to 127.0.0.1:1 --pager shm:$MA \
	--devices 127.0.0.1
expect_err 1 "wildcard" "recv --devices 0.0.0.0: refused before listening, named" \
	"$KVMIG" recv --listen 127.0.0.1:0 --pager shm:kvmig-cli-mq-$$ --devices 0.0.0.0

# Meta mismatch: exit 4 on both sides, one-line errors naming it.
start_recv $MC
expect_err 4 "meta mismatch" "send meta mismatch" "$KVMIG" send --to "$ADDR" --pager shm:$MA
wait $RPID; rc=$?
[ $rc -eq 4 ] && ok "recv meta mismatch exit 4" || bad "recv meta mismatch exit $rc"
grep -q '"errno":"EPROTO"' "$T/recv.json" && ok "recv --json error names EPROTO" || bad "recv json error"

# Move mode frees the source; nobody listening is exit 6.
MD=kvmig-cli-md-$$
"$KVMIG" pager init shm:$MD --preset tiny --capacity 32 >/dev/null
start_recv $MD
expect 0 "send move" "$KVMIG" send --to "$ADDR" --pager shm:$MA --quiet
wait $RPID
"$KVMIG" pager show shm:$MA | grep -q "0 pages occupied" && ok "move frees the source" \
	|| bad "move frees the source"
expect_err 6 "cannot connect" "nobody listening" "$KVMIG" send --to "$ADDR" --pager shm:$MA \
	--timeout 1000
expect_err 2 "move or copy" "bad --mode" "$KVMIG" send --to 127.0.0.1:1 --pager shm:$MA --mode fast
expect_err 2 "HOST:PORT" "bad address" "$KVMIG" send --to nowhere --pager shm:$MA
expect_err 2 "HOST:PORT" "bad port" "$KVMIG" recv --listen 127.0.0.1:99999 --pager shm:$MA

# Shared secret: owner-only files of 16+ bytes; a wrong one is exit 8 on both
# sides before anything moves; the same one migrates.
printf 'correct horse battery staple\n' > "$T/tok"
printf 'correct horse battery stapler\n' > "$T/tok2"
printf 'too short\n' > "$T/tok3"
chmod 644 "$T/tok"
chmod 600 "$T/tok2" "$T/tok3"
expect_err 2 "chmod 600" "token file open to others" "$KVMIG" send --to 127.0.0.1:1 \
	--pager shm:$MD --token-file "$T/tok"
chmod 600 "$T/tok"
expect_err 2 "16 bytes" "token too short" "$KVMIG" send --to 127.0.0.1:1 --pager shm:$MD \
	--token-file "$T/tok3"
start_recv $MA --token-file "$T/tok"
expect_err 8 "shared secret" "wrong token: send" "$KVMIG" send --to "$ADDR" --pager shm:$MD \
	--token-file "$T/tok2"
wait $RPID
rc=$?
[ $rc -eq 8 ] && ok "wrong token: recv exit 8" || bad "wrong token: recv exit $rc"
"$KVMIG" pager show shm:$MA | grep -q "0 pages occupied" && ok "wrong token: nothing received" \
	|| bad "wrong token: nothing received"
start_recv $MA --token-file "$T/tok"
expect 0 "same token: send" "$KVMIG" send --to "$ADDR" --pager shm:$MD --token-file "$T/tok" --quiet
wait $RPID
rc=$?
[ $rc -eq 0 ] && ok "same token: recv exit 0" || bad "same token: recv exit $rc"

# The sender's decision (its COMMIT_ACK) is lost with the connection (fault
# point): both exit 7, in doubt. The source's sequences are departed, the
# destination's pending: neither runs them. `pager status` shows both
# records; `pager rm` refuses a pager holding one; `pager resolve` with
# both pagers activates the destination's copy and releases the source's.
ME=kvmig-cli-me-$$
MF=kvmig-cli-mf-$$
"$KVMIG" pager init shm:$ME --preset tiny --seqs 2 --pages-per-seq 3 --capacity 16 >/dev/null
"$KVMIG" pager init shm:$MF --preset tiny --capacity 16 >/dev/null
start_recv $MF
KVMIG_FAULT=send-ack-lost "$KVMIG" send --to "$ADDR" --pager shm:$ME --quiet > "$T/out" 2>&1
src=$?
wait $RPID
rc=$?
[ $src -eq 7 ] && [ $rc -eq 7 ] && ok "ACK lost: sender 7, receiver 7" \
	|| bad "ACK lost: sender $src, receiver $rc"
"$KVMIG" pager show shm:$MF | grep -q 'seq-1 .*\[pending, migration' \
	&& ok "ACK lost: pending at the destination" || bad "ACK lost: pending at the destination"
"$KVMIG" pager show shm:$ME | grep -q 'seq-1 .*\[departed, migration' \
	&& ok "ACK lost: departed at the source" || bad "ACK lost: departed at the source"
expect 0 "pager status --json" "$KVMIG" pager status shm:$MF --json
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["records"]; assert len(r)==1 and r[0]["state"]=="prepared" and r[0]["role"]=="destination" and r[0]["in_doubt"] and r[0]["seqs"]==2' \
	"$T/out" && ok "status: prepared, in doubt" || bad "status: prepared, in doubt"
expect 0 "pager status (text)" "$KVMIG" pager status shm:$ME
grep -q "source, departed (move), 2 sequences" "$T/out" && ok "status: departed" \
	|| bad "status: departed"
expect_err 1 "migration record" "pager rm refuses records" "$KVMIG" pager rm shm:$MF
expect 0 "pager resolve (both pagers)" "$KVMIG" pager resolve shm:$MF shm:$ME
grep -q "1 activated, 2 finished, 0 aborted, 0 still in doubt" "$T/out" \
	&& ok "resolve: activated, then both closed" || { bad "resolve: activated, then both closed"; cat "$T/out"; }
"$KVMIG" pager show shm:$MF | grep -q ' seq-1  .*3,4,5$' && ok "resolved: seq-1 runs at the destination" \
	|| bad "resolved: seq-1 runs at the destination"
"$KVMIG" pager show shm:$ME | grep -q '0 pages occupied (0 B), 0 sequences' \
	&& ok "resolved: the source released its copy" || bad "resolved: the source released its copy"
"$KVMIG" pager status shm:$ME | grep -q ': 0 migration records' && ok "resolved: no record left" \
	|| bad "resolved: no record left"
# Across hosts: the destination's prepared record, given the source's
# state by hand (it has none: the COMMIT was lost, the sender aborted).
MK=kvmig-cli-mk-$$
"$KVMIG" pager init shm:$MK --preset tiny --seqs 1 --pages-per-seq 2 --capacity 16 >/dev/null
ML=kvmig-cli-ml-$$
"$KVMIG" pager init shm:$ML --preset tiny --capacity 16 >/dev/null
RECV_FAULT=recv-commit-lost
start_recv $ML
RECV_FAULT=
"$KVMIG" send --to "$ADDR" --pager shm:$MK --quiet > "$T/out" 2>&1
src=$?
wait $RPID
rc=$?
[ $src -eq 6 ] && [ $rc -eq 7 ] && ok "COMMIT lost: sender 6, receiver 7" \
	|| bad "COMMIT lost: sender $src, receiver $rc"
"$KVMIG" pager status shm:$ML --json > "$T/st"
MIG=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["records"][0]["migration"])' "$T/st" 2>/dev/null)
expect_err 2 "go together" "pager resolve --migration alone" "$KVMIG" pager resolve shm:$ML \
	--migration "${MIG:-0}"
expect_err 2 "not a record state" "pager resolve bad state" "$KVMIG" pager resolve shm:$ML \
	--migration "${MIG:-0}" --peer-state maybe
expect 7 "pager resolve, the source still deciding: exit 7" "$KVMIG" pager resolve shm:$ML \
	--migration "${MIG:-0}" --peer-state sending
grep -q "0 activated, 0 finished, 0 aborted, 1 still in doubt" "$T/out" \
	&& ok "resolve: nothing done while the source decides" || { bad "resolve: nothing done while the source decides"; cat "$T/out"; }
"$KVMIG" pager status shm:$ML > "$T/out"
grep -q "destination, prepared, 1 sequence;" "$T/out" && ok "status: a destination's record (no mode)" \
	|| { bad "status: a destination's record (no mode)"; cat "$T/out"; }
expect 0 "pager resolve --peer-state none" "$KVMIG" pager resolve shm:$ML --migration "${MIG:-0}" \
	--peer-state none
grep -q "0 activated, 0 finished, 1 aborted" "$T/out" && ok "by hand: aborted" \
	|| { bad "by hand: aborted"; cat "$T/out"; }
"$KVMIG" pager show shm:$ML | grep -q '0 pages occupied (0 B), 0 sequences' \
	&& ok "by hand: the pending copy and its pages are gone" \
	|| bad "by hand: the pending copy and its pages are gone"
expect_err 2 "shm:NAME shm:OTHER" "pager resolve without a peer" "$KVMIG" pager resolve shm:$MF
# The same lost decision, then a fresh send / recv between the two pagers:
# the receiver says its pager holds an unresolved record, and their
# handshake activates the destination's copy and releases the source's
# before the new migration (of nothing left) runs.
MO=kvmig-cli-mo-$$
MP=kvmig-cli-mp-$$
"$KVMIG" pager init shm:$MO --preset tiny --seqs 2 --pages-per-seq 3 --capacity 16 >/dev/null
"$KVMIG" pager init shm:$MP --preset tiny --capacity 16 >/dev/null
start_recv $MP
KVMIG_FAULT=send-ack-lost "$KVMIG" send --to "$ADDR" --pager shm:$MO --quiet > "$T/out" 2>&1
wait $RPID
start_recv $MP
expect 0 "reconnect: send" "$KVMIG" send --to "$ADDR" --pager shm:$MO --json
wait $RPID
rc=$?
[ $rc -eq 0 ] && ok "reconnect: recv exit 0" || { bad "reconnect: recv exit $rc"; cat "$T/recv.err"; }
$PY - "$T/out" "$T/recv.json" <<'PY' && ok "reconnect: the handshake resolved the records (JSON)" || { bad "reconnect: the handshake resolved the records (JSON)"; cat "$T/out" "$T/recv.json"; }
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
r = [json.loads(l) for l in open(sys.argv[2])]
assert any(e["event"] == "records" and e["unresolved"] == 1 for e in r), r
rs, rr = s[-1], r[-1]
assert rs["event"] == "result" and rs["resolved"]["finished"] == 1 and rs["seqs"] == 0, rs
assert rr["event"] == "result" and rr["resolved"]["activated"] == 1, rr
assert rr["resolved"]["finished"] == 1 and not rr["unconfirmed"], rr
PY
"$KVMIG" pager show shm:$MP | grep -q '2 sequences' && ! "$KVMIG" pager show shm:$MP | grep -q pending \
	&& ok "reconnect: both sequences run at the destination" || bad "reconnect: both sequences run at the destination"
"$KVMIG" pager status shm:$MO | grep -q ': 0 migration records' && "$KVMIG" pager status shm:$MP | grep -q ': 0 migration records' \
	&& ok "reconnect: no record left on either side" || bad "reconnect: no record left on either side"
for p in $MO $MP; do "$KVMIG" pager rm shm:$p >/dev/null; done
for p in $MA $MB $MC $MD $ME $MF $MK $ML; do "$KVMIG" pager rm shm:$p >/dev/null; done

# pager rm refuses a pager in use (a receiver waits on it) and says so;
# --force removes it anyway. SIGINT / SIGTERM: a clean abort on either side.
MM=kvmig-cli-mm-$$
MN=kvmig-cli-mn-$$
"$KVMIG" pager init shm:$MM --preset tiny --seqs 2 --pages-per-seq 3 --capacity 16 >/dev/null
"$KVMIG" pager init shm:$MN --preset tiny --capacity 16 >/dev/null
start_recv $MN
expect_err 1 "in use by process $RPID" "pager rm refuses a pager in use" "$KVMIG" pager rm shm:$MN
kill -INT $RPID
wait $RPID
rc=$?
[ $rc -eq 1 ] && grep -q "interrupted by SIGINT" "$T/recv.json" && ok "recv: SIGINT while waiting" \
	|| { bad "recv: SIGINT while waiting (exit $rc)"; cat "$T/recv.json" "$T/recv.err"; }
# The sender stalls before its FINAL (fault point): SIGTERM the receiver
# meanwhile. It frees what it allocated, the sender is told and resumes.
start_recv $MN
KVMIG_FAULT=send-stall:4000 "$KVMIG" send --to "$ADDR" --pager shm:$MM --timeout 8000 \
	> "$T/out" 2> "$T/err" &
SPID=$!
sleep 1
kill -TERM $RPID
wait $RPID
rc=$?
wait $SPID
src=$?
[ $rc -eq 1 ] && [ $src -eq 6 ] && ok "recv: SIGTERM mid-transfer (receiver 1, sender 6)" \
	|| { bad "recv: SIGTERM mid-transfer (receiver $rc, sender $src)"; cat "$T/recv.json" "$T/err"; }
grep -q "the receiver was interrupted" "$T/err" && ok "the sender is told the receiver was interrupted" \
	|| { bad "the sender is told the receiver was interrupted"; cat "$T/err"; }
"$KVMIG" pager show shm:$MN | grep -q '0 pages occupied (0 B), 0 sequences' \
	&& ok "SIGTERM: the destination holds nothing" || bad "SIGTERM: the destination holds nothing"
"$KVMIG" pager show shm:$MM | grep -q '6 pages occupied.*2 sequences' \
	&& ok "SIGTERM: the source keeps its sequences" || bad "SIGTERM: the source keeps its sequences"
# The receiver stalls (fault point): SIGINT the sender meanwhile.
RECV_FAULT=recv-stall:3000
start_recv $MN
RECV_FAULT=
"$KVMIG" send --to "$ADDR" --pager shm:$MM --timeout 8000 > "$T/out" 2> "$T/err" &
SPID=$!
sleep 1
kill -INT $SPID
wait $SPID
src=$?
wait $RPID
[ $src -eq 1 ] && grep -q "interrupted by SIGINT: the migration was aborted; the source pager is resumed" "$T/err" \
	&& ok "send: SIGINT mid-transfer" || { bad "send: SIGINT mid-transfer (exit $src)"; cat "$T/err"; }
"$KVMIG" pager status shm:$MM --json > "$T/st"
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["paused"]==0 and d["records"]==[]' "$T/st" \
	&& ok "SIGINT: the source is resumed, no record left" || { bad "SIGINT: the source is resumed, no record left"; cat "$T/st"; }
start_recv $MN
expect 0 "pager rm --force of a pager in use" "$KVMIG" pager rm --force shm:$MN
kill $RPID 2>/dev/null
wait $RPID 2>/dev/null
"$KVMIG" pager init shm:$MN --preset tiny --capacity 16 >/dev/null
# A peer that is not kvmig: exit 6 ("misbehaved"), not 4 (a meta mismatch).
$PY - > "$T/port" <<'PY' &
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.recv(4096); c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4); c.close()
PY
GPID=$!
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.05; done
expect_err 6 "kvmig magic" "a peer that is not kvmig" "$KVMIG" send --to 127.0.0.1:$(cat "$T/port") \
	--pager shm:$MM --timeout 3000
wait $GPID
start_recv $MN
$PY -c 'import socket,sys; h,p=sys.argv[1].rsplit(":",1); s=socket.create_connection((h,int(p))); s.sendall(b"GET / HTTP/1.0\r\n\r\n"); s.recv(100)' "$ADDR" 2>/dev/null
wait $RPID
rc=$?
[ $rc -eq 6 ] && grep -q "kvmig magic" "$T/recv.json" && ok "recv: garbage from a client is exit 6" \
	|| { bad "recv: garbage from a client (exit $rc)"; cat "$T/recv.json"; }
for p in $MM $MN; do "$KVMIG" pager rm shm:$p >/dev/null; done
# A /dev/shm too small for the pager: a clear error, nothing left behind (a
# private 8 MiB tmpfs over /dev/shm in a mount namespace; needs root).
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
	unshare -m sh -c "mount -t tmpfs -o size=8m tmpfs /dev/shm && \
		'$KVMIG' pager init shm:small --capacity 16; echo \$? > '$T/rc'; ls /dev/shm > '$T/ls'" \
		> "$T/out" 2> "$T/err"
	[ "$(cat "$T/rc")" = 1 ] && grep -q "cannot reserve .*/dev/shm has" "$T/err" && [ ! -s "$T/ls" ] \
		&& ok "pager init on a full /dev/shm: a clear error, nothing left" \
		|| { bad "pager init on a full /dev/shm (exit $(cat "$T/rc"))"; cat "$T/err" "$T/ls"; }
else
	echo "# not root or no mount namespaces: pager init on a full /dev/shm not tried"
fi

# Live: `pager run` decodes into the source while `send --live` pre-copies;
# the JSON result lists the rounds (the last one paused), the engine saw its
# sequences moved away, and the destination verifies against a capture of it.
MG=kvmig-cli-mg-$$
MH=kvmig-cli-mh-$$
"$KVMIG" pager init shm:$MG --preset tiny --seqs 3 --pages-per-seq 4 --capacity 4096 >/dev/null
"$KVMIG" pager init shm:$MH --preset tiny --capacity 4096 >/dev/null
"$KVMIG" pager run shm:$MG --rate 2000 --seconds 3 --json > "$T/run.json" 2>"$T/run.err" &
EPID=$!
sleep 0.2
start_recv $MH
# send-round-stall (test-only): each round after round 0 waits 10 ms, so the
# engine has dirtied pages whatever the machine's speed.
expect 0 "send --live" env KVMIG_FAULT=send-round-stall:10 "$KVMIG" send --to "$ADDR" \
	--pager shm:$MG --live --max-rounds 3 --max-downtime-ms 0 --json
wait $RPID
rc=$?
[ $rc -eq 0 ] && ok "live: recv exit 0" || { bad "live: recv exit $rc"; cat "$T/recv.err"; }
wait $EPID
$PY - "$T/out" "$T/run.json" <<'PY' && ok "live: rounds in json, engine saw them moved" \
	|| { bad "live: rounds in json, engine saw them moved"; cat "$T/out" "$T/run.json"; }
import json, sys
res = [json.loads(l) for l in open(sys.argv[1])][-1]
run = json.loads(open(sys.argv[2]).read())
r = res["rounds"]
# Round 1 always finds pages written during round 0; a later round that
# finds nothing dirty ends the pre-copy early.
assert res["event"] == "result" and [x["paused"] for x in r] in (
    [False, False, True], [False, False, False, True]), r
assert r[1]["pages"] > 0, r
assert r[0]["pages"] >= 12 and res["bytes_sent"] >= res["bytes"], res
assert run["gone"] == 3 and run["tokens"] > 0, run
PY
"$KVMIG" pager show shm:$MG | grep -q "0 pages occupied" && ok "live move frees the source" \
	|| bad "live move frees the source"
M=$("$KVMIG" capture --pager shm:$MH --store "$T/live" 2>/dev/null)
expect 0 "live: destination verifies" "$KVMIG" verify --pager shm:$MH --store "$T/live" \
	--manifest "$M"
expect_err 2 "options of send" "recv --live" "$KVMIG" recv --pager shm:$MH --live
expect_err 2 "round count" "bad --max-rounds" "$KVMIG" send --to 127.0.0.1:1 --pager shm:$MH \
	--live --max-rounds 0
expect_err 2 "positive number" "pager run bad rate" "$KVMIG" pager run shm:$MH --rate -1
for p in $MG $MH; do "$KVMIG" pager rm shm:$p >/dev/null; done

# The bench's sender and receiver agree on which migrations verify (a
# mismatch fails the handshake): a tiny run, both placements.
for pin in --pin --no-pin; do
	expect 0 "bench $pin" "$KVMIG" bench --pages 8 --rounds 2 --no-iperf3 $pin
	# Each round: digests ahead (the sender hashes none of the 8 pages),
	# hashed now (all 8), unverified.
	[ "$(grep -c '^  round' "$T/out")" -eq 6 ] && grep -q '^verify    adds' "$T/out" &&
		[ "$(grep -c 'digests ahead  .*(digests ahead 8, hashed 0)' "$T/out")" -eq 2 ] &&
		[ "$(grep -c 'hashed now .*(digests ahead 0, hashed 8)' "$T/out")" -eq 2 ] &&
		grep -q '^  warm-up' "$T/out" && grep -q '^cpu       sender   digests ahead' "$T/out" &&
		grep -q '^cpu       receiver digests ahead' "$T/out" &&
		ok "bench $pin: 2 rounds of three kinds, a warm-up, the overheads, both ends' CPU" ||
		{ bad "bench $pin: 2 rounds of three kinds, a warm-up, the overheads, both ends' CPU"; cat "$T/out"; }
done
expect_err 2 "rounds is" "bench bad --rounds" "$KVMIG" bench --rounds 0
# Only capture makes a store: a mistyped --store elsewhere is an error, and
# creates nothing.
expect_err 1 "no store at" "restore, no store" "$KVMIG" restore --pager shm:$DST \
	--store "$T/typo" --manifest "$M"
[ ! -e "$T/typo" ] && ok "restore, no store: nothing created" ||
	bad "restore, no store: created $T/typo"
# getopt's own complaint is off: one line naming the argument.
expect_err 2 'unknown option or missing value at "--bogus"' "unknown option" "$KVMIG" capture --bogus
expect_err 2 'missing value at "--to"' "option without its value" "$KVMIG" send --to

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
