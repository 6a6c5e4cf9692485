#!/bin/sh
# scripts/rxe.sh - soft-RoCE (rdma_rxe) on a machine without an RDMA NIC:
# an RDMA device over any Ethernet interface, for kvmig --transport rdma.
#
#   rxe.sh up IFACE [NAME]   load rdma_rxe, add device NAME (default rxe_IFACE)
#                            on IFACE, print its address for --listen / --to
#   rxe.sh down [NAME]       remove NAME, or every rxe_* device (the names this
#                            script gives, whoever added them)
#   rxe.sh status            the RDMA links there are
#
# Needs root, the kernel module rdma_rxe and the rdma tool (Debian: iproute2,
# rdma-core for the user-space provider). Where the kernel has no rdma_rxe
# (containers, many cloud kernels), scripts/rdma-demo.sh runs kvmig over rdma
# in a qemu guest instead. Exit 1 with a sentence saying what is missing.
set -u
die() {
	echo "rxe.sh: $*" >&2
	exit 1
}
need_root() {
	[ "$(id -u)" -eq 0 ] || die "must run as root (modprobe, rdma link add)"
}
have() {
	command -v "$1" >/dev/null 2>&1
}
addr_of() {
	ip -o -4 addr show dev "$1" 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }'
}

cmd=${1:-}
case $cmd in
up)
	iface=${2:-}
	[ -n "$iface" ] || die "usage: rxe.sh up IFACE [NAME]"
	name=${3:-rxe_$iface}
	need_root
	have rdma || die "the rdma tool is missing (apt-get install iproute2)"
	ip link show dev "$iface" >/dev/null 2>&1 || die "no interface $iface (ip -br link lists them)"
	if ! modprobe rdma_rxe 2>/dev/null; then
		die "this kernel has no rdma_rxe module ($(uname -r)); try scripts/rdma-demo.sh, \
which runs kvmig over soft-RoCE in a qemu guest"
	fi
	modprobe rdma_ucm 2>/dev/null || true
	modprobe ib_uverbs 2>/dev/null || true
	if rdma link show "$name/1" >/dev/null 2>&1; then
		echo "rxe.sh: $name already exists"
	else
		rdma link add "$name" type rxe netdev "$iface" ||
			die "rdma link add $name type rxe netdev $iface failed"
	fi
	a=$(addr_of "$iface")
	[ -n "$a" ] || die "$name is up, but $iface has no IPv4 address to listen on"
	ls /dev/infiniband/rdma_cm >/dev/null 2>&1 ||
		echo "rxe.sh: warning: /dev/infiniband/rdma_cm is missing (modprobe rdma_ucm)" >&2
	echo "rxe.sh: $name on $iface; RDMA address $a"
	echo "  kvmig recv --transport rdma --listen $a:7400 --pager shm:DST"
	echo "  kvmig send --transport rdma --to $a:7400 --pager shm:SRC"
	echo "  (RDMA pins memory: ulimit -l unlimited, or kvmig reports ENOMEM)"
	;;
down)
	need_root
	have rdma || die "the rdma tool is missing (apt-get install iproute2)"
	if [ -n "${2:-}" ]; then
		rdma link delete "$2" || die "rdma link delete $2 failed"
		echo "rxe.sh: removed $2"
	else
		found=0
		for l in $(rdma link show 2>/dev/null | awk '$2 ~ /^rxe_/ { sub(/\/.*/, "", $2); print $2 }'); do
			rdma link delete "$l" && echo "rxe.sh: removed $l" && found=1
		done
		[ $found -eq 1 ] || echo "rxe.sh: no rxe_* device to remove"
	fi
	;;
status)
	have rdma || die "the rdma tool is missing (apt-get install iproute2)"
	rdma link show
	;;
*)
	echo "usage: rxe.sh up IFACE [NAME] | down [NAME] | status" >&2
	exit 2
	;;
esac
