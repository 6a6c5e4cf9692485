#!/bin/sh
# tests/softroce/boot.sh - run a shell script inside a qemu guest that has two
# soft-RoCE (rdma_rxe) devices, and return its exit status.
#
#   boot.sh WORKDIR SCRIPT [TIMEOUT_S]
#
# WORKDIR (created; its initramfs is cached there) receives the guest's
# output in out-<script name>/: log (SCRIPT's stdout and stderr), setup.log,
# console.log, rc.
# SCRIPT runs as root in the guest with the host's filesystem visible at the
# same paths (read-only, writes go to a tmpfs overlay) and the RDMA setup
# described in stage2.sh. Exit 77 when qemu, the kernel or busybox is
# missing (saying what to install); the guest's exit status otherwise.
#
# The host kernel has no RDMA; the guest runs the Debian kernel under TCG
# (KVM here is paravirtual and cannot run a nested guest).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$1
script=$2
limit=${3:-1200}

need="qemu-system-x86 linux-image-amd64 busybox-static cpio"
missing() {
	echo "softroce: $1 is missing; install: apt-get install $need" >&2
	exit 77
}
command -v qemu-system-x86_64 > /dev/null || missing qemu-system-x86_64
command -v cpio > /dev/null || missing cpio
bb=/bin/busybox # busybox-static's: the initramfs has no libc
[ -x "$bb" ] || missing busybox
kver=$(ls /lib/modules 2>/dev/null | sort -V | tail -n 1)
[ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] || missing "a kernel in /boot"
[ -e "/lib/modules/$kver/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko" ] ||
	[ -e "/lib/modules/$kver/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko.xz" ] ||
	missing "rdma_rxe for kernel $kver"

mkdir -p "$work"
work=$(cd "$work" && pwd)
out=$work/out-$(basename "$script" .sh) # one per script: suite and bench may overlap
rm -rf "$out"
mkdir -p "$out"
cp "$script" "$out/cmd"

# The initramfs: static busybox, the modules the overlay mount needs, /init.
initrd=$work/initramfs-$kver.cpio.gz
if [ ! -s "$initrd" ] || [ "$here/init.sh" -nt "$initrd" ]; then
	root=$work/initramfs
	rm -rf "$root"
	mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
	cp "$bb" "$root/bin/busybox"
	cp "$here/init.sh" "$root/init"
	chmod 755 "$root/init"
	: > "$root/modules.list"
	for m in virtio_pci 9pnet_virtio 9p overlay; do
		modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
	done | awk '!seen[$0]++' | while read -r ko; do
		dst=$root$ko
		mkdir -p "$(dirname "$dst")"
		case $ko in
		*.xz) xz -dc "$ko" > "${dst%.xz}"; ko=${ko%.xz} ;;
		*.zst) zstd -qdc "$ko" > "${dst%.zst}"; ko=${ko%.zst} ;;
		*) cp "$ko" "$dst" ;;
		esac
		echo "${ko#/}" >> "$root/modules.list"
	done
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$root"
fi

set +e
timeout -k 10 "$limit" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 2048 -smp 2 \
	-nographic -no-reboot -net none \
	-kernel "/boot/vmlinuz-$kver" -initrd "$initrd" \
	-append "console=ttyS0 quiet panic=-1 kvmig_out=$out kvmig_stage2=$here/stage2.sh kvmig_timeout=$limit" \
	-virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$out,mount_tag=out,security_model=none,multidevs=remap" \
	< /dev/null > "$out/console.log" 2>&1
qrc=$?
set -e
if [ ! -s "$out/rc" ]; then
	echo "softroce: the guest did not finish (qemu exit $qrc); console:" >&2
	tail -n 30 "$out/console.log" >&2
	exit 99
fi
cat "$out/log"
exit "$(cat "$out/rc")"
