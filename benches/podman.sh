# Sourced by the benches that compare with podman. podman's crun refuses this machine's hybrid
# cgroup layout unless hugetlb is also mounted as a v1 hierarchy, and the machine's hard limits
# need explicit ulimits (shared/design/peers.md). podman_ready mounts hugetlb if needed and
# checks that podman runs IMAGE; podman_done undoes the mount. PODMAN_RUN holds the flags.
PODMAN_RUN="--ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
podman_ready() { # $1 = image
  command -v podman >/dev/null || return 1
  if [ -d /sys/fs/cgroup/unified ] && [ ! -e /sys/fs/cgroup/hugetlb ]; then
    mkdir /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb && podman_hugetlb=1
  fi
  podman run --rm $PODMAN_RUN --network none "$1" true >/dev/null 2>&1
}
podman_done() {
  if [ -n "${podman_hugetlb:-}" ] && mountpoint -q /sys/fs/cgroup/hugetlb; then
    # podman leaves its (empty) parent cgroups behind; in the hierarchy we mounted they would
    # keep it busy. rmdir takes only empty cgroups.
    find /sys/fs/cgroup/hugetlb -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
    umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb
  fi
  podman_hugetlb=
}
