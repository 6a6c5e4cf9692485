# SPDX-License-Identifier: MIT
"""kvmig: move an inference engine's paged KV cache between processes and hosts.

A thin layer over libkvmig (C). An engine hands kvmig its KV memory as numpy
arrays in its own layout plus a few callbacks (an :class:`Engine`), and gets a
:class:`Pager`; :func:`send` and a :class:`Receiver` migrate sequences
between pagers (every page verified by XXH3-128 digest before the destination
installs anything; on any failure the source keeps running its sequences and
the destination installs nothing), and :func:`capture` / :func:`restore` /
:func:`verify` keep a cache in a content-addressed store on disk.

Layouts (:func:`numpy_pager`), for L layers, N blocks of T tokens, H KV heads
of D dims (``NHD`` order: ``[T, H, D]`` per block and layer; ``HND``:
``[H, T, D]``):

* ``"vllm"``: a list of L arrays ``[2, N, T, H, D]`` (FlashAttention backend);
* ``"flashinfer"``: a list of L arrays ``[N, 2, T, H, D]``;
* ``"cross_layer"``: one array ``[N, L, 2, T, H, D]``;
* ``"sglang"``: a pair (K list, V list) of L arrays ``[N * T, H, D]`` each;
* ``"layer_major"``: one array ``[L, 2, N, T, H, D]`` (the synthetic pager's);
* ``"page_major"``: one array ``[N, 2, L, T, H, D]`` (the synthetic pager's).

Errors are :class:`KvmigError` (an ``OSError``) carrying the errno and the
library's one-sentence message. Library lookup: ``$KVMIG_LIB``, then the
library ``meson install`` put next to this package, then the linker's path.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import queue
import threading
import time
from ctypes import POINTER, byref, c_char_p, c_int, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

from . import _ffi
from ._ffi import lib

__all__ = [
    "KvmigError", "Meta", "SeqInfo", "Event", "MigrationStats", "Engine", "BlockManager",
    "Pager", "numpy_pager", "synth_pager", "open_pager", "send", "Receiver", "receive",
    "iter_send", "capture", "restore", "verify", "resolve_pair", "build_info",
    "Client", "AgentError", "Agent",
]

_DTYPES = {"bf16": 0, "f16": 1, "f32": 2, "fp8_e4m3": 3}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_ORDERS = {"NHD": 0, "HND": 1}
_TRANSPORTS = {"tcp": 0, "rdma": 1, "auto": 2}


class KvmigError(OSError):
    """A libkvmig failure: ``errno`` and the library's sentence (``message``)."""

    def __init__(self, code: int, message: str, what: str = ""):
        code = abs(code)
        self.message = message or os.strerror(code)
        super().__init__(code, f"{what}: {self.message}" if what else self.message)


def _last_error() -> str:
    return (lib.kvmig_last_error() or b"").decode("utf-8", "replace")


def _check(ret: int, what: str = "") -> int:
    if ret < 0:
        raise KvmigError(ret, _last_error(), what)
    return ret


def build_info() -> str:
    """What this libkvmig was built with (transports, store I/O)."""
    return lib.kvmig_build_info().decode()


@dataclass(frozen=True)
class Meta:
    """The shape of one page (block): tokens, layers, KV heads, head dim, dtype name."""
    page_size_tokens: int
    n_layers: int
    n_heads: int
    head_dim: int
    dtype: str

    def _c(self) -> _ffi.CacheMeta:
        if self.dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r} (expected one of {sorted(_DTYPES)})")
        return _ffi.CacheMeta(self.page_size_tokens, self.n_layers, self.n_heads,
                              self.head_dim, _DTYPES[self.dtype])

    @staticmethod
    def _from(c: _ffi.CacheMeta) -> "Meta":
        return Meta(c.page_size_tokens, c.n_layers, c.n_heads, c.head_dim,
                    _DTYPE_NAMES.get(c.dtype, "?"))


@dataclass(frozen=True)
class SeqInfo:
    """An installed sequence: id, block table, tokens in its last block (0 = full), state."""
    id: str
    blocks: tuple
    fill: int
    state: str = "active"
    migration: str = ""


@dataclass
class Event:
    """A migration event: ``type`` is "listening", "phase", "progress" or "result"."""
    type: str
    phase: str = ""
    addr: str = ""
    transport: str = ""
    pages_done: int = 0
    pages_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    result: Optional["MigrationStats"] = None
    error: Optional[KvmigError] = None


@dataclass
class MigrationStats:
    """Everything the C API reports about one migration (struct kvmig_migrate_stats)."""
    pages: int = 0
    seqs: int = 0
    bytes: int = 0
    pages_verified: int = 0
    rereads: int = 0
    reads: int = 0
    pages_freed: int = 0
    seconds: float = 0.0
    transfer_seconds: float = 0.0
    pause_seconds: float = 0.0
    register_seconds: float = 0.0
    regions_reused: int = 0
    transport: str = ""
    rounds: list = field(default_factory=list)  # (pages, bytes, seconds) per round
    bytes_sent: int = 0
    migration: str = ""
    resolved: dict = field(default_factory=dict)
    unconfirmed: bool = False
    digests_ahead: int = 0  # sender: pages whose digests the pager kept ahead
    pages_hashed: int = 0   # sender: pages hashed during the migration
    callback_seconds: float = 0.0  # time spent in Python callbacks (events, engine)

    @staticmethod
    def _from(c: _ffi.MigrateStats) -> "MigrationStats":
        return MigrationStats(
            c.pages, c.seqs, c.bytes, c.pages_verified, c.rereads, c.reads, c.pages_freed,
            c.seconds, c.transfer_seconds, c.pause_seconds, c.register_seconds,
            c.regions_reused, c.transport.decode(),
            [(c.round[i].pages, c.round[i].bytes, c.round[i].seconds) for i in range(c.n_rounds)],
            c.bytes_sent, _id_hex(c.migration),
            {k: getattr(c.resolved, k) for k, _ in _ffi.ResolveStats._fields_},
            bool(c.unconfirmed), c.digests_ahead, c.pages_hashed)


def _id_hex(i: _ffi.Id) -> str:
    buf = ctypes.create_string_buffer(33)
    lib.kvmig_id_format(byref(i), buf)
    return buf.value.decode()


class Engine(Protocol):
    """What an engine supplies to :func:`numpy_pager` (any object with these methods).

    Each is called from the thread running a kvmig operation, one at a time per
    pager, and must not call the pager itself. Raising aborts the operation
    cleanly; the exception's text becomes the error's message.
    """

    def pause(self) -> None:
        """Stop writing blocks and changing sequences until :meth:`resume`."""

    def resume(self) -> None: ...

    def seqs(self) -> Iterable[tuple[str, Sequence[int], int]]:
        """The runnable sequences: (id, block ids in token order, tokens in the last block; 0 = full)."""

    def alloc(self, n: int) -> Sequence[int]:
        """n free blocks (raise MemoryError if there are not n)."""

    def free(self, blocks: Sequence[int]) -> None: ...

    def install(self, seqs: list[tuple[str, list[int], int]]) -> None:
        """Make these sequences runnable over their (already filled) blocks."""

    def remove(self, ids: list[str]) -> None:
        """Stop running these sequences and forget them; keep their blocks (kvmig frees them)."""


class BlockManager:
    """A minimal engine-side block allocator and block table, usable as an :class:`Engine`.

    Real engines have their own; this one serves examples and tests. ``paused``
    counts pauses not yet resumed.
    """

    def __init__(self, n_blocks: int):
        self.n_blocks = n_blocks
        self.free_blocks = list(range(n_blocks))
        self.tables: dict[str, tuple[list[int], int]] = {}
        self.paused = 0
        self.lock = threading.Lock()

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.paused -= 1

    def seqs(self):
        with self.lock:
            return [(k, list(v[0]), v[1]) for k, v in self.tables.items()]

    def alloc(self, n: int) -> list[int]:
        with self.lock:
            if n > len(self.free_blocks):
                raise MemoryError(f"{n} blocks wanted, {len(self.free_blocks)} free")
            out, self.free_blocks = self.free_blocks[:n], self.free_blocks[n:]
            return out

    def free(self, blocks) -> None:
        with self.lock:
            self.free_blocks.extend(blocks)

    def install(self, seqs) -> None:
        with self.lock:
            for sid, blocks, fill in seqs:
                self.tables[sid] = (list(blocks), fill)

    def remove(self, ids) -> None:
        with self.lock:
            for sid in ids:
                del self.tables[sid]


class Pager:
    """A handle on a pager (engine memory, or the synthetic shm pager). Close it, or use ``with``."""

    def __init__(self, handle: c_void_p, keep: Any = None):
        self._h = handle
        self._keep = keep  # arrays and callbacks the C side points at
        self._exc: Optional[BaseException] = None

    @property
    def handle(self) -> c_void_p:
        if not self._h:
            raise ValueError("pager is closed")
        return self._h

    def close(self) -> None:
        """Release the handle (an engine pager's memory stays the engine's)."""
        if self._h:
            lib.kvmig_pager_destroy(byref(self._h))
            self._h = c_void_p()

    def __enter__(self) -> "Pager":
        return self

    def __exit__(self, *a) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def meta(self) -> Meta:
        m, lay = _ffi.CacheMeta(), c_int()
        _check(lib.kvmig_pager_meta(self.handle, byref(m), byref(lay)), "meta")
        return Meta._from(m)

    @property
    def format(self) -> tuple[str, str, str]:
        """(layout name, order, compatibility string): what the other side must match."""
        f = _ffi.PageFormat()
        _check(lib.kvmig_pager_format(self.handle, byref(f)), "format")
        return (f.layout.decode(), "HND" if f.order else "NHD", f.compat.decode())

    def seqs(self) -> list[SeqInfo]:
        """Every installed sequence (runnable, or held by a migration), sorted by id."""
        lst = _ffi.SeqList()
        _check(self._call(lib.kvmig_pager_seqs, byref(lst)), "seqs")
        try:
            return [SeqInfo(q.id.decode(), tuple(q.page_ixs[i] for i in range(q.n_pages)),
                            q.fill_in_last_page,
                            lib.kvmig_seq_state_name(q.state).decode(),
                            _id_hex(q.migration) if q.state else "")
                    for q in (lst.seqs[i] for i in range(lst.n))]
        finally:
            lib.kvmig_seq_list_free(byref(lst))

    def occupied(self) -> list[int]:
        """Blocks in use (by a sequence, or allocated by a migration under way)."""
        ixs, n = POINTER(c_uint32)(), c_uint32()
        _check(self._call(lib.kvmig_pager_occupied, byref(ixs), byref(n)), "occupied")
        try:
            return [ixs[i] for i in range(n.value)]
        finally:
            _ffi.libc.free(ixs)

    def page_bytes(self, ix: int) -> bytes:
        """Page ``ix``'s bytes: its K half then its V half, each in logical (layer) order.
        Stable only while nothing writes the page (the engine paused, or idle)."""
        out = []
        for half in (0, 1):
            ext, n = (_ffi.Extent * 4096)(), c_uint32()
            _check(self._call(lib.kvmig_pager_extents, ix, half, ext, 4096, byref(n)),
                   f"page {ix}")
            out += [ctypes.string_at(ext[i].addr, ext[i].len) for i in range(n.value)]
        return b"".join(out)

    @property
    def capacity(self) -> int:
        """Pages in all, allocated or free."""
        n = c_uint32()
        _check(lib.kvmig_pager_capacity(self.handle, byref(n)), "capacity")
        return n.value

    def records(self) -> list[dict]:
        """Migration records (crash safety, docs/PROTOCOL.md): id, role, state, ..."""
        recs, n = POINTER(_ffi.Record)(), c_uint32()
        _check(lib.kvmig_pager_records(self.handle, byref(recs), byref(n)), "records")
        try:
            return [{"id": _id_hex(r.id), "role": "source" if r.role == 1 else "dest",
                     "state": lib.kvmig_record_state_name(r.state).decode(),
                     "peer": r.peer_addr.decode("utf-8", "replace"), "owner_pid": r.owner_pid,
                     "n_seqs": r.n_seqs} for r in (recs[i] for i in range(n.value))]
        finally:
            _ffi.libc.free(recs)

    def _call(self, fn, *args) -> int:
        """Call into the library with this pager (an engine callback's exception is
        in the error's message; the last one raised is kept in ``_exc``)."""
        self._exc = None
        return fn(self.handle, *args)


# ---- the engine-memory pager over numpy arrays ----

_LAYOUTS = ("vllm", "flashinfer", "cross_layer", "sglang", "layer_major", "page_major")


def _dtype_of(arr, dtype: Optional[str]) -> str:
    import numpy as np
    if dtype is not None:
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (expected one of {sorted(_DTYPES)})")
        want = {"bf16": 2, "f16": 2, "f32": 4, "fp8_e4m3": 1}[dtype]
        if arr.dtype.itemsize != want:
            raise ValueError(f"dtype {dtype} has {want}-byte elements; the arrays' "
                             f"{arr.dtype} has {arr.dtype.itemsize}")
        return dtype
    if arr.dtype == np.float16:
        return "f16"
    if arr.dtype == np.float32:
        return "f32"
    if arr.dtype.name == "bfloat16":
        return "bf16"
    raise ValueError(f"arrays of {arr.dtype} need dtype= (bf16 stored as uint16: "
                     f"dtype='bf16'; fp8 as uint8: dtype='fp8_e4m3')")


def _check_arrays(arrays: list, shape: tuple) -> None:
    for i, a in enumerate(arrays):
        if not hasattr(a, "__array_interface__"):
            raise TypeError(f"array {i} is not a numpy array")
        if a.shape != shape:
            raise ValueError(f"array {i} has shape {a.shape}; expected {shape}")
        if a.dtype != arrays[0].dtype:
            raise ValueError(f"array {i} is {a.dtype}; array 0 is {arrays[0].dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"array {i} is not C-contiguous: kvmig needs each array's blocks "
                             f"at fixed strides in one piece of memory")
        if not a.flags.writeable:
            raise ValueError(f"array {i} is read-only: a receiver writes into it")


def _describe(layout: str, caches, order: str):
    """(meta fields, n_blocks, regions [(array)], slabs [(region, offset, stride)])."""
    if layout not in _LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (expected one of {', '.join(_LAYOUTS)})")
    if order not in _ORDERS:
        raise ValueError(f"unknown order {order!r} (expected NHD or HND)")

    def tok_heads(t, h):  # block piece shape in this order
        return (t, h) if order == "NHD" else (h, t)

    if layout == "sglang":
        if not (isinstance(caches, (tuple, list)) and len(caches) == 2):
            raise TypeError("sglang layout: caches must be (k_buffers, v_buffers)")
        ks, vs = list(caches[0]), list(caches[1])
        if not ks or len(ks) != len(vs):
            raise ValueError("sglang layout: as many K as V buffers, at least one")
        if ks[0].ndim != 3:
            raise ValueError(f"sglang layout: buffers are [tokens, heads, dim]; got {ks[0].shape}")
        if order != "NHD":
            raise ValueError("sglang layout: buffers are token-major (NHD)")
        arrays = [a for kv in zip(ks, vs) for a in kv]
        _check_arrays(arrays, ks[0].shape)
        return arrays, len(ks), None, ks[0].shape[1], ks[0].shape[2], \
            [(i, 0, None) for i in range(len(arrays))]
    if isinstance(caches, (list, tuple)):
        arrays = list(caches)
    else:
        arrays = [caches]
    if not arrays:
        raise ValueError("no arrays")
    a0 = arrays[0]
    if not hasattr(a0, "shape"):
        raise TypeError("caches must be numpy arrays")
    if layout in ("vllm", "flashinfer"):
        if a0.ndim != 5:
            raise ValueError(f"{layout} layout: one array per layer shaped "
                             f"{'[2, N' if layout == 'vllm' else '[N, 2'}, ...] (5 dims); got {a0.shape}")
        _check_arrays(arrays, a0.shape)
        if layout == "vllm":
            if a0.shape[0] != 2:
                raise ValueError(f"vllm layout: dim 0 is K/V (2); got {a0.shape}")
            n, x, y, d = a0.shape[1:]
        else:
            if a0.shape[1] != 2:
                raise ValueError(f"flashinfer layout: dim 1 is K/V (2); got {a0.shape}")
            n, _, x, y, d = a0.shape
        t, h = (x, y) if order == "NHD" else (y, x)
        L = len(arrays)
        if layout == "vllm":
            slabs = [(l, hf * n, 1) for l in range(L) for hf in range(2)]
        else:
            slabs = [(l, hf, 2) for l in range(L) for hf in range(2)]
        return arrays, L, n, t, h, d, slabs
    if len(arrays) != 1:
        raise ValueError(f"{layout} layout: one array")
    if a0.ndim != 6:
        raise ValueError(f"{layout} layout: one array of 6 dims; got {a0.shape}")
    _check_arrays(arrays, a0.shape)
    if layout == "cross_layer":
        n, L, two, x, y, d = a0.shape
        slabs = [(0, l * 2 + hf, L * 2) for l in range(L) for hf in range(2)]
    elif layout == "layer_major":
        L, two, n, x, y, d = a0.shape
        slabs = [(0, (l * 2 + hf) * n, 1) for l in range(L) for hf in range(2)]
    else:  # page_major
        n, two, L, x, y, d = a0.shape
        slabs = [(0, hf * L + l, 2 * L) for l in range(L) for hf in range(2)]
    if two != 2:
        raise ValueError(f"{layout} layout: the K/V dim must be 2; got {a0.shape}")
    t, h = (x, y) if order == "NHD" else (y, x)
    return arrays, L, n, t, h, d, slabs


def numpy_pager(layout: str, caches, engine: Engine, *, block_size: Optional[int] = None,
                dtype: Optional[str] = None, order: str = "NHD", compat: str = "",
                layout_name: Optional[str] = None, tracks_writes: bool = False) -> "Pager":
    """A pager over an engine's own KV arrays (see the module help for the layouts).

    ``block_size`` (tokens per block) is needed for ``sglang`` (whose buffers are
    per token). ``layout_name`` (default: ``layout``), ``order`` and ``compat``
    (an engine-chosen compatibility string, e.g. a hash of the model config)
    must equal the other side's or a migration / restore is refused before
    anything moves. With ``tracks_writes`` the engine calls
    :meth:`MemPager.written` after writing blocks, and live migration re-sends
    only those; without, its final round re-sends every page.
    """
    desc = _describe(layout, caches, order)
    arrays = desc[0]
    if layout == "sglang":
        arrays, L, _, h, d, slabs0 = desc
        if not block_size or block_size <= 0:
            raise ValueError("sglang layout: block_size (tokens per block) is needed")
        tokens = arrays[0].shape[0]
        if tokens % block_size:
            raise ValueError(f"sglang layout: {tokens} tokens is not a whole number of "
                             f"{block_size}-token blocks")
        n, t = tokens // block_size, block_size
        slabs = [(r, 0, 1) for r, _, _ in slabs0]
    else:
        arrays, L, n, t, h, d, slabs = desc
        if block_size is not None and block_size != t:
            raise ValueError(f"block_size {block_size} differs from the arrays' {t}")
    dt = _dtype_of(arrays[0], dtype)
    meta = Meta(t, L, h, d, dt)
    cm = meta._c()
    half = c_uint64()
    _check(lib.kvmig_meta_half_bytes(byref(cm), byref(half)), "meta")
    piece = half.value // L
    for name in ("pause", "resume", "seqs", "alloc", "free", "install", "remove"):
        if not callable(getattr(engine, name, None)):
            raise TypeError(f"engine has no {name}() method")
    regions = (_ffi.MemRegion * len(arrays))()
    for i, a in enumerate(arrays):
        regions[i] = _ffi.MemRegion(a.__array_interface__["data"][0], a.nbytes, 0, 0)
    cslabs = (_ffi.MemSlab * (2 * L))()
    for i, (r, off, stride) in enumerate(slabs):
        cslabs[i] = _ffi.MemSlab(r, off * piece, stride * piece)
    fmt = _ffi.PageFormat()
    _check(lib.kvmig_format_set(byref(fmt), (layout_name or layout).encode(), _ORDERS[order],
                                compat.encode()), "format")
    pager = MemPager(engine)
    cbs = pager._callbacks()
    d = _ffi.MemDesc(cm, fmt, n, regions, len(arrays), cslabs,
                     _ffi.MemEngine(None, *cbs), int(bool(tracks_writes)))
    h_ = c_void_p()
    _check(lib.kvmig_mem_pager_create(byref(d), byref(h_)), "engine memory")
    pager._h = h_
    pager._keep = (arrays, cbs, regions, cslabs)
    return pager


class MemPager(Pager):
    """A pager over engine memory (:func:`numpy_pager`)."""

    def __init__(self, engine: Engine):
        super().__init__(c_void_p(), None)
        self.engine = engine
        self.callback_seconds = 0.0

    def written(self, blocks: Sequence[int]) -> None:
        """Tell kvmig the engine wrote these blocks (with ``tracks_writes``). Thread-safe."""
        arr = (c_uint32 * len(blocks))(*blocks)
        _check(lib.kvmig_mem_written(self.handle, arr, len(blocks)), "written")

    def _wrap(self, name: str, fn):
        def call(*args):
            t = time.perf_counter()
            try:
                fn(*args)
                return 0
            except BaseException as e:  # noqa: BLE001 - everything becomes an error
                self._exc = e
                code = -(getattr(e, "errno", None) or
                         (_errno.ENOSPC if isinstance(e, MemoryError) else _errno.EIO))
                return lib.kvmig_mem_error(code, f"{type(e).__name__}: {e}".encode(
                    "utf-8", "replace")[:400])
            finally:
                self.callback_seconds += time.perf_counter() - t
        return call

    def _callbacks(self):
        e = self.engine

        def seqs(_ctx, sink):
            for sid, blocks, fill in e.seqs():
                arr = (c_uint32 * len(blocks))(*blocks)
                if lib.kvmig_mem_seq_add(sink, sid.encode(), arr, len(blocks), fill) < 0:
                    raise ValueError(_last_error())

        def alloc(_ctx, n, out):
            got = list(e.alloc(n))
            if len(got) != n:
                raise ValueError(f"alloc({n}) returned {len(got)} blocks")
            for i, b in enumerate(got):
                out[i] = b

        def free(_ctx, blocks, n):
            e.free([blocks[i] for i in range(n)])

        def install(_ctx, seqs, n):
            e.install([(seqs[i].id.decode(), [seqs[i].page_ixs[j] for j in
                                              range(seqs[i].n_pages)],
                        seqs[i].fill_in_last_page) for i in range(n)])

        def remove(_ctx, ids, n):
            e.remove([ids[i].decode() for i in range(n)])

        w = self._wrap
        return (_ffi.CB_VOID(w("pause", lambda _c: e.pause())),
                _ffi.CB_VOID(w("resume", lambda _c: e.resume())),
                _ffi.CB_SEQS(w("seqs", seqs)), _ffi.CB_ALLOC(w("alloc", alloc)),
                _ffi.CB_FREE(w("free", free)), _ffi.CB_INSTALL(w("install", install)),
                _ffi.CB_REMOVE(w("remove", remove)))


# ---- the synthetic pager (tests, demos) ----

def synth_pager(name: Optional[str], meta: Meta, *, layout: str = "page_major",
                capacity: int = 64, n_seqs: int = 0, pages_per_seq: int = 4,
                seed: int = 1) -> Pager:
    """Create a synthetic pager (in process memory, or shm ``name`` others can open)."""
    o = _ffi.SynthOpts()
    lib.kvmig_synth_opts_init(byref(o))
    o.meta = meta._c()
    lay = c_int()
    _check(lib.kvmig_layout_parse(layout.encode(), byref(lay)), "layout")
    o.layout, o.capacity_pages, o.n_seqs, o.pages_per_seq, o.seed = \
        lay.value, capacity, n_seqs, pages_per_seq, seed
    o.shm_name = name.encode() if name else None
    h = c_void_p()
    _check(lib.kvmig_synth_create(byref(o), byref(h)), "synthetic pager")
    return Pager(h)


def open_pager(spec: str) -> Pager:
    """Open a pager by spec (``shm:NAME``)."""
    h = c_void_p()
    _check(lib.kvmig_pager_open(spec.encode(), byref(h)), spec)
    return Pager(h)


# ---- migration ----

def _opts(*, transport="tcp", mode="move", seqs=None, live=False, max_downtime_ms=20,
          max_rounds=8, timeout_ms=30000, accept_timeout_ms=0, verify=True, token=None,
          queue_depth=32, on_event=None, progress_interval_ms=100):
    o = _ffi.MigrateOpts()
    lib.kvmig_migrate_opts_init(byref(o))
    if transport not in _TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} (expected tcp, rdma or auto)")
    if mode not in ("move", "copy"):
        raise ValueError(f"unknown mode {mode!r} (expected move or copy)")
    keep = []
    o.transport = _TRANSPORTS[transport]
    o.mode = 0 if mode == "move" else 1
    if seqs is not None:
        seqs = list(seqs)
        if not seqs or not all(isinstance(s, str) and s for s in seqs):
            raise ValueError("seqs: a non-empty list of sequence ids")
        if len(set(seqs)) != len(seqs):
            raise ValueError("seqs: a sequence is named twice")
        arr = (c_char_p * len(seqs))(*[s.encode() for s in seqs])
        keep.append(arr)
        o.seq_ids, o.n_seq_ids = arr, len(seqs)
    o.live = int(bool(live))
    o.max_downtime_ms, o.max_rounds = max_downtime_ms, max_rounds
    o.timeout_ms, o.accept_timeout_ms = timeout_ms, accept_timeout_ms
    o.verify = int(bool(verify))
    o.queue_depth = queue_depth
    o.progress_interval_ms = progress_interval_ms
    if token is not None:
        tb = bytes(token)
        buf = ctypes.create_string_buffer(tb, len(tb))
        keep.append(buf)
        o.token, o.token_len = ctypes.cast(buf, c_void_p), len(tb)
    if on_event is not None:
        def cb(_arg, ev):
            e = ev.contents
            on_event(Event(("listening", "phase", "progress")[e.type],
                           (e.phase or b"").decode(), (e.addr or b"").decode(),
                           (e.transport or b"").decode(), e.pages_done, e.pages_total,
                           e.bytes_done, e.bytes_total))
        c = _ffi.CB_EVENT(cb)
        keep.append(c)
        o.on_event = c
    return o, keep


def _timed_events(on_event, acc):
    if on_event is None:
        return None

    def cb(ev):
        t = time.perf_counter()
        try:
            on_event(ev)
        finally:
            acc[0] += time.perf_counter() - t
    return cb


def send(pager: Pager, to: str, *, seqs: Optional[Sequence[str]] = None, mode: str = "move",
         transport: str = "tcp", live: bool = False, max_downtime_ms: int = 20,
         max_rounds: int = 8, timeout_ms: int = 30000, verify: bool = True,
         token: Optional[bytes] = None,
         on_event: Optional[Callable[[Event], None]] = None) -> MigrationStats:
    """Migrate ``seqs`` (default: all) of ``pager`` to the receiver at ``to`` ("host:port").

    Blocks until the migration commits or fails (other Python threads keep
    running). Raises :class:`KvmigError`; on failure the sequences still run here.
    """
    acc = [0.0]
    o, keep = _opts(transport=transport, mode=mode, seqs=seqs, live=live,
                    max_downtime_ms=max_downtime_ms, max_rounds=max_rounds,
                    timeout_ms=timeout_ms, verify=verify, token=token,
                    on_event=_timed_events(on_event, acc))
    st = _ffi.MigrateStats()
    t0 = getattr(pager, "callback_seconds", 0.0)
    ret = pager._call(lib.kvmig_migrate_send, to.encode(), byref(o), byref(st))
    _check(ret, "send")
    r = MigrationStats._from(st)
    r.callback_seconds = acc[0] + getattr(pager, "callback_seconds", 0.0) - t0
    return r


def iter_send(pager: Pager, to: str, **kw) -> Iterator[Event]:
    """:func:`send` in a thread, its events as an iterator; the last is a "result" event
    (with ``result`` or ``error`` set)."""
    q: "queue.Queue[Event]" = queue.Queue()

    def run():
        try:
            r = send(pager, to, on_event=q.put, **kw)
            q.put(Event("result", result=r))
        except KvmigError as e:
            q.put(Event("result", error=e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    while True:
        ev = q.get()
        yield ev
        if ev.type == "result":
            t.join()
            return


class Receiver:
    """A listener that receives migrations into ``pager``.

    ``accept()`` blocks for one migration; ``start()`` runs it in a thread and
    ``wait()`` returns its stats (or raises its error). ``addr`` is the bound
    address (port 0 picks one).
    """

    def __init__(self, pager: Pager, addr: str = "127.0.0.1:0", *, transport: str = "tcp",
                 timeout_ms: int = 30000, accept_timeout_ms: int = 0, verify: bool = True,
                 token: Optional[bytes] = None, queue_depth: int = 32,
                 on_event: Optional[Callable[[Event], None]] = None):
        self.pager = pager
        self._o, self._keep = _opts(transport=transport, timeout_ms=timeout_ms,
                                    accept_timeout_ms=accept_timeout_ms, verify=verify,
                                    token=token, queue_depth=queue_depth, on_event=on_event)
        self._l = c_void_p()
        _check(lib.kvmig_listener_open(addr.encode(), byref(self._o), byref(self._l)),
               f"listen on {addr}")
        self.addr = lib.kvmig_listener_addr(self._l).decode()
        self.transport = lib.kvmig_listener_transport(self._l).decode()
        self._thread: Optional[threading.Thread] = None
        self._result: Any = None

    def accept(self) -> MigrationStats:
        """Receive one migration (blocking). Raises :class:`KvmigError`."""
        if not self._l:
            raise ValueError("receiver is closed")
        st = _ffi.MigrateStats()
        ret = lib.kvmig_migrate_accept(self._l, self.pager.handle, byref(self._o), byref(st))
        _check(ret, "receive")
        return MigrationStats._from(st)

    def start(self) -> "Receiver":
        """Accept one migration in a background thread."""
        def run():
            try:
                self._result = self.accept()
            except KvmigError as e:
                self._result = e
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: Optional[float] = None) -> MigrationStats:
        """The started migration's stats; raises its error, or TimeoutError."""
        if self._thread is None:
            raise ValueError("start() was not called")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the migration is still running")
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("a migration is still being received")
        if self._l:
            lib.kvmig_listener_close(byref(self._l))
            self._l = c_void_p()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *a) -> None:
        self.close()


def receive(pager: Pager, addr: str, **kw) -> MigrationStats:
    """Listen on ``addr`` and receive one migration into ``pager`` (blocking)."""
    with Receiver(pager, addr, **kw) as r:
        return r.accept()


def resolve_pair(a: Pager, b: Pager) -> dict:
    """Resolve migration records between two pagers reachable here (docs/PROTOCOL.md)."""
    st = _ffi.ResolveStats()
    _check(lib.kvmig_migrate_resolve_pair(a.handle, b.handle, byref(st)), "resolve")
    return {k: getattr(st, k) for k, _ in _ffi.ResolveStats._fields_}


# ---- capture / restore / verify ----

def _store(path: str, read_only: bool = False) -> c_void_p:
    o = _ffi.StoreFsOpts()
    lib.kvmig_store_fs_opts_init(byref(o))
    o.read_only = int(read_only)
    s = c_void_p()
    _check(lib.kvmig_store_fs_open(os.fsencode(path), byref(o), byref(s)), f"store {path}")
    return s


def _digest(text: str) -> _ffi.Digest:
    d = _ffi.Digest()
    _check(lib.kvmig_digest_parse(text.encode(), byref(d)), "manifest digest")
    return d


def capture(pager: Pager, store: str) -> tuple[str, dict]:
    """Capture every runnable sequence of ``pager`` into the store directory ``store``.

    Returns (manifest digest, stats).
    """
    s = _store(store)
    try:
        d, st = _ffi.Digest(), _ffi.CaptureStats()
        _check(pager._call(lib.kvmig_capture, s, byref(d), byref(st)), "capture")
        buf = ctypes.create_string_buffer(64)
        lib.kvmig_digest_format(byref(d), buf)
        return buf.value.decode(), {k: getattr(st, k) for k, _ in _ffi.CaptureStats._fields_}
    finally:
        lib.kvmig_store_close(byref(s))


def restore(pager: Pager, store: str, manifest: str) -> dict:
    """Restore the sequences of manifest ``manifest`` (a digest) from ``store`` into ``pager``."""
    s = _store(store, read_only=True)
    try:
        st = _ffi.RestoreStats()
        _check(pager._call(lib.kvmig_restore, s, byref(_digest(manifest)), byref(st)),
               "restore")
        return {k: getattr(st, k) for k, _ in _ffi.RestoreStats._fields_}
    finally:
        lib.kvmig_store_close(byref(s))


def verify(pager: Pager, store: str, manifest: str) -> None:
    """Check ``pager`` holds every sequence of the manifest byte for byte; raises if not."""
    s = _store(store, read_only=True)
    m = c_void_p()
    try:
        data, n = c_void_p(), ctypes.c_size_t()
        ret = lib.kvmig_store_get_alloc(s, byref(_digest(manifest)), byref(data), byref(n))
        _check(ret, "manifest")
        try:
            _check(lib.kvmig_manifest_parse(ctypes.cast(data, c_char_p), n.value, byref(m)),
                   "manifest")
        finally:
            _ffi.libc.free(data)
        bad = c_uint32()
        _check(pager._call(lib.kvmig_verify, m, byref(bad)), "verify")
    finally:
        lib.kvmig_manifest_free(byref(m))
        lib.kvmig_store_close(byref(s))


# ---- the agent, embedded (kvmig/agent.h, docs/AGENT.md) ----

class Agent:
    """kvmigd's agent inside this process, over ``pager`` (a numpy pager, or any):
    a data listener taking migrations into it and the control API, served on the
    library's threads until :meth:`stop`. ``control_socket`` (a unix socket path)
    and / or ``control_addr`` ("host:port", with ``control_token``); ``client()``
    is a :class:`Client` for it. The pager must stay open while the agent runs."""

    def __init__(self, pager: Pager, *, data_addr: str = "127.0.0.1:0",
                 control_socket: Optional[str] = None, control_addr: Optional[str] = None,
                 control_token: Optional[bytes] = None, transport: str = "tcp",
                 data_token: Optional[bytes] = None, max_migrations: int = 4,
                 history: int = 256, timeout_ms: int = 30000, hash_ahead_ms: int = 1000,
                 log: Optional[Callable[[str], None]] = None):
        if transport not in _TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (expected tcp, rdma or auto)")
        o = _ffi.AgentOpts()
        lib.kvmig_agent_opts_init(byref(o))
        keep: list = []

        def cstr(v):
            if v is None:
                return None
            b = ctypes.create_string_buffer(v.encode() if isinstance(v, str) else bytes(v))
            keep.append(b)
            return ctypes.cast(b, c_void_p)
        o.data_addr = data_addr.encode()
        o.transport = _TRANSPORTS[transport]
        o.control_socket = control_socket.encode() if control_socket else None
        o.control_addr = control_addr.encode() if control_addr else None
        if control_token is not None:
            o.control_token, o.control_token_len = cstr(control_token), len(control_token)
        if data_token is not None:
            o.data_token, o.data_token_len = cstr(data_token), len(data_token)
        o.max_migrations, o.history, o.timeout_ms = max_migrations, history, timeout_ms
        o.hash_ahead_ms = hash_ahead_ms
        if log is not None:
            cb = _ffi.CB_LOG(lambda _arg, line: log(line.decode("utf-8", "replace")))
            keep.append(cb)
            o.log = cb
        self._keep, self._o, self.pager = keep, o, pager
        self._token = control_token
        self._h = c_void_p()
        _check(lib.kvmig_agent_start(pager.handle, byref(o), byref(self._h)), "agent")
        self.data_addr = lib.kvmig_agent_data_addr(self._h).decode()
        self.control_addr = lib.kvmig_agent_control_addr(self._h).decode()

    def client(self, timeout: float = 30.0) -> "Client":
        return Client(self.control_addr, token=self._token, timeout=timeout)

    def stop(self) -> None:
        """Abort what has not committed, wait for it, close everything."""
        if self._h:
            lib.kvmig_agent_stop(byref(self._h))
            self._h = c_void_p()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *a) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass


from .client import AgentError, Client  # noqa: E402  (the agent's API; no libkvmig calls)
