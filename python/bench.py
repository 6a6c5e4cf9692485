#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark: a migration from a numpy-backed engine pager (vLLM layout) against
the same-size migration from the synthetic pager, same transport, same run.

  PYTHONPATH=python KVMIG_LIB=build/libkvmig.so /usr/bin/python3 python/bench.py [--gib 1] [--rounds 5]

Prints each run, the medians, their ratio (numpy / synthetic time: <= 1.10 is
the goal) and the Python overhead per migration (time spent in the engine's
Python callbacks and event delivery, 8 sequences).
"""
import argparse
import statistics
import time

import numpy as np

import kvmig

LAYERS, HEADS, DIM, BS = 32, 8, 128, 16  # llama3-8b: 2 MiB per page


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--transport", default="tcp")
    a = ap.parse_args()
    pages = int(a.gib * 512)
    per = pages // 8
    meta = kvmig.Meta(BS, LAYERS, HEADS, DIM, "bf16")
    rng = np.random.default_rng(1)
    kv = [rng.integers(0, 65535, (2, pages, BS, HEADS, DIM), dtype=np.uint16)
          for _ in range(LAYERS)]
    t_np, t_syn, over = [], [], []
    for r in range(a.rounds):
        bm = kvmig.BlockManager(pages)
        src = kvmig.numpy_pager("vllm", kv, bm, dtype="bf16", layout_name="layer_major")
        for i in range(8):
            bm.install([(f"seq-{i}", bm.alloc(per), 0)])
        events = []
        with kvmig.synth_pager(None, meta, layout="layer_major", capacity=pages) as dst:
            rx = kvmig.Receiver(dst, transport=a.transport).start()
            t = time.perf_counter()
            st = kvmig.send(src, rx.addr, transport=a.transport, on_event=events.append)
            t_np.append(time.perf_counter() - t)
            rx.wait(120)
        over.append(st.callback_seconds * 1e3)
        with kvmig.synth_pager(None, meta, layout="layer_major", capacity=pages, n_seqs=8,
                               pages_per_seq=per) as s2, \
                kvmig.synth_pager(None, meta, layout="layer_major", capacity=pages) as d2:
            rx = kvmig.Receiver(d2, transport=a.transport).start()
            t = time.perf_counter()
            kvmig.send(s2, rx.addr, transport=a.transport)
            t_syn.append(time.perf_counter() - t)
            rx.wait(120)
        src.close()
        gb = pages * 2 * 2 ** 20 / 1e9
        print(f"run {r}: numpy {t_np[-1]:.3f} s ({gb / t_np[-1]:.2f} GB/s), synthetic "
              f"{t_syn[-1]:.3f} s ({gb / t_syn[-1]:.2f} GB/s), python overhead "
              f"{over[-1]:.3f} ms ({len(events)} events)", flush=True)
    mn, ms = statistics.median(t_np), statistics.median(t_syn)
    ratios = sorted(n / s for n, s in zip(t_np, t_syn))
    print(f"median: numpy {mn:.3f} s, synthetic {ms:.3f} s: ratio {mn / ms:.3f} "
          f"(runs {ratios[0]:.3f}..{ratios[-1]:.3f}; goal <= 1.10)")
    print(f"python overhead per migration (8 sequences): median {statistics.median(over):.3f} ms "
          f"(max {max(over):.3f}; goal < 1 ms)")


if __name__ == "__main__":
    main()
