# SPDX-License-Identifier: MIT
"""kvmigd against the CLI, in one run (issue 15's performance goals):

1. end to end: the same migration (one sequence, A -> B over tcp loopback)
   started with `kvmig send` (a `kvmig recv` already listening: its
   process's wall time) and through the agent's API (POST, then a long poll
   until committed); interleaved, medians and spread, the difference in ms;
2. the agent idle: its CPU time over 10 s, as % of one core;
3. GET /metrics while three migrations run: latency, median and max.

    /usr/bin/python3 python/bench_agent.py [--build build] [--runs 15]
"""
import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--pages", type=int, default=4, help="pages of the timed sequence")
    args = ap.parse_args()
    os.environ.setdefault("KVMIG_LIB", os.path.join(args.build, "libkvmig.so"))
    import kvmig

    K = os.path.join(args.build, "tools", "kvmig")
    D = os.path.join(args.build, "tools", "kvmigd")
    tmp = tempfile.mkdtemp()
    pid = os.getpid()
    pa, pb = f"bagA{pid}", f"bagB{pid}"
    procs = []

    def sh(*a, **kw):
        return subprocess.run([K, *a], check=True, capture_output=True, text=True, **kw)

    def agent(name, pager):
        p = subprocess.Popen([D, "--pager", f"shm:{pager}", "--listen", "127.0.0.1:0", "--socket",
                              f"{tmp}/{name}.sock", "--quiet", "--max-migrations", "8"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(p)
        line = p.stdout.readline().decode()
        return p, line.split("data on ")[1].split(",")[0], kvmig.Client(f"unix:{tmp}/{name}.sock")

    try:
        # llama3-8b pages (2 MiB each): one timed sequence of --pages pages,
        # three large ones for the /metrics measurement.
        sh("pager", "init", f"shm:{pa}", "--capacity", "1024", "--seqs", "4",
           "--pages-per-seq", str(args.pages))
        sh("pager", "init", f"shm:{pb}", "--capacity", "1024")
        a, a_data, ca = agent("a", pa)
        b, b_data, cb = agent("b", pb)

        def back(seq):  # untimed: the sequence returns to A
            m = cb.wait(cb.migrate([seq], to=a_data), 60)
            assert m["state"] == "committed", m

        cli, api, cli_lib, api_lib = [], [], [], []
        for i in range(args.runs):
            # CLI: a receiver listening, then kvmig send's wall time.
            r = subprocess.Popen([K, "recv", "--listen", "127.0.0.1:0", "--pager", f"shm:{pb}",
                                  "--json", "--quiet"], stdout=subprocess.PIPE, text=True)
            addr = json.loads(r.stdout.readline())["addr"]
            t0 = time.perf_counter()
            out = subprocess.run([K, "send", "--to", addr, "--pager", f"shm:{pa}", "--seqs",
                                  "seq-0", "--json"], check=True, capture_output=True, text=True)
            cli.append(time.perf_counter() - t0)
            cli_lib.append(json.loads(out.stdout.splitlines()[-1])["seconds"])
            assert r.wait(30) == 0
            back("seq-0")
            # API: POST, long poll until it ends.
            t0 = time.perf_counter()
            mid = ca.migrate(["seq-0"], to=b_data)
            m = ca.wait(mid, 60)
            api.append(time.perf_counter() - t0)
            assert m["state"] == "committed", m
            api_lib.append(m["seconds"])
            back("seq-0")
        med_c, med_a = statistics.median(cli), statistics.median(api)
        print(f"end to end, one sequence of {args.pages} pages ({args.pages * 2} MiB), "
              f"{args.runs} runs each, interleaved:")
        print(f"  kvmig send (recv listening): median {med_c * 1e3:.2f} ms "
              f"(runs {min(cli) * 1e3:.2f}..{max(cli) * 1e3:.2f})")
        print(f"  kvmigd API (POST + wait):    median {med_a * 1e3:.2f} ms "
              f"(runs {min(api) * 1e3:.2f}..{max(api) * 1e3:.2f})")
        print(f"  API - CLI: {(med_a - med_c) * 1e3:+.2f} ms (goal: at most +2 ms); "
              f"ratio {med_a / med_c:.2f}x")
        ml_c, ml_a = statistics.median(cli_lib), statistics.median(api_lib)
        print(f"  the migration itself (connect to commit, as each reports it): CLI median "
              f"{ml_c * 1e3:.2f} ms, agent median {ml_a * 1e3:.2f} ms")
        print(f"  so the CLI's process start and pager attach cost {(med_c - ml_c) * 1e3:.2f} ms "
              f"and the API's HTTP requests and threads {(med_a - ml_a) * 1e3:.2f} ms")

        # Idle: CPU time over 10 s.
        def cpu(p):
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        c0, t0 = cpu(a), time.monotonic()
        time.sleep(10)
        idle = (cpu(a) - c0) / (time.monotonic() - t0)
        print(f"agent idle: {idle * 100:.3f}% of a core over 10 s (goal: under 1%)")

        # /metrics while three migrations run: three 256-page sequences.
        sh("pager", "rm", f"shm:{pa}", "--force")  # (recreated with big sequences)
        for p in procs:
            p.terminate()
            p.wait(20)
        procs.clear()
        sh("pager", "rm", f"shm:{pb}", "--force")
        sh("pager", "init", f"shm:{pa}", "--capacity", "1024", "--seqs", "3", "--pages-per-seq",
           "300")
        sh("pager", "init", f"shm:{pb}", "--capacity", "1024")
        a, a_data, ca = agent("a", pa)
        b, b_data, cb = agent("b", pb)
        lat, floor, seen3 = [], [], 0
        ids = [ca.migrate([f"seq-{i}"], to=b_data) for i in range(3)]
        while True:
            t0 = time.perf_counter()
            text = ca.metrics()
            dt = time.perf_counter() - t0
            if 'kvmig_migrations_in_flight{role="source"} 3' in text:
                lat.append(dt)
                seen3 += 1
                t0 = time.perf_counter()  # the floor: an answer that reads nothing
                ca.health()
                floor.append(time.perf_counter() - t0)
            if all(ca.migration(i)["state"] in kvmig.client.FINAL_STATES for i in ids):
                break
        states = [ca.migration(i)["state"] for i in ids]
        assert states == ["committed"] * 3, states
        if lat:
            lat.sort()
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            print(f"GET /metrics with three migrations running (3 x 600 MiB): median "
                  f"{statistics.median(lat) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms, max "
                  f"{max(lat) * 1e3:.2f} ms over {len(lat)} requests (goal: under 5 ms); "
                  f"GET /healthz meanwhile: median {statistics.median(floor) * 1e3:.2f} ms, "
                  f"max {max(floor) * 1e3:.2f} ms")
        else:
            print("GET /metrics: the three migrations never ran at once (too fast here)")
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
        for n in (pa, pb):
            subprocess.run([K, "pager", "rm", f"shm:{n}", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
