//! A throwaway network namespace: made in a helper thread, held by an fd, gone when dropped
//! (no name under /run/netns, so nothing to leak). Commands run inside it through setns.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// A new namespace with loopback up.
    pub fn new() -> std::io::Result<NetNs> {
        let fd = std::thread::spawn(|| -> std::io::Result<OwnedFd> {
            // SAFETY: unshare only affects this short-lived thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(std::fs::File::open("/proc/thread-self/ns/net")?.into())
        })
        .join()
        .expect("netns thread")?;
        let ns = NetNs { fd };
        let st = ns.command("ip").args(["link", "set", "lo", "up"]).status()?;
        if !st.success() {
            return Err(std::io::Error::other("ip link set lo up failed"));
        }
        Ok(ns)
    }

    /// A command that will run inside the namespace (a whole engine can be run this way).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        let raw = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe and runs in the forked child before exec.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// The namespace's file, e.g. for a container config's `network` namespace path.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }
}
