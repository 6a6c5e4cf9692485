#!/bin/sh
# tests/softroce/stage2.sh - runs as PID 1 inside the guest, in the host's
# root filesystem (read-only 9p + tmpfs overlay). Brings up two pairs of
# soft-RoCE devices, each on the two ends of a veth pair, in one namespace
# (rxe has no netns support in this kernel): a second device per side, to
# stripe a migration over two devices (send --paths, recv --devices).
#   rxa on va 10.77.0.1/24      rxb on vb 10.77.0.2/24
#   rxc on vc 10.78.0.1/24      rxd on vd 10.78.0.2/24
# then runs the script $kvmig_out/cmd with its output in $kvmig_out/log and
# its exit status in $kvmig_out/rc, and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
out=$kvmig_out
mkdir -p /dev/shm
mount -t tmpfs -o size=1g shm /dev/shm

setup() {
	for m in crc32_generic veth rdma_rxe ib_uverbs rdma_ucm; do
		modprobe "$m" || return 1
	done
	sysctl -qw net.ipv4.conf.all.accept_local=1 net.ipv4.conf.all.rp_filter=0 \
		net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.default.accept_local=1 || return 1
	ip link set lo up &&
	ip link add va type veth peer name vb &&
	ip link set va mtu 9000 && ip link set vb mtu 9000 &&
	ip addr add 10.77.0.1/24 dev va && ip addr add 10.77.0.2/24 dev vb &&
	ip link set va up && ip link set vb up &&
	rdma link add rxa type rxe netdev va &&
	rdma link add rxb type rxe netdev vb || return 1
	ip link add vc type veth peer name vd &&
	ip link set vc mtu 9000 && ip link set vd mtu 9000 &&
	ip addr add 10.78.0.1/24 dev vc && ip addr add 10.78.0.2/24 dev vd &&
	ip link set vc up && ip link set vd up &&
	rdma link add rxc type rxe netdev vc &&
	rdma link add rxd type rxe netdev vd || return 1
	ulimit -l unlimited
}

if setup > "$out/setup.log" 2>&1; then
	timeout -k 5 "${kvmig_timeout:-1200}" sh "$out/cmd" > "$out/log" 2>&1
	echo $? > "$out/rc"
else
	echo "guest setup failed:" > "$out/log"
	cat "$out/setup.log" >> "$out/log"
	echo 99 > "$out/rc"
fi
sync
echo o > /proc/sysrq-trigger
sleep 10
