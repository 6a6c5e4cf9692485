#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Live KV migration between two engine processes, with kvmig's Python package.

A small deterministic decoder keeps its KV cache in numpy arrays shaped exactly
like vLLM's per-layer kv_caches ([2, num_blocks, block_size, num_kv_heads,
head_size], bf16 stored as uint16) and its own block tables. Engine A decodes
six requests; in the middle of decoding it migrates two of them live (pre-copy
while it keeps decoding) to engine B, a second process, which keeps decoding
them. B then checks that its blocks for those requests hold exactly what A
would have produced without the migration.

  PYTHONPATH=python KVMIG_LIB=build/libkvmig.so /usr/bin/python3 examples/engine_migrate.py
"""
import hashlib
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import kvmig  # noqa: E402

LAYERS, BLOCKS, BS, HEADS, DIM = 4, 256, 16, 4, 64
MOVE = ["req-1", "req-4"]


def token_kv(req, pos, layer, half):
    """The K or V vector a request's token writes in one layer: a pure function."""
    seed = int.from_bytes(hashlib.blake2b(f"{req}/{pos}/{layer}/{half}".encode(),
                                          digest_size=8).digest(), "little")
    return np.random.default_rng(seed).integers(0, 65535, (HEADS, DIM), dtype=np.uint16)


class Engine:
    """Block allocator, block tables and a decode loop over vLLM-shaped arrays."""

    def __init__(self):
        self.kv = [np.zeros((2, BLOCKS, BS, HEADS, DIM), np.uint16) for _ in range(LAYERS)]
        self.free_blocks = list(range(BLOCKS))
        self.tables = {}            # id -> [blocks], tokens
        self.cv = threading.Condition()
        self.paused = 0
        self.in_step = False
        self.pager = kvmig.numpy_pager("vllm", self.kv, self, dtype="bf16",
                                       compat="toy-decoder-v1", tracks_writes=True)

    # -- the engine's side of kvmig.Engine --
    def pause(self):
        with self.cv:
            self.paused += 1
            while self.in_step:      # let the running step finish: never half a token
                self.cv.wait()

    def resume(self):
        with self.cv:
            self.paused -= 1
            self.cv.notify_all()

    def seqs(self):
        return [(r, list(b), t % BS) for r, (b, t) in self.tables.items()]

    def alloc(self, n):
        if n > len(self.free_blocks):
            raise MemoryError(f"{n} blocks wanted, {len(self.free_blocks)} free")
        out, self.free_blocks = self.free_blocks[:n], self.free_blocks[n:]
        return out

    def free(self, blocks):
        self.free_blocks.extend(blocks)

    def install(self, seqs):
        for r, blocks, fill in seqs:
            self.tables[r] = (list(blocks), (len(blocks) - 1) * BS + (fill or BS))

    def remove(self, ids):
        for r in ids:
            del self.tables[r]

    # -- decoding --
    def step(self, req):
        """Append one token to @req; returns False if @req is not here (moved away)."""
        with self.cv:
            while self.paused:
                self.cv.wait()
            if req not in self.tables:
                return False
            self.in_step = True
        blocks, n = self.tables[req]
        if n % BS == 0:
            blocks.append(self.alloc(1)[0])
        b, slot = blocks[n // BS], n % BS
        for layer in range(LAYERS):
            for half in range(2):
                self.kv[layer][half, b, slot] = token_kv(req, n, layer, half)
        self.pager.written([b])
        with self.cv:
            self.tables[req] = (blocks, n + 1)
            self.in_step = False
            self.cv.notify_all()
        return True

    def expected_ok(self, req):
        """Whether @req's blocks hold exactly the tokens a run without migration writes."""
        blocks, n = self.tables[req]
        for pos in range(n):
            b, slot = blocks[pos // BS], pos % BS
            for layer in range(LAYERS):
                for half in range(2):
                    if not np.array_equal(self.kv[layer][half, b, slot],
                                          token_kv(req, pos, layer, half)):
                        return False
        return True


def run_b():
    e = Engine()
    with kvmig.Receiver(e.pager, timeout_ms=10000, accept_timeout_ms=30000) as r:
        print(r.addr, flush=True)
        st = r.accept()
    got = {k: v[1] for k, v in e.tables.items()}
    for _ in range(40):                      # B keeps decoding them
        for req in MOVE:
            e.step(req)
    ok = all(e.expected_ok(req) for req in MOVE)
    print(f"B: received {st.seqs} requests ({st.pages} blocks) at {got} tokens, decoded "
          f"40 more each: {'identical to a run without migration' if ok else 'DIFFERENT'}",
          flush=True)
    sys.exit(0 if ok and sorted(e.tables) == MOVE else 1)


def run_a():
    b = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--b"],
                         stdout=subprocess.PIPE, text=True)
    addr = b.stdout.readline().strip()
    e = Engine()
    reqs = [f"req-{i}" for i in range(6)]
    e.install([(r, [], 0) for r in reqs])
    for _ in range(100):                     # prefill-ish: 100 tokens each
        for r in reqs:
            e.step(r)
    stop = threading.Event()

    def decode():
        while not stop.is_set():
            for r in reqs:
                e.step(r)
    t = threading.Thread(target=decode)
    t.start()
    st = kvmig.send(e.pager, addr, seqs=MOVE, live=True, max_downtime_ms=5)
    time.sleep(0.2)
    stop.set()
    t.join()
    print(f"A: moved {MOVE} live in {len(st.rounds)} rounds while decoding, paused "
          f"{st.pause_seconds * 1e3:.2f} ms, {st.pages} blocks verified={st.pages_verified}; "
          f"A still runs {sorted(e.tables)}", flush=True)
    print(b.communicate(timeout=120)[0], end="", flush=True)
    rc = b.returncode
    ok = rc == 0 and not set(MOVE) & set(e.tables) and all(e.expected_ok(r) for r in e.tables)
    print("example:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    run_b() if "--b" in sys.argv else run_a()
