# SPDX-License-Identifier: MIT
"""The Python package: every layout through capture / restore and between two
processes, to and from the synthetic pager, format mismatches, failing
callbacks, other threads running, bad arguments."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import kvmig
from engines import LAYOUTS, Toy, arrays, T

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_capture_restore_every_layout(layout, tmp_path):
    src = Toy(layout, layout_name="shared")
    src.fill()
    digest, st = kvmig.capture(src.pager, str(tmp_path))
    assert st["pages"] == 9
    for other in LAYOUTS:  # into every layout: the same logical pages
        dst = Toy(other, layout_name="shared")
        assert kvmig.restore(dst.pager, str(tmp_path), digest)["seqs"] == 3
        kvmig.verify(dst.pager, str(tmp_path), digest)
        assert dst.digests() == src.digests()


@pytest.mark.parametrize("src_layout,dst_layout", list(zip(LAYOUTS, LAYOUTS[1:] + LAYOUTS[:1])))
def test_send_recv_two_processes(src_layout, dst_layout):
    env = dict(os.environ)
    rx = subprocess.Popen([PY, os.path.join(HERE, "peer.py"), "recv", dst_layout],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    addr = rx.stdout.readline().strip()
    assert addr, rx.stderr.read()
    tx = subprocess.run([PY, os.path.join(HERE, "peer.py"), "send", src_layout, addr],
                        capture_output=True, text=True, env=env, timeout=60)
    assert tx.returncode == 0, tx.stderr
    out, err = rx.communicate(timeout=60)
    assert rx.returncode == 0, err
    assert json.loads(out) == json.loads(tx.stdout)


def test_numpy_to_synth_and_back():
    meta = kvmig.Meta(T, 2, 2, 16, "bf16")
    src = Toy("vllm", layout_name="layer_major")  # vLLM's arrays are layer-major
    src.fill()
    before = src.digests()
    with kvmig.synth_pager(None, meta, layout="layer_major", capacity=64) as syn:
        r = kvmig.Receiver(syn).start()
        st = kvmig.send(src.pager, r.addr)
        assert st.seqs == 3 and st.pages == 9 and st.pages_verified == 9
        assert r.wait(30).seqs == 3
        assert src.pager.seqs() == [] and src.bm.paused == 0
        assert [q.id for q in syn.seqs()] == ["req-0", "req-1", "req-2"]
        back = Toy("flashinfer", layout_name="layer_major")
        r = kvmig.Receiver(back.pager).start()
        kvmig.send(syn, r.addr, live=True)
        r.wait(30)
        assert syn.seqs() == []
        assert back.digests() == before


@pytest.mark.parametrize("kw,want", [
    (dict(layout_name="other"), "layout mismatch: this side's is other, the peer's is shared"),
    (dict(order="HND"), "order mismatch"),
    (dict(compat="model-b"), "compatibility string mismatch"),
])
def test_format_mismatch_refused(kw, want):
    src = Toy("vllm", layout_name="shared")
    src.fill()
    before = src.digests()
    kw.setdefault("layout_name", "shared")
    dst = Toy("vllm", **kw)
    r = kvmig.Receiver(dst.pager).start()
    with pytest.raises(kvmig.KvmigError) as ei:
        kvmig.send(src.pager, r.addr)
    assert ei.value.errno == 71  # EPROTO
    with pytest.raises(kvmig.KvmigError) as ri:
        r.wait(30)
    assert want in ri.value.message or want in ei.value.message
    assert src.digests() == before and src.bm.paused == 0
    assert dst.pager.seqs() == [] and dst.pager.occupied() == []


class Raising(kvmig.BlockManager):
    fail = ""

    def _maybe(self, what):
        if self.fail == what:
            raise RuntimeError(f"{what} blew up in the engine")

    def alloc(self, n):
        self._maybe("alloc")
        return super().alloc(n)

    def pause(self):
        self._maybe("pause")
        super().pause()

    def seqs(self):
        self._maybe("seqs")
        return super().seqs()


@pytest.mark.parametrize("side,what", [("dst", "alloc"), ("src", "pause"), ("src", "seqs")])
def test_raising_callback_aborts(side, what):
    src = Toy("vllm", engine_cls=Raising)
    src.fill()
    before = src.digests()
    dst = Toy("cross_layer", engine_cls=Raising, layout_name="vllm")
    (src if side == "src" else dst).bm.fail = what
    r = kvmig.Receiver(dst.pager, timeout_ms=5000).start()
    with pytest.raises(kvmig.KvmigError) as ei:
        kvmig.send(src.pager, r.addr, timeout_ms=5000)
    try:
        r.wait(30)
        rerr = ""
    except kvmig.KvmigError as e:
        rerr = e.message
    text = f"RuntimeError: {what} blew up in the engine"
    assert text in ei.value.message or text in rerr
    src.bm.fail = dst.bm.fail = ""
    assert src.digests() == before and src.bm.paused == 0
    assert dst.pager.seqs() == [] and dst.pager.occupied() == []
    assert len(dst.bm.free_blocks) == dst.bm.n_blocks


def test_other_threads_keep_running():
    src = Toy("flashinfer")
    src.fill(n_seqs=8, blocks_per_seq=3)
    dst = Toy("flashinfer")
    stop, spins = threading.Event(), [0]

    def busy():
        while not stop.is_set():
            spins[0] += sum(range(200))
    threads = [threading.Thread(target=busy) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        events = []
        r = kvmig.Receiver(dst.pager).start()
        for ev in kvmig.iter_send(src.pager, r.addr, live=True):
            events.append(ev)
        assert events[-1].type == "result" and events[-1].error is None
        assert events[-1].result.seqs == 8
        assert {"connect", "handshake", "commit"} <= {e.phase for e in events if e.type == "phase"}
        r.wait(30)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert spins[0] > 0
    assert len(dst.pager.seqs()) == 8


def test_bad_arguments_before_anything():
    c = arrays("vllm")
    bm = kvmig.BlockManager(32)
    with pytest.raises(ValueError, match="need dtype="):
        kvmig.numpy_pager("vllm", c, bm)
    with pytest.raises(ValueError, match="not C-contiguous"):
        kvmig.numpy_pager("vllm", [a[:, ::2] for a in c], bm, dtype="bf16")
    with pytest.raises(ValueError, match="2-byte elements"):
        kvmig.numpy_pager("vllm", [a.view(np.uint8) for a in c], bm, dtype="bf16")
    with pytest.raises(ValueError, match="unknown layout"):
        kvmig.numpy_pager("vllm2", c, bm, dtype="bf16")
    with pytest.raises(ValueError, match="has shape"):
        kvmig.numpy_pager("vllm", [c[0], c[1][:, :3]], bm, dtype="bf16")
    with pytest.raises(TypeError, match="no pause"):
        kvmig.numpy_pager("vllm", c, object(), dtype="bf16")
    with pytest.raises(kvmig.KvmigError, match="compatibility string"):
        kvmig.numpy_pager("vllm", c, bm, dtype="bf16", compat="\x01")
    t = Toy("vllm")
    t.fill()
    with pytest.raises(ValueError, match="named twice"):
        kvmig.send(t.pager, "127.0.0.1:1", seqs=["req-0", "req-0"])
    with pytest.raises(ValueError, match="unknown transport"):
        kvmig.send(t.pager, "127.0.0.1:1", transport="udp")
    with pytest.raises(kvmig.KvmigError) as ei:  # an unknown id: nothing paused
        kvmig.send(t.pager, "127.0.0.1:1", seqs=["nope"], timeout_ms=1000)
    assert t.bm.paused == 0
    # A block out of range from the engine is refused with the block named.
    t.bm.tables["bad"] = ([999], 0)
    with pytest.raises(kvmig.KvmigError, match="block 999 is out of range"):
        t.pager.seqs()


def test_errors_carry_errno_and_sentence():
    t = Toy("vllm")
    with pytest.raises(kvmig.KvmigError) as ei:
        kvmig.send(t.pager, "not-an-address")
    assert ei.value.errno == 22  # EINVAL
    assert "not-an-address" in ei.value.message, ei.value.message
    assert "kvmig" in kvmig.__doc__ and kvmig.send.__doc__


def test_example_engine_migrate():
    """examples/engine_migrate.py: two live requests moved mid-decoding, checked by B."""
    ex = os.path.join(HERE, "..", "..", "examples", "engine_migrate.py")
    r = subprocess.run([PY, ex], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical to a run without migration" in r.stdout
    assert "example: ok" in r.stdout
