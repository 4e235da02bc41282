//! Volumes: named and anonymous volumes of the `local` driver under `<root>/volumes/<name>/_data`
//! (Docker's layout), optionally a filesystem mounted there (`--opt type=… device=… o=…`) while a
//! container uses it; the image's content copied into an empty volume on first use; `rm -v`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{OptionalExtension, params};

use crate::containers::{ContainerConfig, ContainerRow};
use crate::{Engine, ExitError, db, names};
use berth_storage::Shift;
use berth_storage::rootfs::is_mountpoint;

#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
    pub created: i64,
}

const COLUMNS: &str = "name, driver, options, labels, anonymous, created";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Volume> {
    let options: String = r.get(2)?;
    let labels: String = r.get(3)?;
    Ok(Volume {
        name: r.get(0)?,
        driver: r.get(1)?,
        options: serde_json::from_str(&options).unwrap_or_default(),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        anonymous: r.get::<_, i64>(4)? != 0,
        created: r.get(5)?,
    })
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    n.len() >= 2
        && n.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn not_found(name: &str) -> anyhow::Error {
    ExitError { code: 1, msg: format!("no such volume: {name}") }.into()
}

impl Engine {
    fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// Where a volume's files live (its mountpoint in `inspect`).
    pub fn volume_data(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("_data")
    }

    /// `volume create`; an existing volume of that name is returned as it is (Docker's way).
    pub fn create_volume(
        &self,
        name: Option<&str>,
        driver: Option<&str>,
        options: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        self.make_volume(name, driver, options, labels, false)
    }

    fn make_volume(
        &self,
        name: Option<&str>,
        driver: Option<&str>,
        options: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume> {
        if let Some(d) = driver.filter(|d| *d != "local") {
            bail!("volume driver {d:?} is not supported: berth has the local driver");
        }
        for k in options.keys() {
            if !matches!(k.as_str(), "type" | "device" | "o") {
                bail!("invalid option {k:?} for the local volume driver: it takes type, device and o");
            }
        }
        if options.contains_key("device") != options.contains_key("type") {
            bail!("the local volume driver needs both type and device to mount a filesystem");
        }
        let name = match name {
            Some(n) if !valid_name(n) => {
                bail!("invalid volume name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least two characters")
            }
            Some(n) => n.to_string(),
            None => names::new_id(),
        };
        if let Ok(v) = self.volume(&name) {
            return Ok(v);
        }
        let data = self.volume_data(&name);
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let inserted = self.db.execute(
            &format!("INSERT OR IGNORE INTO volumes ({COLUMNS}) VALUES (?1, 'local', ?2, ?3, ?4, ?5)"),
            params![
                name,
                serde_json::to_string(&options)?,
                serde_json::to_string(&labels)?,
                anonymous as i64,
                db::now_nanos()
            ],
        );
        if let Err(e) = inserted {
            let _ = fs::remove_dir_all(self.volume_dir(&name));
            return Err(e.into());
        }
        crate::events::emit(&self.runroot, "volume", "create", &name, &[("driver", "local")]);
        self.volume(&name)
    }

    pub fn volume(&self, name: &str) -> Result<Volume> {
        self.db
            .query_row(&format!("SELECT {COLUMNS} FROM volumes WHERE name = ?1"), [name], row)
            .optional()?
            .ok_or_else(|| not_found(name))
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        let mut st = self.db.prepare(&format!("SELECT {COLUMNS} FROM volumes ORDER BY name"))?;
        Ok(st.query_map([], row)?.collect::<rusqlite::Result<_>>()?)
    }

    /// The containers (ids) that have the volume mounted in their config.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        let mut st = self.db.prepare("SELECT container FROM container_volumes WHERE volume = ?1 ORDER BY container")?;
        Ok(st.query_map([name], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?)
    }

    /// `volume rm`: refused while a container uses it (even a stopped one), as Docker does.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        let v = self.volume(name)?;
        let users = self.volume_users(&v.name)?;
        if !users.is_empty() {
            let ids: Vec<&str> = users.iter().map(|u| &u[..12.min(u.len())]).collect();
            return Err(ExitError {
                code: 1,
                msg: format!("remove {}: volume is in use - [{}]", v.name, ids.join(", ")),
            }
            .into());
        }
        let data = self.volume_data(&v.name);
        if is_mountpoint(&data) {
            nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting {}", data.display()))?;
        }
        self.db.execute("DELETE FROM volumes WHERE name = ?1", [&v.name])?;
        let dir = self.volume_dir(&v.name);
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        crate::events::emit(&self.runroot, "volume", "destroy", &v.name, &[("driver", "local")]);
        Ok(())
    }

    /// `volume prune`: the unused anonymous volumes (every unused one with `all`); their
    /// names and the bytes they held.
    pub fn prune_volumes(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut gone = Vec::new();
        let mut bytes = 0;
        for v in self.volumes()? {
            if (all || v.anonymous) && self.volume_users(&v.name)?.is_empty() {
                let size = crate::tree_size(&self.volume_data(&v.name));
                if self.remove_volume(&v.name).is_ok() {
                    bytes += size;
                    gone.push(v.name);
                }
            }
        }
        Ok((gone, bytes))
    }

    /// At create: named volumes made when missing, anonymous ones for `-v /path` and for the
    /// image's VOLUMEs that nothing else covers, `--volumes-from` copied. Returns the volumes
    /// it made (anonymous ones and named ones that were missing), for the caller to remove if
    /// the create fails.
    pub(crate) fn plan_volumes(&self, c: &mut ContainerConfig, image_volumes: &[String]) -> Result<Vec<String>> {
        let mut made = Vec::new();
        for from in std::mem::take(&mut c.volumes_from) {
            let (name, mode) = match from.rsplit_once(':') {
                Some((n, m @ ("ro" | "rw"))) => (n, Some(m)),
                _ => (from.as_str(), None),
            };
            let other = self.container(name)?;
            for b in &other.config.binds {
                if c.binds.iter().any(|x| x.destination == b.destination) {
                    continue;
                }
                let mut b = b.clone();
                if let Some(m) = mode {
                    b.readonly = m == "ro";
                }
                c.binds.push(b);
            }
        }
        for dest in image_volumes {
            let covered = c.binds.iter().any(|b| b.destination.trim_end_matches('/') == dest.trim_end_matches('/'))
                || c.tmpfs.iter().any(|(p, _)| p.trim_end_matches('/') == dest.trim_end_matches('/'));
            if !covered {
                c.binds.push(crate::containers::Bind {
                    destination: dest.clone(),
                    volume: Some(String::new()),
                    ..Default::default()
                });
            }
        }
        let result = (|| -> Result<()> {
            for b in c.binds.iter_mut() {
                let Some(name) = b.volume.clone() else { continue };
                let v = if name.is_empty() {
                    let v = self.make_volume(None, None, BTreeMap::new(), BTreeMap::new(), true)?;
                    made.push(v.name.clone());
                    v
                } else {
                    match self.volume(&name) {
                        Ok(v) => v,
                        Err(_) => {
                            let v =
                                self.make_volume(Some(&name), None, b.volume_options.clone(), BTreeMap::new(), false)?;
                            made.push(v.name.clone());
                            v
                        }
                    }
                };
                b.volume = Some(v.name.clone());
                b.source = self.volume_data(&v.name);
            }
            Ok(())
        })();
        if let Err(e) = result {
            for v in &made {
                let _ = self.remove_volume(v);
            }
            return Err(e);
        }
        Ok(made)
    }

    /// Records which volumes a new container uses (so that `volume rm` refuses them).
    pub(crate) fn record_volumes(&self, id: &str, c: &ContainerConfig) -> Result<()> {
        for b in &c.binds {
            if let Some(v) = &b.volume {
                self.db.execute(
                    "INSERT OR REPLACE INTO container_volumes (container, volume, destination) VALUES (?1, ?2, ?3)",
                    params![id, v, b.destination],
                )?;
            }
        }
        Ok(())
    }

    /// The monitor, with the container's root mounted at `merged`: mounts volumes that have a
    /// filesystem of their own, and fills an empty volume with the image's files at its path.
    pub(crate) fn volumes_up(&self, c: &ContainerRow, merged: &Path) -> Result<()> {
        for b in &c.config.binds {
            let Some(name) = &b.volume else { continue };
            let v = self.volume(name)?;
            let data = self.volume_data(&v.name);
            if let (Some(t), Some(dev)) = (v.options.get("type"), v.options.get("device"))
                && !is_mountpoint(&data)
            {
                mount_local(dev, &data, t, v.options.get("o").map(String::as_str).unwrap_or(""))
                    .with_context(|| format!("mounting {dev} ({t}) for volume {}", v.name))?;
            }
            if !b.nocopy && dir_is_empty(&data) {
                copy_up(merged, &b.destination, &data, c.config.userns.as_ref())
                    .with_context(|| format!("copying the image's {} into volume {}", b.destination, v.name))?;
            }
        }
        Ok(())
    }

    /// After a container's exit: unmounts volume filesystems no running container needs.
    pub(crate) fn volumes_down(&self, c: &ContainerRow) {
        for b in &c.config.binds {
            let Some(name) = &b.volume else { continue };
            let Ok(v) = self.volume(name) else { continue };
            if !v.options.contains_key("type") {
                continue;
            }
            let busy: i64 = self
                .db
                .query_row(
                    "SELECT COUNT(*) FROM container_volumes cv JOIN containers c ON c.id = cv.container
                     WHERE cv.volume = ?1 AND cv.container != ?2 AND c.state IN ('running', 'paused', 'restarting')",
                    params![v.name, c.id],
                    |r| r.get(0),
                )
                .unwrap_or(1);
            let data = self.volume_data(&v.name);
            if busy == 0 && is_mountpoint(&data) {
                let _ = nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    /// `rm -v` (and `--rm`): the container's anonymous volumes go with it.
    pub fn remove_anonymous_volumes(&self, c: &ContainerRow) {
        for b in &c.config.binds {
            if let Some(name) = &b.volume
                && let Ok(v) = self.volume(name)
                && v.anonymous
            {
                let _ = self.remove_volume(&v.name);
            }
        }
    }
}

/// A file's owner with `shift` taken off.
fn owner(m: &fs::Metadata, shift: Option<&Shift>) -> (u32, u32) {
    shift.map_or((m.uid(), m.gid()), |s| s.unshift(m.uid(), m.gid()))
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false)
}

/// Copies the image's directory at `dest` (resolved inside `root`, never outside it) into the
/// volume: files, directories and symlinks with their modes and owners. Nothing to copy when
/// the path does not exist or is not a directory.
/// The root at `root` may be a `--userns` container's, whose files the host sees shifted by
/// `shift`: the volume stores them with the image's own ids, as the container's layers do.
fn copy_up(root: &Path, dest: &str, volume: &Path, shift: Option<&Shift>) -> Result<()> {
    let root_fd = berth_runtime::safepath::open_root(root)?;
    let src = match berth_runtime::safepath::openat_in_root(
        std::os::fd::AsRawFd::as_raw_fd(&root_fd),
        &berth_runtime::safepath::relative(Path::new(dest)),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("resolving {dest} in the container's root")),
    };
    let from = berth_runtime::safepath::fd_path(&src);
    let meta = fs::metadata(&from)?;
    copy_tree(&from, volume, shift)?;
    // The volume's root takes the directory's owner and mode, as Docker does.
    let (uid, gid) = owner(&meta, shift);
    std::os::unix::fs::chown(volume, Some(uid), Some(gid))?;
    fs::set_permissions(volume, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(())
}

/// Walks `from` without following symlinks (only real directories are entered, and nothing
/// changes them meanwhile: the container has not started) and recreates it under `to`.
fn copy_tree(from: &Path, to: &Path, shift: Option<&Shift>) -> Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let m = fs::symlink_metadata(&src)?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&dst)?;
            copy_tree(&src, &dst, shift)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            let mut r = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&src)
                .with_context(|| format!("opening {}", src.display()))?;
            let mut w = fs::OpenOptions::new().write(true).create_new(true).open(&dst)?;
            std::io::copy(&mut r, &mut w)?;
        } else {
            // Devices, fifos and sockets are not copied (nor are they in a fresh volume).
            continue;
        }
        let (uid, gid) = owner(&m, shift);
        std::os::unix::fs::lchown(&dst, Some(uid), Some(gid))?;
        if !ft.is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// The local driver's mount, as Docker's: `o=` is mount(8)-style, its flag words (`bind`, `ro`,
/// `nosuid`, ...) become mount flags and the rest (`addr=`, `size=`, ...) the file system's data;
/// `type=none,o=bind,device=/path` binds a host directory.
fn mount_local(device: &str, target: &Path, fstype: &str, o: &str) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    let opts: Vec<String> = o.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
    let p = berth_runtime::mountopts::parse(&opts)?;
    let data = p.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some(device), target, Some(fstype), p.flags, data)?;
    // A bind ignores the other flags (ro, nosuid...) until it is remounted with them.
    let bind_flags = p.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if p.flags.contains(MsFlags::MS_BIND) && !bind_flags.is_empty() {
        mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | bind_flags, None::<&str>)?;
    }
    for prop in p.propagation {
        mount(None::<&str>, target, None::<&str>, prop, None::<&str>)?;
    }
    Ok(())
}
