//! `--userns auto`: a container whose root is an unprivileged host user. Each such container
//! gets its own block of host ids from berth's subordinate ranges (the `berth` lines of
//! /etc/subuid and /etc/subgid, as podman's `auto` takes the `containers` lines), never one that
//! another container holds. Its root file system stays stored with the image's ids; the
//! overlay is built from idmapped views (berth_storage::RootFs::mount_shifted).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_storage::Shift;

use crate::{Engine, FileLock};

/// The user whose subordinate ids berth hands out.
pub const SUBID_USER: &str = "berth";
const DEFAULT_SIZE: u32 = 65536;

/// What `--userns` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Host,
    Auto { size: u32 },
}

pub fn parse(s: &str) -> Result<Mode> {
    let bad = || anyhow::anyhow!("invalid --userns {s:?}: use host or auto[:size=N]");
    match s {
        "" | "host" => Ok(Mode::Host),
        "auto" => Ok(Mode::Auto { size: DEFAULT_SIZE }),
        _ => {
            let opt = s.strip_prefix("auto:").ok_or_else(bad)?;
            let n = opt.strip_prefix("size=").ok_or_else(bad)?;
            let size: u32 = n.parse().map_err(|_| bad())?;
            if size == 0 {
                return Err(bad());
            }
            Ok(Mode::Auto { size })
        }
    }
}

/// The subordinate id file for "uid" or "gid"; BERTH_SUBUID_FILE / BERTH_SUBGID_FILE point
/// elsewhere (tests, or a machine that keeps them apart).
fn subid_file(kind: &str) -> PathBuf {
    let var = format!("BERTH_SUB{}_FILE", kind.to_ascii_uppercase());
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(format!("/etc/sub{kind}")))
}

/// `start count` ranges of `user` in a subid file's text (`name:start:count` lines).
fn ranges(text: &str, user: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (name, start, count) = (f.next()?, f.next()?, f.next()?);
            (name == user).then_some((start.parse().ok()?, count.parse().ok()?))
        })
        .filter(|(start, count)| *count > 0 && *start > 0)
        .collect()
}

/// The lowest block of `size` ids inside `ranges` that overlaps none of `used` (start, size).
fn pick(ranges: &[(u64, u64)], used: &[(u64, u64)], size: u64) -> Option<u64> {
    let mut starts: Vec<u64> = ranges.iter().map(|r| r.0).chain(used.iter().map(|u| u.0 + u.1)).collect();
    starts.sort_unstable();
    starts.into_iter().find(|&s| {
        ranges.iter().any(|&(rs, rc)| s >= rs && s + size <= rs + rc)
            && used.iter().all(|&(us, uc)| s + size <= us || us + uc <= s)
    })
}

impl Engine {
    /// Host ids for a new container in `mode`; None for the host's own. The lock it returns
    /// must be held until the container's row is written, so that two creates never pick the
    /// same block.
    pub(crate) fn allocate_userns(&self, mode: Mode) -> Result<(Option<Shift>, Option<FileLock>)> {
        let Mode::Auto { size } = mode else { return Ok((None, None)) };
        let lock = FileLock::take(&self.root.join("userns.lock"), true)?;
        let mut used_uid = Vec::new();
        let mut used_gid = Vec::new();
        {
            let mut st = self.db.prepare(
                "SELECT json_extract(config, '$.userns.uid'), json_extract(config, '$.userns.gid'), json_extract(config, '$.userns.size')
                 FROM containers WHERE json_extract(config, '$.userns') IS NOT NULL",
            )?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
            for row in rows {
                let (u, g, n) = row?;
                used_uid.push((u as u64, n as u64));
                used_gid.push((g as u64, n as u64));
            }
        }
        let pick_in = |kind: &str, used: &[(u64, u64)]| -> Result<u32> {
            let file = subid_file(kind);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let r = ranges(&text, SUBID_USER);
            if r.is_empty() {
                bail!(
                    "--userns auto: {} has no range for user {SUBID_USER}: add a line such as {SUBID_USER}:100000:655360 to /etc/subuid and /etc/subgid",
                    file.display()
                );
            }
            let start = pick(&r, used, size as u64).with_context(|| {
                format!(
                    "--userns auto: no free block of {size} ids left in the {SUBID_USER} ranges of {}",
                    file.display()
                )
            })?;
            u32::try_from(start)
                .ok()
                .filter(|s| s.checked_add(size).is_some())
                .context("--userns auto: ids beyond 32 bits")
        };
        let uid = pick_in("uid", &used_uid)?;
        let gid = pick_in("gid", &used_gid)?;
        Ok((Some(Shift { uid, gid, size }), Some(lock)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse("").unwrap(), Mode::Host);
        assert_eq!(parse("host").unwrap(), Mode::Host);
        assert_eq!(parse("auto").unwrap(), Mode::Auto { size: 65536 });
        assert_eq!(parse("auto:size=1024").unwrap(), Mode::Auto { size: 1024 });
        for bad in ["keep-id", "auto:size=0", "auto:size=x", "auto:uidmapping=0:1:1", "private"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subid_lines() {
        let text = "root:100000:65536\nberth:200000:131072\n# no\nberth:0:10\nberth:x:1\nberth:500000:0\n";
        assert_eq!(ranges(text, "berth"), vec![(200000, 131072)]);
        assert!(ranges(text, "nobody").is_empty());
    }

    #[test]
    fn blocks_never_overlap_what_is_used() {
        let r = [(100000, 200000)];
        assert_eq!(pick(&r, &[], 65536), Some(100000));
        assert_eq!(pick(&r, &[(100000, 65536)], 65536), Some(165536));
        // A smaller block used in the middle: the next one starts after it.
        assert_eq!(pick(&r, &[(100000, 1000), (165536, 65536)], 65536), Some(231072));
        assert_eq!(pick(&r, &[(100000, 65536), (165536, 65536), (231072, 65536)], 65536), None);
        // Several ranges: the second is used when the first is full.
        let two = [(100000, 65536), (900000, 65536)];
        assert_eq!(pick(&two, &[(100000, 65536)], 65536), Some(900000));
        // A block taken by another engine configuration that straddles ours.
        assert_eq!(pick(&r, &[(150000, 10)], 65536), Some(150010));
    }
}
