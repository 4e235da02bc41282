//! Linux capabilities by name, and applying the five OCI sets to the calling thread.

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

/// Kernel capability names in number order (capability.h). Index = number.
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub fn number(name: &str) -> Option<u32> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// Highest capability this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// A set as a 64-bit mask; capabilities unknown to this kernel are left out, as runc does.
pub fn mask(set: Option<&Capabilities>) -> u64 {
    let last = last_cap();
    set.into_iter()
        .flatten()
        .filter_map(|c| number(&c.to_string()))
        .filter(|n| *n <= last)
        .fold(0u64, |m, n| m | (1 << n))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Drops from the bounding set everything not in `bounding`. Needs CAP_SETPCAP, so it runs
/// before the uid change.
pub fn drop_bounding(caps: &LinuxCapabilities) -> Result<()> {
    let keep = mask(caps.bounding().as_ref());
    for n in 0..=last_cap() {
        if keep & (1 << n) == 0 {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e).with_context(|| format!("dropping {} from the bounding set", NAMES[n as usize]));
                }
            }
        }
    }
    Ok(())
}

/// Makes every permitted capability effective (a change of fsuid away from 0 drops the file
/// capabilities from the effective set; the engine's `--userns` mounts need them back).
pub fn raise_effective() -> Result<()> {
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2)/capset(2) with a v3 header and two data words.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error()).context("capget");
        }
        for d in &mut data {
            d.effective = d.permitted;
        }
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error()).context("capset");
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable, then the ambient set.
pub fn apply_sets(caps: &LinuxCapabilities) -> Result<()> {
    let (e, p, i) =
        (mask(caps.effective().as_ref()), mask(caps.permitted().as_ref()), mask(caps.inheritable().as_ref()));
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    let data = [
        CapData { effective: e as u32, permitted: p as u32, inheritable: i as u32 },
        CapData { effective: (e >> 32) as u32, permitted: (p >> 32) as u32, inheritable: (i >> 32) as u32 },
    ];
    // SAFETY: capset(2) with a v3 header and two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("capset (process.capabilities)");
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    let amb = mask(caps.ambient().as_ref());
    for n in 0..64u32 {
        if amb & (1 << n) != 0 {
            // SAFETY: as above.
            let rc = unsafe {
                libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, n as libc::c_ulong, 0, 0)
            };
            if rc != 0 {
                bail!(
                    "raising ambient capability {}: {} (it must also be permitted and inheritable)",
                    NAMES[n as usize],
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("net_raw"), Some(13));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        let set: Capabilities = [oci_spec::runtime::Capability::Chown, oci_spec::runtime::Capability::Kill].into();
        assert_eq!(mask(Some(&set)), 1 | (1 << 5));
    }
}
