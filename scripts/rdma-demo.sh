#!/bin/sh
# scripts/rdma-demo.sh [BUILD] - kvmig over RDMA on a machine whose kernel has
# no RDMA at all: boot the project's qemu guest (tests/softroce/boot.sh: the
# Debian kernel under qemu, two soft-RoCE devices on a veth pair, this
# machine's filesystem read-only inside) and run `kvmig demo --transport
# rdma` in it, the receiver's pages read by RDMA READ over rxe, then compared
# with the source byte for byte. ~1 minute (the guest runs under TCG).
#
# Needs a build (make build) and what the soft-RoCE suite needs:
# ./scripts/install-deps.sh --tests (qemu-system-x86, linux-image-amd64,
# busybox-static, cpio, kmod, iproute2, rdma-core). `make rdma-demo` does
# all of it. Where the kernel has rdma_rxe, scripts/rxe.sh is the direct way.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" 2>/dev/null && pwd) || {
	echo "rdma-demo.sh: no build directory ${1:-$here/build}: run make build first" >&2
	exit 1
}
[ -x "$build/tools/kvmig" ] || {
	echo "rdma-demo.sh: $build/tools/kvmig is missing: run make build first" >&2
	exit 1
}
cmd=$build/rdma-demo.sh
cat > "$cmd" <<EOS
# run inside the guest: rxa is 10.77.0.1, rxb 10.77.0.2
rdma link show
exec $build/tools/kvmig demo --transport rdma --listen 10.77.0.1:0
EOS
echo "rdma-demo.sh: booting the soft-RoCE guest (qemu, TCG: about a minute)..."
"$here/tests/softroce/boot.sh" "$build/softroce" "$cmd" 600
rc=$?
[ $rc -eq 77 ] && echo "rdma-demo.sh: install what is missing: ./scripts/install-deps.sh --tests" >&2
exit $rc
