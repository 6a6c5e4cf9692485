#!/bin/sh
# tests/valgrind/migrate.sh KVMIG - valgrind memcheck over one whole
# integration: a two-process migration over loopback TCP (kvmig recv and
# kvmig send each under memcheck), checked byte for byte afterwards, plus two
# failing migrations (destination out of pages, meta mismatch). Any memcheck
# error or definite leak in either process fails the test (exit 99 from
# valgrind), as does a wrong exit status. (Capture and restore are left out:
# their store reads go through io_uring, whose kernel writes memcheck cannot
# see, so every byte read that way looks uninitialised to it.)
set -u
K=$1
command -v valgrind > /dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 77; }
VG="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
T=$(mktemp -d)
A=kvmig-vg-a-$$ B=kvmig-vg-b-$$ C=kvmig-vg-c-$$ D=kvmig-vg-d-$$
fails=0
cleanup() {
	for p in $A $B $C $D; do "$K" pager rm shm:$p > /dev/null 2>&1; done
	rm -rf "$T"
}
trap cleanup EXIT
report() { # WANT GOT NAME LOG: ok, or not ok and the log
	if [ "$2" -eq "$1" ]; then
		echo "ok - $3"
	else
		echo "not ok - $3 (exit $2, expected $1)"
		cat "$4"
		fails=$((fails + 1))
	fi
}
expect() { # CODE NAME CMD...
	want=$1 name=$2
	shift 2
	"$@" > "$T/out" 2>&1
	report "$want" $? "$name" "$T/out"
}
# migrate CODE_SEND CODE_RECV NAME SRC DST: recv and send, both under memcheck
migrate() {
	$VG "$K" recv --listen 127.0.0.1:0 --pager shm:$5 --json --timeout 20000 \
		--accept-timeout 60000 > "$T/recv.json" 2> "$T/recv.err" &
	rp=$!
	for i in $(seq 200); do
		port=$(sed -n 's/.*"addr":"127.0.0.1:\([0-9]*\)".*/\1/p' "$T/recv.json" 2> /dev/null)
		[ -n "$port" ] && break
		sleep 0.1
	done
	expect "$1" "$3: send" $VG "$K" send --to 127.0.0.1:$port --pager shm:$4 --timeout 20000
	wait $rp
	report "$2" $? "$3: recv" "$T/recv.err"
}

"$K" pager init shm:$A --preset tiny --seqs 3 --pages-per-seq 4 --shared-prefix 1 --capacity 32 > /dev/null
"$K" pager init shm:$B --preset tiny --capacity 32 > /dev/null
"$K" pager init shm:$C --preset tiny --capacity 4 > /dev/null
"$K" pager init shm:$D --preset tiny --layers 4 --capacity 32 > /dev/null
M=$("$K" capture --pager shm:$A --store "$T/store")
migrate 0 0 "migration" $A $B
expect 0 "destination verifies against the source's manifest" \
	"$K" verify --pager shm:$B --store "$T/store" --manifest "$M"
migrate 5 5 "destination out of pages" $B $C
migrate 4 4 "meta mismatch" $B $D
echo "valgrind: $fails failed"
[ $fails -eq 0 ]
