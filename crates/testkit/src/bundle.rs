//! OCI runtime bundles: the busybox rootfs plus a config.json built up test by test.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// A config.json as JSON, starting from runc's default spec (without a terminal).
#[derive(Debug, Clone)]
pub struct Config(pub Value);

impl Default for Config {
    fn default() -> Self {
        Config(json!({
            "ociVersion": "1.2.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "berth-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
                "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        }))
    }
}

impl Config {
    pub fn args(mut self, args: &[&str]) -> Self {
        self.0["process"]["args"] = json!(args);
        self
    }

    /// `sh -c SCRIPT`.
    pub fn sh(self, script: &str) -> Self {
        self.args(&["sh", "-c", script])
    }

    /// Sets a value at a JSON pointer such as `/linux/resources/memory`, creating objects.
    pub fn set(mut self, pointer: &str, v: Value) -> Self {
        let mut cur = &mut self.0;
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur[*p] = v;
                break;
            }
            if cur.get(*p).is_none() {
                cur[*p] = json!({});
            }
            cur = cur.get_mut(*p).unwrap();
        }
        self
    }

    pub fn push(mut self, pointer: &str, v: Value) -> Self {
        match self.0.pointer_mut(pointer) {
            Some(Value::Array(a)) => a.push(v),
            _ => return self.set(pointer, json!([v])),
        }
        self
    }

    pub fn write(&self, bundle: &Path) {
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&self.0).unwrap()).unwrap();
    }
}

/// A bundle in a temp dir: `rootfs/` with busybox and a config.json.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    pub fn busybox(config: &Config) -> Bundle {
        let dir = tempfile::Builder::new().prefix("berth-testkit-bundle-").tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        crate::image::write_rootfs(&rootfs);
        config.write(dir.path());
        Bundle { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn set_config(&self, config: &Config) {
        config.write(self.path());
    }
}
