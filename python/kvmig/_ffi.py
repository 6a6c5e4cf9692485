# SPDX-License-Identifier: MIT
"""ctypes mirrors of libkvmig's public structs and the prototypes used.

Internal: the public API is in kvmig/__init__.py. Each struct here mirrors
one in include/kvmig/*.h field for field; nothing checks their sizes
mechanically: python/tests exercises every one with real data.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_int,
                    c_int32, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)

# ---- finding libkvmig.so ----


def _candidates() -> list[str]:
    out = []
    env = os.environ.get("KVMIG_LIB")
    if env:
        out.append(env)
    try:
        from . import _build_config  # written by `meson install`
        out.append(os.path.join(_build_config.LIBDIR, "libkvmig.so.0"))
    except ImportError:
        pass
    found = ctypes.util.find_library("kvmig")
    if found:
        out.append(found)
    return out


def _load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
    raise ImportError(
        "kvmig: cannot find libkvmig.so: set KVMIG_LIB to its path (e.g. build/libkvmig.so), "
        "or install the library with `meson install`" +
        (f"; tried {', '.join(tried)}" if tried else ""))


lib = _load()

# ---- structs (include/kvmig/common.h, pager.h, mem.h, migrate.h, cas.h) ----

LAYOUT_NAME_MAX = 31
COMPAT_MAX = 63
MAX_ROUNDS = 64


class CacheMeta(Structure):
    _fields_ = [("page_size_tokens", c_uint32), ("n_layers", c_uint32), ("n_heads", c_uint32),
                ("head_dim", c_uint32), ("dtype", c_int)]


class PageFormat(Structure):
    _fields_ = [("layout", c_char * (LAYOUT_NAME_MAX + 1)), ("order", c_int),
                ("compat", c_char * (COMPAT_MAX + 1))]


class Id(Structure):
    _fields_ = [("b", c_uint8 * 16)]


class Seq(Structure):
    _fields_ = [("id", c_char_p), ("page_ixs", POINTER(c_uint32)), ("n_pages", c_uint32),
                ("fill_in_last_page", c_uint32), ("state", c_int), ("migration", Id)]


class SeqList(Structure):
    _fields_ = [("seqs", POINTER(Seq)), ("n", c_uint32)]


class Record(Structure):
    _fields_ = [("id", Id), ("role", c_int), ("state", c_int), ("move", c_int),
                ("peer_pager", Id), ("peer_addr", c_char * 64), ("owner_pid", c_int32),
                ("created", c_uint64), ("n_seqs", c_uint32)]


class Extent(Structure):
    _fields_ = [("addr", c_void_p), ("len", c_uint64)]


class MemRegion(Structure):
    _fields_ = [("base", c_void_p), ("len", c_uint64), ("kind", c_int), ("device", c_int32)]


class MemSlab(Structure):
    _fields_ = [("region", c_uint32), ("offset", c_uint64), ("stride", c_uint64)]


CB_VOID = CFUNCTYPE(c_int, c_void_p)
CB_SEQS = CFUNCTYPE(c_int, c_void_p, c_void_p)
CB_ALLOC = CFUNCTYPE(c_int, c_void_p, c_uint32, POINTER(c_uint32))
CB_FREE = CFUNCTYPE(c_int, c_void_p, POINTER(c_uint32), c_uint32)
CB_INSTALL = CFUNCTYPE(c_int, c_void_p, POINTER(Seq), c_uint32)
CB_REMOVE = CFUNCTYPE(c_int, c_void_p, POINTER(c_char_p), c_uint32)


class MemEngine(Structure):
    _fields_ = [("ctx", c_void_p), ("pause", CB_VOID), ("resume", CB_VOID), ("seqs", CB_SEQS),
                ("alloc", CB_ALLOC), ("free", CB_FREE), ("install", CB_INSTALL),
                ("remove", CB_REMOVE)]


class MemDesc(Structure):
    _fields_ = [("meta", CacheMeta), ("format", PageFormat), ("n_blocks", c_uint32),
                ("regions", POINTER(MemRegion)), ("n_regions", c_uint32),
                ("slabs", POINTER(MemSlab)), ("engine", MemEngine), ("tracks_writes", c_int)]


class SynthOpts(Structure):
    _fields_ = [("meta", CacheMeta), ("layout", c_int), ("capacity_pages", c_uint32),
                ("seed", c_uint64), ("n_seqs", c_uint32), ("pages_per_seq", c_uint32),
                ("shared_prefix_pages", c_uint32), ("shm_name", c_char_p)]


class Event(Structure):
    _fields_ = [("type", c_int), ("phase", c_char_p), ("addr", c_char_p),
                ("transport", c_char_p), ("pages_done", c_uint32), ("pages_total", c_uint32),
                ("bytes_done", c_uint64), ("bytes_total", c_uint64)]


CB_EVENT = CFUNCTYPE(None, c_void_p, POINTER(Event))
CB_LOG = CFUNCTYPE(None, c_void_p, c_char_p)


class AgentOpts(Structure):
    _fields_ = [("data_addr", c_char_p), ("transport", c_int), ("control_socket", c_char_p),
                ("control_addr", c_char_p), ("control_token", c_void_p),
                ("control_token_len", c_size_t), ("data_token", c_void_p),
                ("data_token_len", c_size_t), ("max_migrations", c_uint32),
                ("history", c_uint32), ("timeout_ms", c_uint32), ("queue_depth", c_uint32),
                ("max_read_bytes", c_uint32), ("log", CB_LOG), ("log_arg", c_void_p),
                ("hash_ahead_ms", c_uint32), ("path_hosts", c_char_p)]


class MigrateOpts(Structure):
    _fields_ = [("transport", c_int), ("mode", c_int), ("seq_ids", POINTER(c_char_p)),
                ("n_seq_ids", c_uint32), ("queue_depth", c_uint32),
                ("max_read_bytes", c_uint32), ("timeout_ms", c_uint32),
                ("accept_timeout_ms", c_uint32), ("verify", c_int), ("on_event", CB_EVENT),
                ("event_arg", c_void_p), ("progress_interval_ms", c_uint32),
                ("token", c_void_p), ("token_len", c_size_t), ("live", c_int),
                ("max_downtime_ms", c_uint32), ("max_rounds", c_uint32),
                ("cancel_fd", c_int), ("hash_threads", c_uint32), ("paths", c_uint32),
                ("path_hosts", c_char_p)]


class ResolveStats(Structure):
    _fields_ = [("activated", c_uint32), ("finished", c_uint32), ("aborted", c_uint32),
                ("in_doubt", c_uint32), ("in_progress", c_uint32)]


class RoundStats(Structure):
    _fields_ = [("pages", c_uint32), ("bytes", c_uint64), ("seconds", c_double)]


class MigrateStats(Structure):
    _fields_ = [("pages", c_uint32), ("seqs", c_uint32), ("bytes", c_uint64),
                ("pages_verified", c_uint32), ("rereads", c_uint32), ("reads", c_uint32),
                ("pages_freed", c_uint32), ("seconds", c_double),
                ("transfer_seconds", c_double), ("pause_seconds", c_double),
                ("register_seconds", c_double), ("regions_reused", c_uint32),
                ("transport", c_char * 8), ("n_rounds", c_uint32),
                ("round", RoundStats * (MAX_ROUNDS + 1)), ("bytes_sent", c_uint64),
                ("migration", Id), ("resolved", ResolveStats), ("unconfirmed", c_int),
                ("digests_ahead", c_uint32), ("pages_hashed", c_uint32),
                ("hash_threads", c_uint32), ("paths", c_uint32)]


class Digest(Structure):
    _fields_ = [("b", c_uint8 * 16)]


class StoreFsOpts(Structure):
    _fields_ = [("queue_depth", c_uint32), ("fsync", c_int), ("read_only", c_int),
                ("sync_io", c_int)]


class CaptureStats(Structure):
    _fields_ = [("pages", c_uint32), ("logical_bytes", c_uint64), ("written_bytes", c_uint64),
                ("blobs_written", c_uint32), ("blobs_deduped", c_uint32),
                ("blobs_repaired", c_uint32)]


class RestoreStats(Structure):
    _fields_ = [("pages", c_uint32), ("seqs", c_uint32), ("bytes", c_uint64)]


# ---- prototypes ----

def _proto(name: str, res, *args) -> None:
    f = getattr(lib, name)
    f.restype = res
    f.argtypes = list(args)


P = c_void_p  # opaque handles
_proto("kvmig_last_error", c_char_p)
_proto("kvmig_build_info", c_char_p)
_proto("kvmig_dtype_parse", c_int, c_char_p, POINTER(c_int))
_proto("kvmig_dtype_name", c_char_p, c_int)
_proto("kvmig_order_parse", c_int, c_char_p, POINTER(c_int))
_proto("kvmig_format_set", c_int, POINTER(PageFormat), c_char_p, c_int, c_char_p)
_proto("kvmig_meta_half_bytes", c_int, POINTER(CacheMeta), POINTER(c_uint64))
_proto("kvmig_layout_parse", c_int, c_char_p, POINTER(c_int))
_proto("kvmig_transport_parse", c_int, c_char_p, POINTER(c_int))
_proto("kvmig_id_format", None, POINTER(Id), c_char_p)
_proto("kvmig_digest_format", None, POINTER(Digest), c_char_p)
_proto("kvmig_digest_parse", c_int, c_char_p, POINTER(Digest))
_proto("kvmig_seq_state_name", c_char_p, c_int)
_proto("kvmig_record_state_name", c_char_p, c_int)
_proto("kvmig_seq_list_free", None, POINTER(SeqList))

_proto("kvmig_pager_destroy", None, POINTER(P))
_proto("kvmig_pager_meta", c_int, P, POINTER(CacheMeta), POINTER(c_int))
_proto("kvmig_pager_format", c_int, P, POINTER(PageFormat))
_proto("kvmig_pager_seqs", c_int, P, POINTER(SeqList))
_proto("kvmig_pager_occupied", c_int, P, POINTER(POINTER(c_uint32)), POINTER(c_uint32))
_proto("kvmig_pager_records", c_int, P, POINTER(POINTER(Record)), POINTER(c_uint32))
_proto("kvmig_pager_open", c_int, c_char_p, POINTER(P))
_proto("kvmig_pager_extents", c_int, P, c_uint32, c_int, POINTER(Extent), c_uint32,
       POINTER(c_uint32))
_proto("kvmig_pager_capacity", c_int, P, POINTER(c_uint32))
_proto("kvmig_agent_opts_init", None, POINTER(AgentOpts))
_proto("kvmig_agent_start", c_int, P, POINTER(AgentOpts), POINTER(P))
_proto("kvmig_agent_data_addr", c_char_p, P)
_proto("kvmig_agent_control_addr", c_char_p, P)
_proto("kvmig_agent_stop", None, POINTER(P))
_proto("kvmig_synth_opts_init", None, POINTER(SynthOpts))
_proto("kvmig_synth_create", c_int, POINTER(SynthOpts), POINTER(P))
_proto("kvmig_synth_unlink", c_int, c_char_p)
_proto("kvmig_mem_pager_create", c_int, POINTER(MemDesc), POINTER(P))
_proto("kvmig_mem_seq_add", c_int, c_void_p, c_char_p, POINTER(c_uint32), c_uint32, c_uint32)
_proto("kvmig_mem_error", c_int, c_int, c_char_p)
_proto("kvmig_mem_written", c_int, P, POINTER(c_uint32), c_uint32)

_proto("kvmig_migrate_opts_init", None, POINTER(MigrateOpts))
_proto("kvmig_migrate_send", c_int, P, c_char_p, POINTER(MigrateOpts), POINTER(MigrateStats))
_proto("kvmig_listener_open", c_int, c_char_p, POINTER(MigrateOpts), POINTER(P))
_proto("kvmig_listener_addr", c_char_p, P)
_proto("kvmig_listener_transport", c_char_p, P)
_proto("kvmig_listener_close", None, POINTER(P))
_proto("kvmig_migrate_accept", c_int, P, P, POINTER(MigrateOpts), POINTER(MigrateStats))
_proto("kvmig_migrate_resolve_pair", c_int, P, P, POINTER(ResolveStats))

_proto("kvmig_store_fs_opts_init", None, POINTER(StoreFsOpts))
_proto("kvmig_store_fs_open", c_int, c_char_p, POINTER(StoreFsOpts), POINTER(P))
_proto("kvmig_store_close", None, POINTER(P))
_proto("kvmig_capture", c_int, P, P, POINTER(Digest), POINTER(CaptureStats))
_proto("kvmig_restore", c_int, P, P, POINTER(Digest), POINTER(RestoreStats))
_proto("kvmig_store_get_alloc", c_int, P, POINTER(Digest), POINTER(c_void_p),
       POINTER(c_size_t))
_proto("kvmig_manifest_parse", c_int, c_char_p, c_size_t, POINTER(P))
_proto("kvmig_manifest_free", None, POINTER(P))
_proto("kvmig_verify", c_int, P, P, POINTER(c_uint32))

libc = ctypes.CDLL(None)
libc.free.argtypes = [c_void_p]
libc.free.restype = None
