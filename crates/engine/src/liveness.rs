//! Which containers' monitors are alive, for the repair every command runs first. Reading
//! /proc/PID/stat to compare start times costs about 10 µs a container (10 ms with 1,000
//! running, on every command), so each monitor holds a write lock on the byte at its own pid in
//! one shared file for as long as it lives. One fcntl per container then tells a live monitor
//! from a dead one: the kernel drops the lock when the monitor dies, however it dies. The start
//! time is still compared where the lock cannot answer (no lock, or two rows naming one pid).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const LOCK_FILE: &str = "monitors.lock";

fn open(runroot: &Path, create: bool) -> Option<File> {
    OpenOptions::new().read(true).write(true).create(create).mode(0o600).open(runroot.join(LOCK_FILE)).ok()
}

fn flock_at(pid: i32, kind: i32) -> libc::flock {
    // SAFETY: a plain C struct; all zeroes is valid.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = pid as libc::off_t;
    l.l_len = 1;
    l
}

/// Called once by a monitor as it starts: the lock stays until the process is gone. An open
/// file description lock (not a POSIX one) so that closing some other descriptor of the file
/// cannot drop it; the descriptor is close-on-exec, so no container inherits it.
pub(crate) fn hold(runroot: &Path) {
    let Some(f) = open(runroot, true) else { return };
    // SAFETY: getpid.
    if lock_at(&f, unsafe { libc::getpid() }) {
        std::mem::forget(f);
    }
}

fn lock_at(f: &File, pid: i32) -> bool {
    let mut l = flock_at(pid, libc::F_WRLCK);
    // SAFETY: fcntl on an open fd with a valid flock struct.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut l) == 0 }
}

/// For each (monitor pid, start time), whether that monitor is alive.
pub(crate) fn alive(runroot: &Path, monitors: &[(i32, u64)]) -> Vec<bool> {
    let file = open(runroot, false);
    let mut seen: HashMap<i32, usize> = HashMap::new();
    for (pid, _) in monitors {
        *seen.entry(*pid).or_default() += 1;
    }
    monitors
        .iter()
        .map(|&(pid, start)| {
            if pid <= 0 {
                return false;
            }
            let locked = file.as_ref().is_some_and(|f| {
                let mut l = flock_at(pid, libc::F_WRLCK);
                // SAFETY: fcntl on our own fd with a valid flock struct.
                unsafe {
                    libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut l) == 0 && l.l_type != libc::F_UNLCK as i16
                }
            });
            if locked && seen[&pid] == 1 {
                return true;
            }
            berth_runtime::state::pid_alive(pid, start)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_means_alive_and_start_times_decide_the_rest() {
        let dir = std::env::temp_dir().join(format!("berth-liveness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id() as i32;
        let start = berth_runtime::state::proc_start(me).unwrap().0;
        // No lock file yet: start times answer.
        assert_eq!(alive(&dir, &[(me, start), (me, start + 1), (0, 0)]), vec![true, false, false]);
        // A lock at our pid (taken through its own open file description, as a monitor's is).
        let f = open(&dir, true).unwrap();
        assert!(lock_at(&f, me));
        assert_eq!(alive(&dir, &[(me, start + 1)]), vec![true], "the lock answers alone");
        assert_eq!(alive(&dir, &[(me, start), (me, start + 1)]), vec![true, false], "one pid, two rows");
        drop(f);
        assert_eq!(alive(&dir, &[(me, start + 1)]), vec![false], "the lock went with its holder");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
