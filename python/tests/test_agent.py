# SPDX-License-Identifier: MIT
"""kvmigd: two agents (two processes, two shm pagers) driven with curl and
kvmig.Client. Run by tests/agent/run.sh with KVMIG_BIN and KVMIGD_BIN set."""
import errno
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import kvmig

KVMIG = os.environ["KVMIG_BIN"]
KVMIGD = os.environ["KVMIGD_BIN"]
_n = [0]


def pager(seqs=4, pages_per_seq=4, preset="tiny", capacity=64):
    _n[0] += 1
    name = f"kvagt{os.getpid()}x{_n[0]}"
    subprocess.run([KVMIG, "pager", "rm", f"shm:{name}", "--force"], capture_output=True)
    subprocess.run([KVMIG, "pager", "init", f"shm:{name}", "--preset", preset, "--capacity",
                    str(capacity), "--seqs", str(seqs), "--pages-per-seq", str(pages_per_seq)],
                   check=True, capture_output=True)
    return name


class Agent:
    """One kvmigd over shm:NAME, its API on a unix socket under tmp."""

    def __init__(self, tmp, name, pager_name, *args, env=None, sock=True):
        self.tmp, self.name, self.pager_name, self.args = tmp, name, pager_name, args
        self.sock = str(tmp / f"{name}.sock")
        self.use_sock = sock
        self.env = dict(os.environ, **(env or {}))
        self.start()

    @staticmethod
    def _sanitized(env):
        # Under the sanitizer build, kvmigd reports leaks and halts on errors.
        if "KVMIGD_ASAN_OPTIONS" in env:
            env = dict(env, ASAN_OPTIONS=env["KVMIGD_ASAN_OPTIONS"])
        return env

    def start(self, env=None, args=None):
        argv = [KVMIGD, "--pager", f"shm:{self.pager_name}", "--listen", "127.0.0.1:0"]
        argv += ["--socket", self.sock] if self.use_sock else ["--no-socket"]
        argv += list(self.args if args is None else args)
        self.log = open(self.tmp / f"{self.name}.log", "ab")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log,
                                  env=self._sanitized(self.env if env is None else env))
        r, _, _ = select.select([self.p.stdout], [], [], 10)
        line = self.p.stdout.readline().decode() if r else ""
        assert "data on " in line, f"kvmigd did not start: {line!r} " \
            f"{open(self.tmp / f'{self.name}.log').read()}"
        self.data = line.split("data on ")[1].split(",")[0]
        self.control = line.split("control on ")[1].strip()
        self.c = kvmig.Client(f"unix:{self.sock}") if self.use_sock else None

    def kill(self, sig=signal.SIGKILL):
        self.p.send_signal(sig)
        self.p.wait(10)

    def stop(self):
        """SIGTERM, as systemd stops it: it must exit 0, its log clean."""
        if self.p.poll() is not None:
            return
        self.p.terminate()
        try:
            rc = self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"kvmigd {self.name} did not stop within 20 s of SIGTERM")
        log = open(self.tmp / f"{self.name}.log", errors="replace").read()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            assert bad not in log, f"kvmigd {self.name}: {bad}\n{log[-3000:]}"
        assert rc == 0, f"kvmigd {self.name} exited {rc} on SIGTERM\n{log[-2000:]}"


@pytest.fixture
def agents(tmp_path):
    made, pagers = [], []

    def make(name, pager_name, *args, **kw):
        a = Agent(tmp_path, name, pager_name, *args, **kw)
        made.append(a)
        return a

    def new_pager(*a, **kw):
        p = pager(*a, **kw)
        pagers.append(p)
        return p
    make.pager = new_pager
    yield make
    for a in made:
        a.stop()
    for p in pagers:
        subprocess.run([KVMIG, "pager", "rm", f"shm:{p}", "--force"], capture_output=True)


def contents(name, ids=None):
    """{seq id: (fill, [page bytes...], state)} read from the shm pager."""
    with kvmig.open_pager(f"shm:{name}") as p:
        return {q.id: (q.fill, [p.page_bytes(i) for i in q.blocks], q.state)
                for q in p.seqs() if ids is None or q.id in ids}


def used_pages(name):
    with kvmig.open_pager(f"shm:{name}") as p:
        return len(p.occupied())


def records(name):
    with kvmig.open_pager(f"shm:{name}") as p:
        return p.records()


def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def dest_migration(agent):
    ms = [m for m in agent.c.migrations() if m["role"] == "destination"]
    return ms[0] if ms else None


def one_sentence(msg):
    assert msg and "\n" not in msg and len(msg) < 600, msg


# ---- migrations end to end ----

def test_migration_end_to_end(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a, b = agents("a", pa), agents("b", pb)
    before = contents(pa)
    mid = a.c.migrate(["seq-0", "seq-2"], to=b.data)
    m = a.c.wait(mid, 20)
    assert m["state"] == "committed", m
    assert m["pages"] == 8 and m["sequences"] == 2 and m["transport"] == "tcp"
    after_b, after_a = contents(pb), contents(pa)
    assert set(after_b) == {"seq-0", "seq-2"}
    for s in ("seq-0", "seq-2"):
        assert after_b[s] == before[s], f"{s} differs at the destination"
    assert set(after_a) == {"seq-1", "seq-3"}
    assert records(pa) == [] and records(pb) == []
    d = until(lambda: dest_migration(b), what="destination entry")
    d = b.c.wait(d["id"], 10)
    assert d["state"] == "committed" and d["record"] == m["record"]
    pg = b.c.pager()
    assert pg["used_pages"] == 8 and pg["free_pages"] == 56 and pg["capacity_pages"] == 64


def test_migration_over_several_paths(agents):
    """A start's "paths" with the destination's --devices: 3 x 2 connections, byte for
    byte; a bad "paths" is refused and starts nothing."""
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a, b = agents("a", pa), agents("b", pb, "--devices", "127.0.0.1,127.0.0.1")
    before = contents(pa)
    for bad in (0, 9, "2", -1):
        with pytest.raises(kvmig.AgentError) as e:
            a.c.migrate(["seq-0"], to=b.data, paths=bad)
        assert e.value.status == 400 and "paths" in str(e.value), e.value
    assert a.c.migrations() == []
    mid = a.c.migrate(["seq-1", "seq-3"], to=b.data, paths=3)
    m = a.c.wait(mid, 20)
    assert m["state"] == "committed", m
    assert m["paths"] == 3 and m["connections"] == 6 and m["pages"] == 8, m
    after = contents(pb)
    assert {s: after[s] for s in after} == {s: before[s] for s in ("seq-1", "seq-3")}
    d = b.c.wait(until(lambda: dest_migration(b), what="destination entry")["id"], 10)
    assert d["state"] == "committed" and d["connections"] == 6, d
    assert records(pa) == [] and records(pb) == []


def curl(agent, *args):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # (sanitizer runs)
    r = subprocess.run(["curl", "-sS", "--unix-socket", agent.sock, "-w", "\n%{http_code}",
                        *args], capture_output=True, text=True, timeout=30, env=env)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def test_curl_walkthrough(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a, b = agents("a", pa), agents("b", pb)
    before = contents(pa, {"seq-1"})
    code, body = curl(a, "http://kvmigd/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, body = curl(a, "-X", "POST", "http://kvmigd/v1/migrations", "-H",
                      "Content-Type: application/json",
                      "-d", json.dumps({"seqs": ["seq-1"], "to": b.data, "mode": "copy"}))
    assert code == 202, body
    mid = json.loads(body)["id"]
    code, body = curl(a, f"http://kvmigd/v1/migrations/{mid}?wait_ms=10000")
    assert code == 200 and json.loads(body)["state"] == "committed", body
    assert contents(pb) == before
    assert "seq-1" in contents(pa)  # copy: the source keeps it
    code, body = curl(b, "http://kvmigd/v1/pager")
    assert code == 200 and [s["id"] for s in json.loads(body)["sequences"]] == ["seq-1"]


def test_three_concurrent_migrations(agents):
    pa, pb = agents.pager(seqs=6), agents.pager(seqs=0)
    # Each sender stalls 400 ms in its transfer: the three overlap for sure.
    a = agents("a", pa, env={"KVMIG_FAULT": "send-stall:400"})
    b = agents("b", pb)
    before = contents(pa)
    groups = [["seq-0", "seq-1"], ["seq-2"], ["seq-3", "seq-5"]]
    ids = [a.c.migrate(g, to=b.data) for g in groups]
    for mid in ids:
        assert a.c.wait(mid, 30)["state"] == "committed"
    ev = list(a.c.events(since=0, follow=False))
    started = [e["seq"] for e in ev if e["event"] == "started"]
    finished = [e["seq"] for e in ev if e["event"] == "finished"]
    assert len(started) == 3 and max(started) < min(finished), "the three did not overlap"
    after = contents(pb)
    assert set(after) == {"seq-0", "seq-1", "seq-2", "seq-3", "seq-5"}
    for s in after:
        assert after[s] == before[s]
    assert set(contents(pa)) == {"seq-4"}
    dests = [m for m in b.c.migrations() if m["role"] == "destination"]
    assert len(dests) == 3 and all(m["state"] == "committed" for m in dests)


def stalled_move(agents, stall_ms):
    """A (its sender stalling @stall_ms mid-transfer) moving seq-0, seq-1 to an
    empty B: (pa, pb, a, b, A's contents before, the migration's id)."""
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a = agents("a", pa, env={"KVMIG_FAULT": f"send-stall:{stall_ms}"})
    b = agents("b", pb)
    before = contents(pa)
    return pa, pb, a, b, before, a.c.migrate(["seq-0", "seq-1"], to=b.data)


def test_delete_mid_transfer(agents):
    pa, pb, a, b, before, mid = stalled_move(agents, 1500)
    until(lambda: a.c.migration(mid)["phase"] == "transfer" if "phase" in a.c.migration(mid)
          else False, what="transfer")
    # the destination allocates its pages once the OFFER lands, just after
    until(lambda: used_pages(pb) > 0, what="the destination's allocation")
    r = a.c.abort(mid)
    assert r["abort_requested"] is True
    m = a.c.wait(mid, 20)
    assert m["state"] == "aborted" and m["error"]["errno"] == errno.ECANCELED, m
    one_sentence(m["error"]["message"])
    assert contents(pa) == before, "the source changed"
    d = b.c.wait(until(lambda: dest_migration(b))["id"], 20)
    assert d["state"] == "aborted"
    assert contents(pb) == {} and used_pages(pb) == 0 and records(pb) == []
    assert records(pa) == []
    with pytest.raises(kvmig.AgentError) as e:
        a.c.abort(mid)
    assert e.value.status == 409


def test_destination_killed_mid_transfer(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    # The sender stalls with everything offered: the destination has its
    # pages allocated and its reads unanswered when it is killed.
    a = agents("a", pa, env={"KVMIG_FAULT": "send-stall:2000"})
    b = agents("b", pb)
    before = contents(pa)
    mid = a.c.migrate(["seq-0", "seq-3"], to=b.data, timeout_ms=5000)
    until(lambda: (dest_migration(b) or {}).get("phase") == "transfer", what="dest transfer")
    until(lambda: used_pages(pb) > 0, what="destination pages")
    b.kill()
    m = a.c.wait(mid, 20)
    assert m["state"] == "aborted", m
    one_sentence(m["error"]["message"])
    assert contents(pa) == before and records(pa) == []
    b.start()
    assert used_pages(pb) == 0, "orphan pages after the restart"
    assert records(pb) == [] and contents(pb) == {}
    # The restarted agent takes the next migration.
    assert a.c.wait(a.c.migrate(["seq-0"], to=b.data), 20)["state"] == "committed"
    assert contents(pb)["seq-0"] == before["seq-0"]


def test_source_killed_after_commit_resolved_through_api(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a = agents("a", pa, env={"KVMIG_FAULT": "die-send-decided"})
    b = agents("b", pb)
    before = contents(pa)
    a.c.migrate(["seq-1", "seq-2"], to=b.data, timeout_ms=3000)
    a.p.wait(20)  # it died right after recording its decision
    d = b.c.wait(until(lambda: dest_migration(b))["id"], 30)
    assert d["state"] == "in_doubt", d
    rb = b.c.records()
    assert rb["in_doubt"] == 1 and rb["records"][0]["state"] == "prepared"
    assert rb["sequences_in_doubt"] == 2
    env = {k: v for k, v in os.environ.items() if k != "KVMIG_FAULT"}
    a.start(env=env)
    ra = a.c.records()
    assert ra["in_doubt"] == 1 and ra["records"][0]["state"] == "departed"
    assert ra["records"][0]["migration"] == rb["records"][0]["migration"]
    metrics = a.c.metrics()
    assert "kvmig_in_doubt_sequences 2" in metrics
    # Nothing runs on either side meanwhile: pending there, departed here.
    assert {s: v[2] for s, v in contents(pb).items()} == {"seq-1": "pending", "seq-2": "pending"}
    assert contents(pa, {"seq-1"})["seq-1"][2] == "departed"
    res = b.c.resolve_with(a.c)
    assert res["activated"] == 1 and res["finished"] >= 1 and res["in_doubt"] == 0, res
    after = contents(pb)
    assert set(after) == {"seq-1", "seq-2"}
    for s in after:
        assert after[s][:2] == before[s][:2] and after[s][2] == "active"
    assert set(contents(pa)) == {"seq-0", "seq-3"}
    assert records(pa) == [] and records(pb) == []


def test_source_killed_before_decision_resolved_through_api(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a = agents("a", pa, env={"KVMIG_FAULT": "die-send-commit-recv"})
    b = agents("b", pb)
    before = contents(pa)
    a.c.migrate(["seq-1"], to=b.data, timeout_ms=3000)
    a.p.wait(20)
    d = b.c.wait(until(lambda: dest_migration(b))["id"], 30)
    assert d["state"] == "in_doubt", d
    env = {k: v for k, v in os.environ.items() if k != "KVMIG_FAULT"}
    a.start(env=env)
    # The source had not decided: its restart aborted its record (gc).
    assert a.c.records()["records"] == []
    assert contents(pa) == before
    rec = b.c.records()["records"][0]["migration"]
    r = b.c.resolve(rec, "none")
    assert r["aborted"] == 1
    assert contents(pb) == {} and used_pages(pb) == 0 and records(pb) == []


# ---- hostile and malformed requests ----

def raw(agent, method, path, body=None, headers=None):
    conn = kvmig.client._UnixConnection(agent.sock, 10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode(), dict(r.getheaders())
    finally:
        conn.close()


def test_bad_requests_start_nothing(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a, b = agents("a", pa), agents("b", pb)
    before = contents(pa)
    good = {"seqs": ["seq-0"], "to": b.data}
    cases = [
        ("POST", "/v1/migrations", b"{not json", 400, "not valid JSON"),
        ("POST", "/v1/migrations", b"", 400, "no body"),
        ("POST", "/v1/migrations", b"[1,2]", 400, "JSON object"),
        ("POST", "/v1/migrations", json.dumps(dict(good, colour="red")), 400, "unknown field"),
        ("POST", "/v1/migrations", json.dumps(dict(good, seqs="seq-0")), 400, "seqs"),
        ("POST", "/v1/migrations", json.dumps(dict(good, seqs=[])), 400, "seqs"),
        ("POST", "/v1/migrations", json.dumps(dict(good, seqs=[7])), 400, "element 0"),
        ("POST", "/v1/migrations", json.dumps(dict(good, seqs=["a\u0000b"])), 400, "NUL"),
        ("POST", "/v1/migrations", json.dumps(dict(good, seqs=["seq-0", "seq-0"])), 400, "twice"),
        ("POST", "/v1/migrations", json.dumps(dict(good, to=7400)), 400, "\"to\""),
        ("POST", "/v1/migrations", json.dumps(dict(good, to="nowhere")), 400, "\"to\""),
        ("POST", "/v1/migrations", json.dumps({"seqs": ["seq-0"]}), 400, "\"to\""),
        ("POST", "/v1/migrations", json.dumps(dict(good, mode="fly")), 400, "mode"),
        ("POST", "/v1/migrations", json.dumps(dict(good, live="yes")), 400, "live"),
        ("POST", "/v1/migrations", json.dumps(dict(good, live={"rounds": 3})), 400, "live.rounds"),
        ("POST", "/v1/migrations", json.dumps(dict(good, live={"max_rounds": 0})), 400,
         "max_rounds"),
        ("POST", "/v1/migrations", json.dumps(dict(good, timeout_ms=-1)), 400, "timeout_ms"),
        ("POST", "/v1/migrations", json.dumps(dict(good, timeout_ms="5")), 400, "timeout_ms"),
        ("POST", "/v1/migrations", json.dumps(dict(good, transport="pigeon")), 400, "transport"),
        ("POST", "/v1/migrations", json.dumps(dict(good, idempotency_key="")), 400, "idempotency"),
        ("POST", "/v1/migrations", '{"seqs":["seq-0"],"seqs":["seq-1"],"to":"%s"}' % b.data, 400,
         "duplicate"),
        ("POST", "/v1/migrations", json.dumps(dict(good, seqs=["nope"])), 409, "not installed"),
        ("POST", "/v1/migrations", b"x" * 200000, 413, "most the API takes"),
        ("GET", "/v1/migrations/" + "0" * 32, None, 404, "no migration"),
        ("GET", "/v1/migrations/xyz", None, 404, "no migration"),
        ("DELETE", "/v1/migrations/" + "a" * 32, None, 404, "no migration"),
        ("GET", "/v1/migrations/" + "0" * 32 + "?wait_ms=99999999", None, 400, "wait_ms"),
        ("GET", "/v1/events?since=abc", None, 400, "since"),
        ("PUT", "/v1/migrations", b"{}", 405, "not allowed"),
        ("GET", "/v2/everything", None, 404, "no such endpoint"),
        ("POST", "/v1/records/" + "0" * 32 + "/resolve", json.dumps({"peer_state": "none"}), 404,
         "no record"),
        ("POST", "/v1/records/" + "0" * 32 + "/resolve", json.dumps({"peer_state": "x"}), 400,
         "peer_state"),
        ("POST", "/v1/records/" + "0" * 32 + "/resolve", json.dumps({"peer": "x"}), 400,
         "unknown field"),
    ]
    for method, path, body, want, words in cases:
        status, text, hdrs = raw(a, method, path, body)
        assert status == want, (method, path, body, status, text)
        err = json.loads(text)["error"]
        assert err["status"] == want
        one_sentence(err["message"])
        assert words.lower() in err["message"].lower(), (words, err["message"])
        if want == 405:
            assert "Allow" in hdrs
    assert a.c.migrations() == [] and b.c.migrations() == []
    assert contents(pa) == before and contents(pb) == {}
    assert a.c.health()["status"] == "ok"


def test_tcp_control_needs_the_token(agents, tmp_path):
    pa = agents.pager()
    tok = tmp_path / "tok"
    tok.write_text("a-control-token-of-some-length\n")
    tok.chmod(0o600)
    a = agents("a", pa, "--http", "127.0.0.1:0", "--http-token-file", str(tok), sock=False)
    assert a.control.startswith("http://127.0.0.1:")
    host, port = a.control[7:].rsplit(":", 1)
    for hdr in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                {"Authorization": "Basic a-control-token-of-some-length"}):
        for method, path, body in (("GET", "/healthz", None), ("GET", "/metrics", None),
                                   ("POST", "/v1/migrations",
                                    json.dumps({"seqs": ["seq-0"], "to": "127.0.0.1:9"}))):
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request(method, path, body=body, headers=hdr)
            r = c.getresponse()
            text = r.read().decode()
            c.close()
            assert r.status == 401, (hdr, path, r.status, text)
            one_sentence(json.loads(text)["error"]["message"])
    good = kvmig.Client(a.control, token_file=str(tok))
    assert good.health()["status"] == "ok" and good.migrations() == []
    # No token file for --http: refused at start.
    r = subprocess.run([KVMIGD, "--pager", f"shm:{pa}", "--no-socket", "--http", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--http-token-file" in r.stderr
    # A token file others can read: refused.
    tok.chmod(0o644)
    r = subprocess.run([KVMIGD, "--pager", f"shm:{pa}", "--no-socket", "--http", "127.0.0.1:0",
                        "--http-token-file", str(tok)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "chmod 600" in r.stderr


def test_unix_socket_taken_by_a_live_agent(agents, tmp_path):
    pa = agents.pager()
    a = agents("a", pa)
    r = subprocess.run([KVMIGD, "--pager", f"shm:{pa}", "--listen", "127.0.0.1:0", "--socket",
                        a.sock], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "already answers" in r.stderr
    assert a.c.health()["status"] == "ok"
    # A dead agent's socket file is replaced.
    a.kill()
    assert os.path.exists(a.sock)
    a.start()
    assert a.c.health()["status"] == "ok"
    assert os.stat(a.sock).st_mode & 0o077 == 0


# ---- metrics ----

def families(text):
    out = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_match_what_the_migrations_did(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a, b = agents("a", pa), agents("b", pb)
    assert a.c.wait(a.c.migrate(["seq-0", "seq-1"], to=b.data), 20)["state"] == "committed"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % s.getsockname()[1]
    m = a.c.wait(a.c.migrate(["seq-2"], to=dead), 20)
    assert m["state"] == "aborted" and m["error"]["errno"] == errno.ECONNREFUSED
    fa, fb = families(a.c.metrics()), families(b.c.metrics())

    def v(f, name, **labels):
        return f[(name, tuple(sorted(labels.items())))]
    assert v(fa, "kvmig_migrations_total", role="source", result="committed", transport="tcp") == 1
    assert v(fa, "kvmig_migrations_total", role="source", result="aborted", transport="tcp") == 1
    assert v(fa, "kvmig_migrations_total", role="destination", result="committed",
             transport="tcp") == 0
    assert v(fb, "kvmig_migrations_total", role="destination", result="committed",
             transport="tcp") == 1
    assert v(fa, "kvmig_migrated_pages_total", role="source") == 8
    assert v(fb, "kvmig_migrated_pages_total", role="destination") == 8
    assert v(fa, "kvmig_migrated_bytes_total", role="source") == 8 * 1024
    assert v(fa, "kvmig_migration_duration_seconds_count", role="source") == 2
    assert v(fa, "kvmig_migration_duration_seconds_bucket", role="source", le="+Inf") == 2
    assert v(fa, "kvmig_migration_pause_seconds_count") == 1
    assert v(fa, "kvmig_migrations_in_flight", role="source") == 0
    assert v(fa, "kvmig_in_doubt_records") == 0
    pg = b.c.pager()
    assert v(fb, "kvmig_pager_pages", state="free") == pg["free_pages"] == 56
    assert v(fb, "kvmig_pager_pages", state="used") == 8
    assert v(fa, "kvmig_pager_pages", state="used") == 8


# ---- leases, back-pressure, events ----

def test_back_pressure_429(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a = agents("a", pa, "--max-migrations", "1", env={"KVMIG_FAULT": "send-stall:1500"})
    b = agents("b", pb)
    first = a.c.migrate(["seq-0"], to=b.data)
    status, text, hdrs = raw(a, "POST", "/v1/migrations",
                             json.dumps({"seqs": ["seq-1"], "to": b.data}))
    assert status == 429 and hdrs.get("Retry-After") == "1", (status, text)
    one_sentence(json.loads(text)["error"]["message"])
    assert len(a.c.migrations()) == 1
    assert a.c.wait(first, 20)["state"] == "committed"
    assert a.c.wait(a.c.migrate(["seq-1"], to=b.data), 20)["state"] == "committed"
    f = families(a.c.metrics())
    assert f[("kvmig_starts_throttled_total", ())] == 1


def test_silent_peer_and_idle_connection_time_out(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a = agents("a", pa)
    b = agents("b", pb, "--timeout", "500")
    before = contents(pa)
    # A "peer" that accepts and never says a word.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    t0 = time.monotonic()
    m = a.c.wait(a.c.migrate(["seq-0"], to="127.0.0.1:%d" % srv.getsockname()[1],
                             timeout_ms=500), 20)
    assert m["state"] == "aborted" and m["error"]["errno"] == errno.ETIMEDOUT, m
    assert time.monotonic() - t0 < 5
    assert contents(pa) == before
    srv.close()
    # A connection to the agent's data address that never sends its HELLO.
    host, port = b.data.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    d = b.c.wait(until(lambda: dest_migration(b))["id"], 10)
    assert d["state"] == "aborted" and d["error"]["errno"] == errno.ETIMEDOUT, d
    s.close()
    assert used_pages(pb) == 0


def test_events_idempotency_and_config(agents, tmp_path):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    cfg = tmp_path / "kvmigd.conf"
    cfg.write_text("# the agent\nmax-migrations = 3\nhistory = 8\n  timeout = 4000  \n")
    a = agents("a", pa, "--config", str(cfg))
    b = agents("b", pb)
    assert a.c.health()["max_migrations"] == 3
    seen = []

    def follow():
        for e in a.c.events():
            seen.append(e)
            if e["event"] == "finished":
                return
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(0.2)
    m1 = a.c.migrate(["seq-0"], to=b.data, idempotency_key="req-0-move")
    m2 = a.c.migrate(["seq-0"], to=b.data, idempotency_key="req-0-move")
    assert m1 == m2
    assert a.c.wait(m1, 20)["state"] == "committed"
    t.join(10)
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "phase" in kinds, kinds
    assert all(e["migration"] == m1 for e in seen)
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    assert len(a.c.migrations()) == 1
    assert a.c.migration(m1)["timeout_ms"] == 4000
    # A config file naming an unknown option: refused, the line named.
    bad = tmp_path / "bad.conf"
    bad.write_text("colour = red\n")
    r = subprocess.run([KVMIGD, "--pager", f"shm:{pa}", "--config", str(bad)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "colour" in r.stderr


def test_abort_while_connecting(agents):
    pa = agents.pager()
    a = agents("a", pa)
    before = contents(pa)
    # A listener whose backlog is full: the kernel drops further SYNs, so a
    # connect to it hangs until its timeout. DELETE must not wait for that.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fill = [socket.socket() for _ in range(3)]
    for s in fill:
        s.setblocking(False)
        s.connect_ex(srv.getsockname())
    time.sleep(0.2)
    mid = a.c.migrate(["seq-0"], to="127.0.0.1:%d" % srv.getsockname()[1], timeout_ms=20000)
    until(lambda: a.c.migration(mid)["state"] == "connecting", what="connecting")
    time.sleep(0.3)
    assert a.c.migration(mid)["phase"] == "connect"  # still connecting, no handshake
    t0 = time.monotonic()
    a.c.abort(mid)
    m = a.c.wait(mid, 10)
    assert m["state"] == "aborted" and m["error"]["errno"] == errno.ECANCELED, m
    assert time.monotonic() - t0 < 3, "the abort waited for the connect's timeout"
    assert contents(pa) == before
    for s in fill:
        s.close()
    srv.close()


def raw_bytes(agent, request):
    """Send @request (bytes) as is; the status and the parsed JSON body."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(agent.sock)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        clen = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length:")]
        if clen and len(body) >= clen[0]:
            break
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body.decode("utf-8"))


def test_invalid_utf8_still_gets_a_json_error(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a, b = agents("a", pa), agents("b", pb)
    for req, want in ((b"GET /nope\xff HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                      (b"GET /v1/migrations/\xc3 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                      (b"GET /v1/events?since=\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
                      (b"PUT /v1/pager\xfe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                       404)):
        status, body = raw_bytes(a, req)
        assert status == want, (req, status, body)
        one_sentence(body["error"]["message"])
    # A sequence id whose 64th byte starts a two-byte character: the error
    # quotes it cut there, and is still valid JSON.
    status, text, _ = raw(a, "POST", "/v1/migrations",
                          json.dumps({"seqs": ["x" * 63 + "\u00e9"], "to": b.data}))
    assert status == 409, text
    one_sentence(json.loads(text)["error"]["message"])
    assert a.c.migrations() == []


def test_idle_data_connections_do_not_block_starts(agents):
    pa, pb, pc = agents.pager(), agents.pager(), agents.pager(seqs=0)
    a, c = agents("a", pa), agents("c", pc)
    b = agents("b", pb, "--max-migrations", "1", "--timeout", "3000")
    host, port = b.data.rsplit(":", 1)
    # More silent connections than B has handshake slots (8).
    squat = [socket.create_connection((host, int(port))) for _ in range(12)]
    until(lambda: len(b.c.migrations()) >= 8, what="squatters accepted")
    # B may still start a migration of its own: squatters hold handshake slots only.
    mid = b.c.migrate(["seq-0"], to=c.data)
    assert b.c.wait(mid, 20)["state"] == "committed"
    # And an incoming migration gets in: the oldest silent handshake is cut
    # short for it, whatever the flood.
    before = contents(pc)
    m = c.c.wait(c.c.migrate(["seq-0"], to=b.data, timeout_ms=3000), 20)
    assert m["state"] == "committed", m
    assert contents(pb, {"seq-0"}) == before
    until(lambda: [x for x in b.c.migrations() if x["role"] == "destination" and
                   x.get("error", {}).get("errno") == errno.ECANCELED],
          what="a silent handshake cut short")
    for s in squat:
        s.close()
    until(lambda: all(x["state"] in kvmig.client.FINAL_STATES for x in b.c.migrations()),
          timeout=10, what="squatters gone")
    assert used_pages(pb) == 4 * 4  # its own 4 x 4 pages, less seq-0's 4, plus C's 4


def test_embedded_agents_over_engine_memory(tmp_path):
    """Two engines, each with its KV memory in numpy arrays (vLLM's layout at the
    source, FlashInfer's at the destination, declared compatible), each embedding
    the agent: a migration through the API."""
    from engines import Toy
    src, dst = Toy("vllm"), Toy("flashinfer", layout_name="vllm")
    src.fill(n_seqs=3, blocks_per_seq=3)
    before = src.digests()
    with kvmig.Agent(src.pager, control_socket=str(tmp_path / "s.sock")) as sa, \
            kvmig.Agent(dst.pager, control_socket=str(tmp_path / "d.sock")) as da:
        assert sa.control_addr == f"unix:{tmp_path / 's.sock'}"
        c = sa.client()
        m = c.wait(c.migrate(["req-0", "req-2"], to=da.data_addr), 30)
        assert m["state"] == "committed" and m["pages"] == 6, m
        after = dst.digests()
        assert after == {k: before[k] for k in ("req-0", "req-2")}
        assert set(src.digests()) == {"req-1"}
        assert da.client().pager()["used_pages"] == 6
    with pytest.raises(kvmig.KvmigError) as e:
        kvmig.Agent(src.pager)  # no control endpoint
    assert e.value.errno == errno.EINVAL and "control endpoint" in e.value.message


def test_delete_past_the_decision_is_refused_and_it_commits(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    before = contents(pa, {"seq-0"})
    # Source side: B stops (SIGSTOP) right after the decision reached it; A
    # waits for ACTIVATED, past its decision. DELETE must not make it in doubt.
    a = agents("a", pa)
    b = agents("b", pb, env={"KVMIG_FAULT": "stop-recv-ack-recv"})
    mid = a.c.migrate(["seq-0"], to=b.data)
    until(lambda: a.c.migration(mid).get("phase") in ("commit", "resume"), what="A decided")
    with pytest.raises(kvmig.AgentError) as e:
        a.c.abort(mid)
    assert e.value.status == 409 and "committing" in e.value.message
    os.kill(b.p.pid, signal.SIGCONT)
    assert a.c.wait(mid, 20)["state"] == "committed"
    assert contents(pb, {"seq-0"})["seq-0"][:2] == before["seq-0"][:2]
    until(lambda: records(pa) == [] and records(pb) == [], what="records closed")
    # Destination side: A stops on COMMIT (before deciding); B is prepared.
    a.stop()
    b.stop()
    a.start(env=dict(os.environ, KVMIG_FAULT="stop-send-commit-recv"))
    b.start(env={k: v for k, v in os.environ.items() if k != "KVMIG_FAULT"})
    mid = a.c.migrate(["seq-1"], to=b.data)
    d = until(lambda: [m for m in b.c.migrations() if m["role"] == "destination" and
                       m.get("phase") == "commit"], what="B prepared")[0]
    with pytest.raises(kvmig.AgentError) as e:
        b.c.abort(d["id"])
    assert e.value.status == 409
    os.kill(a.p.pid, signal.SIGCONT)
    assert a.c.wait(mid, 20)["state"] == "committed"
    assert b.c.wait(d["id"], 20)["state"] == "committed"
    assert "seq-1" in contents(pb) and "seq-1" not in contents(pa)


def test_a_stderr_nobody_reads_blocks_nothing(agents, tmp_path):
    pa = agents.pager()
    r, w = os.pipe()  # never read
    p = subprocess.Popen([KVMIGD, "--pager", f"shm:{pa}", "--listen", "127.0.0.1:0", "--socket",
                          str(tmp_path / "q.sock")], stdout=subprocess.PIPE, stderr=w,
                         env=Agent._sanitized(dict(os.environ)))
    os.close(w)
    try:
        assert "data on" in p.stdout.readline().decode()
        c = kvmig.Client(f"unix:{tmp_path / 'q.sock'}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = "127.0.0.1:%d" % s.getsockname()[1]
        # ~300 failed migrations log far more than a pipe holds (64 KiB).
        for _ in range(300):
            mid = c.migrate(["seq-0"], to=dead)
            assert c.wait(mid, 10)["state"] == "aborted"
        assert c.health()["status"] == "ok"
        p.send_signal(signal.SIGHUP)  # a closed terminal: a clean stop too
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(r)


def test_sigterm_answers_long_polls_with_the_end(agents):
    pa, pb, a, b, before, mid = stalled_move(agents, 3000)
    # A second start of a sequence under way: refused, nothing started.
    with pytest.raises(kvmig.AgentError) as e:
        a.c.migrate(["seq-1"], to=b.data)
    assert e.value.status == 409 and "being migrated" in e.value.message
    got = []
    t = threading.Thread(target=lambda: got.append(a.c.migration(mid, wait_ms=30000)))
    t.start()
    time.sleep(0.5)
    a.p.send_signal(signal.SIGTERM)
    t.join(20)
    assert got and got[0]["state"] == "aborted", got
    assert got[0]["error"]["errno"] == errno.ECANCELED
    assert a.p.wait(20) == 0
    assert contents(pa) == before


def test_agent_hashes_ahead(agents):
    pa, pb = agents.pager(), agents.pager(seqs=0)
    a = agents("a", pa, "--hash-ahead", "50")
    b = agents("b", pb, "--hash-ahead", "0")

    def kept():
        return families(a.c.metrics())[("kvmig_hash_ahead_pages_total",
                                        (("result", "hashed"),))]
    until(lambda: kept() >= 16, what="the pages hashed ahead")
    m = a.c.wait(a.c.migrate(["seq-0", "seq-1"], to=b.data), 20)
    assert m["state"] == "committed"
    assert m["digests_ahead"] == 8 and m["pages_hashed"] == 0, m
    assert families(b.c.metrics())[("kvmig_hash_ahead_pages_total",
                                    (("result", "hashed"),))] == 0


def test_half_sent_headers_neither_block_nor_hold_the_stop(agents):
    """Connections that send half a frame header and go quiet: cut short
    like silent ones (the receiver's mid-frame wait watches the cancel fd),
    and a SIGTERM does not wait for their frame deadline."""
    pb, pc = agents.pager(seqs=0), agents.pager()
    c = agents("c", pc)
    b = agents("b", pb, "--max-migrations", "1", "--timeout", "30000")
    host, port = b.data.rsplit(":", 1)
    half = []
    for _ in range(20):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"KVMG\x04\x01")
        half.append(s)
    until(lambda: len(b.c.migrations()) >= 8, what="half-sent connections accepted")
    before = contents(pc, {"seq-0"})
    m = c.c.wait(c.c.migrate(["seq-0"], to=b.data, timeout_ms=5000), 20)
    assert m["state"] == "committed", m
    assert contents(pb) == before
    t0 = time.monotonic()
    b.p.send_signal(signal.SIGTERM)
    assert b.p.wait(10) == 0
    assert time.monotonic() - t0 < 5, "the stop waited for a half-sent frame"
    for s in half:
        s.close()
