//! Leak guards. A test makes a [`Guard`]; everything the test creates carries the guard's tag
//! (container ids, state roots, bundles). When the guard drops, also after a panic, it removes
//! whatever still carries the tag (processes, cgroups, mounts, temp dirs) and fails the test,
//! naming what it found. [`scan`] is the suite-wide check run after all tests.

use std::path::{Path, PathBuf};

pub struct Guard {
    pub tag: String,
    pub dir: tempfile::TempDir,
}

impl Guard {
    pub fn new(prefix: &str) -> Guard {
        let tag = crate::unique(prefix);
        let dir = tempfile::Builder::new().prefix(&format!("berth-testkit-{tag}-")).tempdir().unwrap();
        Guard { tag, dir }
    }

    /// A container id that carries the tag.
    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// A state root for the runtime or engine, inside the guard's dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let found = clean(&[&self.tag, &dir]);
        if !found.is_empty() && !std::thread::panicking() {
            panic!("the test left these behind (now cleaned up):\n  {}", found.join("\n  "));
        }
    }
}

/// Removes and reports everything that carries one of `marks`.
pub fn clean(marks: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for pid in processes(marks) {
        found.push(format!("process {pid} ({})", cmdline(pid)));
        // SAFETY: kill(2).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for cg in cgroups(marks) {
        found.push(format!("cgroup {}", cg.display()));
        if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
            for p in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                // SAFETY: kill(2).
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        for _ in 0..200 {
            if std::fs::remove_dir(&cg).is_ok() || !cg.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    for m in mounts(marks).into_iter().rev() {
        found.push(format!("mount {m}"));
        let c = std::ffi::CString::new(m).unwrap();
        // SAFETY: umount2 with a valid path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    found
}

/// Everything berth-like on the machine, for the suite's final check. Does not touch anything.
pub fn scan() -> Vec<String> {
    let marks = ["berth"];
    let mut found: Vec<String> = mounts(&marks).into_iter().map(|m| format!("mount {m}")).collect();
    found.extend(cgroups(&marks).into_iter().map(|c| format!("cgroup {}", c.display())));
    found.extend(
        processes(&["berth-testkit", "/berth-runtime ", "berth-monitor"])
            .into_iter()
            .map(|p| format!("process {p} ({})", cmdline(p))),
    );
    if let Ok(out) = std::process::Command::new("ip").args(["-o", "link", "show", "type", "veth"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            found.push(format!("veth in the root network namespace: {l}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            found.push(format!("named network namespace {}", e.file_name().to_string_lossy()));
        }
    }
    if let Ok(out) = std::process::Command::new("nft").args(["list", "tables"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("berth")) {
            found.push(format!("nftables {l}"));
        }
    }
    found
}

fn mounts(marks: &[&str]) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| marks.iter().any(|m| mp.contains(m)))
        .map(|s| s.replace("\\040", " "))
        .collect()
}

fn cgroups(marks: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 0, marks, &mut out);
    // Deepest first so that parents can be removed after their children.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn walk(dir: &Path, depth: usize, marks: &[&str], out: &mut Vec<PathBuf>) {
    if depth > 5 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if marks.iter().any(|m| name.contains(m)) {
            out.push(p.clone());
        }
        walk(&p, depth + 1, marks, out);
    }
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect::<Vec<_>>().join(" ")
}

fn processes(marks: &[&str]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return v };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == me {
            continue;
        }
        let c = cmdline(pid) + " ";
        if marks.iter().any(|m| c.contains(m)) {
            v.push(pid);
        }
    }
    v
}
