//! Container state under the runtime root: `<root>/<id>/state.json`, written atomically.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What we keep about a container; `status` is always recomputed from the live system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot, so a recycled pid is not taken for ours.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup_path: Option<PathBuf>,
    #[serde(default)]
    pub owner: String,
}

pub const STATE_FILE: &str = "state.json";
pub const EXEC_SOCK: &str = "exec.sock";

/// runc's rule for ids: letters, digits and `_+-.`; not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || id.len() > 1024
        || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
    {
        bail!("invalid container id {id:?}: use letters, digits and _ + - . only");
    }
    Ok(())
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

impl State {
    pub fn load(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let p = dir(root, id).join(STATE_FILE);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("container {id} does not exist"),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", p.display()))
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        let tmp = d.join(".state.json.tmp");
        fs::write(&tmp, serde_json::to_vec(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, d.join(STATE_FILE)).context("saving state.json")
    }

    /// The live status: the init process and the exec socket tell created from running.
    pub fn status(&self, root: &Path, frozen: impl FnOnce() -> bool) -> Status {
        if !pid_alive(self.pid, self.pid_start) {
            return Status::Stopped;
        }
        if dir(root, &self.id).join(EXEC_SOCK).exists() {
            return Status::Created;
        }
        if frozen() { Status::Paused } else { Status::Running }
    }

    /// The JSON the spec's `state` operation returns (plus runc's extra fields).
    pub fn to_oci_json(&self, status: Status) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status.to_string(),
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
        })
    }
}

/// Field 22 of /proc/PID/stat (start time), and whether the process is a zombie.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let zombie = f.first() == Some(&"Z") || f.first() == Some(&"X");
    Some((f.get(19)?.parse().ok()?, zombie))
}

pub fn pid_alive(pid: i32, start: u64) -> bool {
    pid > 0 && matches!(proc_start(pid), Some((s, false)) if s == start)
}

/// RFC 3339 UTC time with nanoseconds, as runc writes `created`.
pub fn now_rfc3339() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(t.as_secs() as i64, t.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("").is_err());
        assert!(validate_id("a/b").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        let (start, zombie) = proc_start(pid).unwrap();
        assert!(!zombie);
        assert!(pid_alive(pid, start));
        assert!(!pid_alive(pid, start + 1));
    }
}
