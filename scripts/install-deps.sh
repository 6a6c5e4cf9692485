#!/bin/sh
# Install the Debian packages kvmig builds with (and, with --tests, what the
# test suites need: the soft-RoCE suite boots a qemu guest with the Debian
# kernel and runs rdma_rxe in it), if any is missing.
# Needs root (or sudo) only when something must be installed.
set -eu

PKGS="meson ninja-build pkg-config gcc libc6-dev \
libibverbs-dev librdmacm-dev liburing-dev libxxhash-dev libjansson-dev libsodium-dev libcmocka-dev \
libmicrohttpd-dev xxhash python3 python3-xxhash python3-numpy"
if [ "${1:-}" = "--tests" ]; then
	PKGS="$PKGS qemu-system-x86 linux-image-amd64 busybox-static cpio kmod iproute2 \
rdma-core ibverbs-utils rdmacm-utils perftest valgrind clang libclang-rt-14-dev python3-pytest \
python3-prometheus-client curl"
fi

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
