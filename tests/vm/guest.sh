#!/bin/busybox sh
# Runs inside the test VM as its init (tests/vm/run.sh builds the initramfs and boots it).
# A kernel with cgroup v2 only (cgroup_no_v1=all), the runtime statically linked at
# /berth-runtime, a busybox bundle at /bundle, criu at /usr/sbin/criu. Each check prints
# "VM-PASS name" or "VM-FAIL name: why"; the last line is "VM-DONE".
# pivot_root cannot leave the initramfs (the kernel's rootfs): move everything to a tmpfs first.
if [ ! -e /.on-tmpfs ]; then
  /bin/busybox mkdir /newroot
  /bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
  for f in /*; do [ "$f" = /newroot ] || /bin/busybox cp -a "$f" /newroot/; done
  /bin/busybox touch /newroot/.on-tmpfs
  exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox --install -s /bin
# GNU tar (/usr/bin) before busybox's: criu calls tar with GNU options.
export PATH=/usr/sbin:/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in $(cat /modules/order); do insmod "/modules/$m"; done
echo "VM-INFO kernel $(uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
. /checks.sh
echo VM-DONE
poweroff -f
