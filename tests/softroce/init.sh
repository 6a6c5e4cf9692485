#!/bin/busybox sh
# tests/softroce/init.sh - /init of the guest's initramfs (busybox only).
# Loads the modules listed in /modules.list, mounts the host's root
# read-only over 9p with a tmpfs overlay on top, mounts the writable result
# export at $kvmig_out, and switch_roots into $kvmig_stage2 (a host path),
# which runs as PID 1 and powers the guest off. kvmig_out and kvmig_stage2
# come from the kernel command line (the kernel passes unknown key=value
# pairs to init's environment).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do
	insmod "/$m" || echo "softroce init: insmod $m failed"
done
mkdir -p /lower /upper /newroot
fail() {
	echo "softroce init: $*"
	echo o > /proc/sysrq-trigger
	sleep 5
}
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 root /lower || fail "cannot mount the host root"
mount -t tmpfs -o size=1536m tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot ||
	fail "cannot mount the overlay"
mkdir -p "/newroot$kvmig_out"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "/newroot$kvmig_out" ||
	fail "cannot mount the result export"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh "$kvmig_stage2"
