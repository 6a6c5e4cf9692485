# SPDX-License-Identifier: MIT
"""One side of a two-process migration test.

  peer.py send LAYOUT ADDR   fill three sequences, send them all (move); print
                             their digests
  peer.py recv LAYOUT        listen; print the address, then (after one
                             migration) a JSON line of the digests
Exit status: 0, or the errno of the failure (its message on stderr).
$KVMIG_TEST_TRANSPORT (tcp) and $KVMIG_TEST_LISTEN (127.0.0.1:0) choose the
transport and the receiver's address.
"""
import json
import os
import sys

import kvmig
from engines import Toy


# The soft-RoCE suite runs it over rdma on the guest's rxe address.
TRANSPORT = os.environ.get("KVMIG_TEST_TRANSPORT", "tcp")
LISTEN = os.environ.get("KVMIG_TEST_LISTEN", "127.0.0.1:0")


def main():
    mode, layout = sys.argv[1], sys.argv[2]
    t = Toy(layout, layout_name="shared")
    try:
        if mode == "send":
            t.fill()
            before = t.digests()
            kvmig.send(t.pager, sys.argv[3], timeout_ms=10000, transport=TRANSPORT)
            print(json.dumps(before), flush=True)
            assert t.pager.seqs() == [] and len(t.bm.free_blocks) == t.bm.n_blocks
        else:
            with kvmig.Receiver(t.pager, LISTEN, timeout_ms=10000, accept_timeout_ms=20000,
                                transport=TRANSPORT) as r:
                print(r.addr, flush=True)
                r.accept()
            print(json.dumps(t.digests()), flush=True)
    except kvmig.KvmigError as e:
        print(e, file=sys.stderr)
        sys.exit(e.errno)


main()
