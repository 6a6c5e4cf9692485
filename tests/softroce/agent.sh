#!/bin/sh
# tests/softroce/agent.sh BUILD - run INSIDE the soft-RoCE guest (suite.sh):
# two kvmigd agents with rdma data listeners, on rxa (10.77.0.1) and rxb
# (10.77.0.2); a migration started through the source's API (kvmig.Client),
# moved over rdma, the destination byte for byte equal to the source before,
# both agents' metrics counting one rdma migration, both stopping cleanly.
set -u
build=$1
K=$build/tools/kvmig
D=$build/tools/kvmigd
py=$(cd "$(dirname "$0")/../../python" && pwd)
tmp=$(mktemp -d)
rc=1

[ -x "$D" ] || { echo "agent: $D was not built (libmicrohttpd missing?)"; exit 1; }
$K pager rm shm:ag-a --force >/dev/null 2>&1
$K pager rm shm:ag-b --force >/dev/null 2>&1
$K pager init shm:ag-a --preset tiny --seqs 3 --pages-per-seq 4 --capacity 64 >/dev/null
$K pager init shm:ag-b --preset tiny --capacity 64 >/dev/null
"$D" --pager shm:ag-a --listen 10.77.0.1:0 --transport rdma --socket "$tmp/a.sock" \
	>"$tmp/a.out" 2>"$tmp/a.err" &
pa=$!
"$D" --pager shm:ag-b --listen 10.77.0.2:0 --transport rdma --socket "$tmp/b.sock" \
	>"$tmp/b.out" 2>"$tmp/b.err" &
pb=$!
for _ in $(seq 100); do
	[ -s "$tmp/a.out" ] && [ -s "$tmp/b.out" ] && break
	sleep 0.1
done
cat "$tmp/a.out" "$tmp/b.out"
PYTHONPATH=$py KVMIG_LIB=$build/libkvmig.so PYTHONDONTWRITEBYTECODE=1 \
	timeout 120 /usr/bin/python3 - "$tmp" <<'PY' && rc=0
import sys
import kvmig

tmp = sys.argv[1]
a, b = kvmig.Client(f"unix:{tmp}/a.sock"), kvmig.Client(f"unix:{tmp}/b.sock")


def contents(name):
    with kvmig.open_pager(f"shm:{name}") as p:
        return {q.id: (q.fill, [p.page_bytes(i) for i in q.blocks]) for q in p.seqs()}


before = contents("ag-a")
assert b.health()["transport"] == "rdma", b.health()
mid = a.migrate(["seq-0", "seq-2"], to=b.health()["data_addr"], transport="rdma")
m = a.wait(mid, 60)
assert m["state"] == "committed" and m["transport"] == "rdma", m
d = [x for x in b.migrations() if x["role"] == "destination"]
assert len(d) == 1 and b.wait(d[0]["id"], 30)["state"] == "committed", d
after = contents("ag-b")
assert set(after) == {"seq-0", "seq-2"}, after.keys()
assert all(after[s] == before[s] for s in after), "the destination's bytes differ"
assert set(contents("ag-a")) == {"seq-1"}
for c, role in ((a, "source"), (b, "destination")):
    line = ('kvmig_migrations_total{role="%s",result="committed",transport="rdma"} 1'
            % role)
    assert line in c.metrics(), (role, c.metrics()[:2000])
print("agent: migration %s over rdma through the API, %d pages verified" % (mid, m["pages"]))
PY
kill -TERM $pa $pb
wait $pa || rc=1
wait $pb || rc=1
[ $rc -eq 0 ] || cat "$tmp/a.err" "$tmp/b.err"
$K pager rm shm:ag-a --force >/dev/null 2>&1
$K pager rm shm:ag-b --force >/dev/null 2>&1
rm -rf "$tmp"
exit $rc
