//! `/etc/berth/berth.toml` (or the file `$BERTH_CONFIG` names): the engine's settings where no
//! flag or environment variable gives them. A missing file is the defaults; a file that does
//! not parse, or names a key berth does not know, is an error naming the file.
//!
//! ```toml
//! root = "/var/lib/berth"      # images, containers, the state database (--root, $BERTH_ROOT)
//! runroot = "/run/berth"       # runtime state, gone at reboot (--runroot, $BERTH_RUNROOT)
//! # Limits on one unpacked layer, against decompression bombs (pull, load, build's ADD).
//! max-layer-bytes = 68719476736   # 64 GiB of file content
//! max-layer-entries = 4000000     # tar entries
//! # How containers' roots are made: "overlay" (default), or "copy" on hosts where overlayfs
//! # cannot be used (each root a full copy of its image's layers; slower, bigger).
//! storage-driver = "overlay"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const CONFIG_FILE: &str = "/etc/berth/berth.toml";

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub root: Option<PathBuf>,
    pub runroot: Option<PathBuf>,
    #[serde(rename = "max-layer-bytes")]
    pub max_layer_bytes: Option<u64>,
    #[serde(rename = "max-layer-entries")]
    pub max_layer_entries: Option<u64>,
    #[serde(rename = "storage-driver")]
    pub storage_driver: Option<String>,
}

impl Settings {
    /// The settings file's values (`$BERTH_CONFIG`, else /etc/berth/berth.toml).
    pub fn load() -> Result<Settings> {
        let path = std::env::var_os("BERTH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(CONFIG_FILE));
        Settings::load_from(&path)
    }

    /// The unpack limits: the file's, else berth_storage's defaults.
    pub fn layer_limits() -> Result<berth_storage::Limits> {
        let s = Settings::load()?;
        let d = berth_storage::Limits::default();
        Ok(berth_storage::Limits {
            max_bytes: s.max_layer_bytes.unwrap_or(d.max_bytes),
            max_entries: s.max_layer_entries.unwrap_or(d.max_entries),
            ..d
        })
    }

    /// Whether new containers get the copy driver's roots (`storage-driver = "copy"`).
    pub fn copy_driver() -> Result<bool> {
        match Settings::load()?.storage_driver.as_deref() {
            None | Some("overlay") => Ok(false),
            Some("copy") => Ok(true),
            Some(other) => anyhow::bail!("storage-driver {other:?} in the settings file: overlay or copy"),
        }
    }

    pub fn load_from(path: &Path) -> Result<Settings> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("{}: not a berth settings file", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_missing_file_and_bad_input() {
        let dir = std::env::temp_dir().join(format!("berth-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("berth.toml");
        assert_eq!(Settings::load_from(&f).unwrap(), Settings::default());
        std::fs::write(&f, "root = \"/srv/berth\"\nrunroot = \"/run/b\"\n").unwrap();
        let s = Settings::load_from(&f).unwrap();
        assert_eq!(
            (s.root.as_deref(), s.runroot.as_deref()),
            (Some(Path::new("/srv/berth")), Some(Path::new("/run/b")))
        );
        std::fs::write(&f, "max-layer-bytes = 1024\nmax-layer-entries = 10\n").unwrap();
        let s = Settings::load_from(&f).unwrap();
        assert_eq!((s.max_layer_bytes, s.max_layer_entries), (Some(1024), Some(10)));
        std::fs::write(&f, "rot = \"/x\"\n").unwrap();
        let e = format!("{:#}", Settings::load_from(&f).unwrap_err());
        assert!(e.contains("berth.toml: not a berth settings file") && e.contains("unknown field `rot`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
