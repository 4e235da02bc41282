//! OCI mount options to mount(2) flags, propagation, recursive attributes and fs data.

use anyhow::{Result, bail};
use nix::mount::MsFlags;

#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub flags: MsFlags,
    /// Flags set by options after a `bind` need a remount to take effect.
    pub propagation: Vec<MsFlags>,
    /// mount_setattr attributes for `rro`, `rnosuid`…: (set, clear).
    pub rec_set: u64,
    pub rec_clr: u64,
    pub data: Vec<String>,
    /// `idmap` or `ridmap`: an idmapped mount; `idmap_rec` for `ridmap` (the mounts below too).
    pub idmap: bool,
    pub idmap_rec: bool,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// Every option name this runtime understands (for `features`).
pub const KNOWN: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "silent",
    "loud",
    "bind",
    "rbind",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnoatime",
    "ratime",
    "rrelatime",
    "rnorelatime",
    "rstrictatime",
    "rnodiratime",
    "rdiratime",
    "idmap",
    "ridmap",
];

pub fn parse(opts: &[String]) -> Result<Parsed> {
    let mut p = Parsed {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        rec_set: 0,
        rec_clr: 0,
        data: Vec::new(),
        idmap: false,
        idmap_rec: false,
    };
    for o in opts {
        let (set, clr): (MsFlags, MsFlags) = match o.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                let base = match o.strip_prefix('r').unwrap_or(o) {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                // None of the base names starts with 'r', so a leading 'r' means recursive.
                let rec = o.starts_with('r');
                p.propagation.push(if rec { base | MsFlags::MS_REC } else { base });
                continue;
            }
            "idmap" | "ridmap" => {
                p.idmap = true;
                p.idmap_rec = o == "ridmap";
                continue;
            }
            r if r.starts_with('r') && rec_attr(&r[1..]).is_some() => {
                let (set, clr) = rec_attr(&r[1..]).unwrap();
                p.rec_set = (p.rec_set & !clr) | set;
                p.rec_clr = (p.rec_clr & !set) | clr;
                continue;
            }
            other => {
                if other.contains('\0') {
                    bail!("mount option {other:?} contains a NUL byte");
                }
                p.data.push(other.to_string());
                continue;
            }
        };
        p.flags.remove(clr);
        p.flags.insert(set);
    }
    Ok(p)
}

/// `ro` -> (set RDONLY), `rw` -> (clear RDONLY)…, for the recursive `r*` options.
fn rec_attr(o: &str) -> Option<(u64, u64)> {
    Some(match o {
        "ro" => (MOUNT_ATTR_RDONLY, 0),
        "rw" => (0, MOUNT_ATTR_RDONLY),
        "nosuid" => (MOUNT_ATTR_NOSUID, 0),
        "suid" => (0, MOUNT_ATTR_NOSUID),
        "nodev" => (MOUNT_ATTR_NODEV, 0),
        "dev" => (0, MOUNT_ATTR_NODEV),
        "noexec" => (MOUNT_ATTR_NOEXEC, 0),
        "exec" => (0, MOUNT_ATTR_NOEXEC),
        "noatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "relatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "strictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        "atime" | "norelatime" => (0, MOUNT_ATTR__ATIME),
        "nodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "diratime" => (0, MOUNT_ATTR_NODIRATIME),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_flags_and_data() {
        let p = parse(&s(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k"])).unwrap();
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV);
        assert_eq!(p.data, s(&["mode=755", "size=65536k"]));
        let p = parse(&s(&["rbind", "ro", "rw", "rprivate"])).unwrap();
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(p.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let p = parse(&s(&["bind", "private", "rro", "rnosuid"])).unwrap();
        assert_eq!(p.propagation, vec![MsFlags::MS_PRIVATE]);
        assert_eq!(p.rec_set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID);
    }
}
