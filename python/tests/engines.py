# SPDX-License-Identifier: MIT
"""Test helpers: a toy engine's KV arrays in each layout kvmig.numpy_pager takes,
filled deterministically, and a layout-independent digest of a sequence's bytes."""
import hashlib

import numpy as np

import kvmig

L, N, T, H, D = 2, 32, 4, 2, 16
LAYOUTS = ("vllm", "flashinfer", "cross_layer", "sglang", "layer_major", "page_major")


def arrays(layout, order="NHD", n=N, dtype=np.uint16):
    """Zeroed arrays of @layout (bf16 stored as uint16)."""
    x, y = (T, H) if order == "NHD" else (H, T)
    if layout == "vllm":
        return [np.zeros((2, n, x, y, D), dtype) for _ in range(L)]
    if layout == "flashinfer":
        return [np.zeros((n, 2, x, y, D), dtype) for _ in range(L)]
    if layout == "cross_layer":
        return np.zeros((n, L, 2, x, y, D), dtype)
    if layout == "sglang":
        return ([np.zeros((n * T, H, D), dtype) for _ in range(L)],
                [np.zeros((n * T, H, D), dtype) for _ in range(L)])
    if layout == "layer_major":
        return np.zeros((L, 2, n, x, y, D), dtype)
    if layout == "page_major":
        return np.zeros((n, 2, L, x, y, D), dtype)
    raise ValueError(layout)


def piece(layout, c, block, layer, half):
    """A writable view of (block, layer, half)'s piece."""
    if layout == "vllm":
        return c[layer][half, block]
    if layout == "flashinfer":
        return c[layer][block, half]
    if layout == "cross_layer":
        return c[block, layer, half]
    if layout == "sglang":
        return c[half][layer][block * T:(block + 1) * T]
    if layout == "layer_major":
        return c[layer, half, block]
    return c[block, half, layer]


class Toy:
    """An engine: its arrays, a BlockManager, a pager over them."""

    def __init__(self, layout, order="NHD", compat="", layout_name=None, n=N,
                 engine_cls=kvmig.BlockManager, tracks_writes=False):
        self.layout = layout
        self.c = arrays(layout, order, n)
        self.bm = engine_cls(n)
        self.pager = kvmig.numpy_pager(layout, self.c, self.bm, dtype="bf16", order=order,
                                       compat=compat, layout_name=layout_name,
                                       block_size=T if layout == "sglang" else None,
                                       tracks_writes=tracks_writes)

    def fill(self, n_seqs=3, blocks_per_seq=3, seed=1):
        rng = np.random.default_rng(seed)
        for i in range(n_seqs):
            blocks = self.bm.alloc(blocks_per_seq)
            for b in blocks:
                for layer in range(L):
                    for half in range(2):
                        v = piece(self.layout, self.c, b, layer, half)
                        v[...] = rng.integers(0, 65535, v.shape, dtype=np.uint16)
            self.bm.install([(f"req-{i}", blocks, 1)])

    def digests(self):
        """{seq id: sha256 of its pages' K then V halves, layer by layer, in token order}."""
        out = {}
        for q in self.pager.seqs():
            h = hashlib.sha256()
            for b in q.blocks:
                for half in range(2):
                    for layer in range(L):
                        h.update(np.ascontiguousarray(
                            piece(self.layout, self.c, b, layer, half)).tobytes())
            out[q.id] = (h.hexdigest(), q.fill, q.state)
        return out
