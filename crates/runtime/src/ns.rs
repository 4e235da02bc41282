//! Namespaces: OCI types to clone flags, and the paths to join.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

pub fn flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => 0x80, // CLONE_NEWTIME
    }
}

/// The name of the namespace's file under /proc/PID/ns.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// What the clone must do: namespaces to create and open namespace files to join.
pub struct Plan {
    pub new_flags: libc::c_int,
    /// user first, then the others, as the kernel needs.
    pub join: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// Joined namespaces that are the runtime's own (the host's, as a rule).
    pub joins_ours: Vec<LinuxNamespaceType>,
}

impl Plan {
    pub fn has_new(&self, t: LinuxNamespaceType) -> bool {
        self.new_flags & flag(t) != 0
    }
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.has_new(t) || self.join.iter().any(|(j, _)| *j == t)
    }
    /// A namespace of the container that is not the runtime's: new, or joined by a path that
    /// is not our own (what makes a hostname or a sysctl the container's, not the host's).
    pub fn own(&self, t: LinuxNamespaceType) -> bool {
        self.has(t) && !self.joins_ours.contains(&t)
    }
}

pub fn plan(list: &[LinuxNamespace]) -> Result<Plan> {
    let mut new_flags = 0;
    let mut join = Vec::new();
    let mut joins_ours = Vec::new();
    let mut seen = Vec::new();
    for ns in list {
        let t = ns.typ();
        if seen.contains(&t) {
            bail!("linux.namespaces: {} is listed twice", proc_name(t));
        }
        seen.push(t);
        match ns.path() {
            None => new_flags |= flag(t),
            Some(p) => {
                let fd = nix::fcntl::open(
                    p,
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .with_context(|| format!("linux.namespaces: opening {} namespace {}", proc_name(t), p.display()))?;
                check_nsfs(&fd, t, p)?;
                let ours = std::fs::metadata(format!("/proc/self/ns/{}", proc_name(t))).ok();
                let theirs = nix::sys::stat::fstat(&fd).ok();
                if let (Some(o), Some(t2)) = (ours, theirs) {
                    use std::os::unix::fs::MetadataExt;
                    if o.ino() == t2.st_ino && o.dev() == t2.st_dev {
                        joins_ours.push(t);
                    }
                }
                join.push((t, fd));
            }
        }
    }
    join.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
    Ok(Plan { new_flags, join, joins_ours })
}

/// A path to join must be a namespace file of the right type.
fn check_nsfs(fd: &OwnedFd, t: LinuxNamespaceType, p: &std::path::Path) -> Result<()> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: ioctl on an owned fd with no argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if rc < 0 {
        bail!("linux.namespaces: {} is not a namespace file", p.display());
    }
    if rc != flag(t) {
        bail!("linux.namespaces: {} is not a {} namespace", p.display(), proc_name(t));
    }
    Ok(())
}

pub fn setns(fd: &OwnedFd, t: LinuxNamespaceType) -> Result<()> {
    // SAFETY: setns(2) on a namespace fd we own.
    if unsafe { libc::setns(fd.as_raw_fd(), flag(t)) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("joining the {} namespace", proc_name(t)));
    }
    Ok(())
}
