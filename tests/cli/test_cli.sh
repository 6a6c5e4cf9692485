#!/bin/sh
# CLI integration: pager init/show/rm, capture, restore, verify, inspect,
# demo, --help, and clear errors with documented exit codes. Independent
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
	"$KVMIG" pager rm shm:$SRC 2>/dev/null
	"$KVMIG" pager rm shm:$DST 2>/dev/null
	"$KVMIG" pager rm shm:$BIG 2>/dev/null
	for p in ma mb mc md me mf mg mh; do "$KVMIG" pager rm shm:kvmig-cli-$p-$$ >/dev/null 2>&1; done
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

for c in demo pager capture restore verify inspect send recv; do
	expect 0 "$c --help" "$KVMIG" $c --help
	grep -q usage "$T/out" || bad "$c --help prints usage"
done
expect 2 "no command" "$KVMIG"
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
	"$KVMIG" recv --listen 127.0.0.1:0 --pager shm:$pg --json --timeout 5000 "$@" \
		> "$T/recv.json" 2>"$T/recv.err" &
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

# The sender vanishes after the receiver's COMMIT (its ACK lost, fault
# point): the receiver exits 7 holding the sequences as "?ID", which
# `pager resolve --commit` installs under their own ids.
ME=kvmig-cli-me-$$
MF=kvmig-cli-mf-$$
"$KVMIG" pager init shm:$ME --preset tiny --seqs 2 --pages-per-seq 3 --capacity 16 >/dev/null
"$KVMIG" pager init shm:$MF --preset tiny --capacity 16 >/dev/null
start_recv $MF
KVMIG_FAULT=send-ack-lost "$KVMIG" send --to "$ADDR" --pager shm:$ME --quiet > "$T/out" 2>&1
src=$?
wait $RPID
rc=$?
[ $src -eq 0 ] && [ $rc -eq 7 ] && ok "ACK lost: sender 0, receiver 7" \
	|| bad "ACK lost: sender $src, receiver $rc"
"$KVMIG" pager show shm:$MF | grep -q '?seq-1' && ok "ACK lost: held as ?seq-1" \
	|| bad "ACK lost: held as ?seq-1"
expect 0 "pager resolve --commit" "$KVMIG" pager resolve shm:$MF --commit
grep -q "installed 2 held sequences" "$T/out" && ok "resolve reports 2" || bad "resolve reports 2"
"$KVMIG" pager show shm:$MF | grep -q ' seq-1 ' && ok "resolved: seq-1 installed" \
	|| bad "resolved: seq-1 installed"
expect_err 2 "--commit or --abort" "pager resolve without a decision" "$KVMIG" pager resolve \
	shm:$MF
for p in $MA $MB $MC $MD $ME $MF; do "$KVMIG" pager rm shm:$p >/dev/null; done

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
	[ "$(grep -c '^  round' "$T/out")" -eq 4 ] && grep -q '^verify    adds' "$T/out" &&
		grep -q '^  warm-up' "$T/out" && grep -q '^cpu       sender   verify on' "$T/out" &&
		grep -q '^cpu       receiver verify on' "$T/out" &&
		ok "bench $pin: 2 pairs, a warm-up, the overhead, both ends' CPU" ||
		{ bad "bench $pin: 2 pairs, a warm-up, the overhead, both ends' CPU"; cat "$T/out"; }
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
