//! Loading and checking config.json.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;

/// Reads `bundle/config.json`, naming the file, line and column of a parse error.
pub fn load(bundle: &Path) -> Result<Spec> {
    Ok(load_bytes(bundle)?.0)
}

/// Parses config.json (or, with `T` = Process, an `exec --process` file) as this runtime
/// reads it (see [`crate::procattr::normalize_spec_json`]).
pub fn parse<T: serde::de::DeserializeOwned>(data: &[u8]) -> serde_json::Result<T> {
    match crate::procattr::normalize_spec_json(data) {
        Some(fixed) => serde_json::from_slice(&fixed),
        None => serde_json::from_slice(data),
    }
}

/// [`load`], and the file's bytes.
pub fn load_bytes(bundle: &Path) -> Result<(Spec, Vec<u8>)> {
    let p = bundle.join("config.json");
    let mut data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    if let Some(fixed) = crate::procattr::normalize_spec_json(&data) {
        data = fixed;
    }
    let spec: Spec = serde_json::from_slice(&data).map_err(|e| {
        // serde names only a line and column; name the seccomp field when that is the cause.
        let why = serde_json::from_slice(&data).ok().and_then(|v| crate::seccomp::explain_json(&v));
        anyhow::anyhow!("{}: {}", p.display(), why.unwrap_or_else(|| e.to_string()))
    })?;
    validate(&spec)?;
    Ok((spec, data))
}

pub fn validate(spec: &Spec) -> Result<()> {
    let v = spec.version();
    let major = v.split('.').next().unwrap_or("");
    if major != "1" {
        bail!("ociVersion {v:?} is not supported (berth-runtime implements 1.x)");
    }
    if spec.root().is_none() {
        bail!("root is required");
    }
    if let Some(p) = spec.process() {
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            bail!("process.args must name the program to run");
        }
        if !p.cwd().is_absolute() {
            bail!("process.cwd {:?} must be an absolute path", p.cwd());
        }
    }
    if let Some(l) = spec.linux() {
        if let Some(s) = l.seccomp() {
            crate::seccomp::compile(s)?;
        }
        if l.intel_rdt().is_some() {
            bail!("linux.intelRdt: Intel RDT (resctrl) is not available on this host");
        }
        if l.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            bail!("linux.netDevices is not supported by berth-runtime yet");
        }
    }
    if let Some(p) = spec.process() {
        crate::procattr::Attrs::new(spec.linux().as_ref(), p, false)?;
    }
    Ok(())
}

/// root.path, relative to the bundle when relative; it must exist and be a directory.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let r = spec.root().as_ref().context("root is required")?;
    let p = if r.path().is_absolute() { r.path().clone() } else { bundle.join(r.path()) };
    let p = std::fs::canonicalize(&p).with_context(|| format!("root.path {} does not exist", p.display()))?;
    if !p.is_dir() {
        bail!("root.path {} is not a directory", p.display());
    }
    Ok(p)
}
