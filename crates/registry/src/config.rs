//! Registry settings: which registries may be reached over plain HTTP, their mirrors, where
//! short names are searched, and where per-registry CA certificates live.
//!
//! One optional TOML file, `/etc/berth/registries.toml` (or the file `$BERTH_REGISTRIES_CONF`
//! names), in a subset of the `containers-registries.conf(5)` v2 format:
//!
//! ```toml
//! # Registries tried in order for a short name like `busybox` (default: docker.io only).
//! unqualified-search-registries = ["docker.io"]
//! # Docker's daemon.json shorthand: these may use plain HTTP / unverified TLS.
//! insecure-registries = ["registry.lan:5000"]
//! # How many layers download (pull) and upload (push) at once.
//! max-concurrent-downloads = 3
//! max-concurrent-uploads = 5
//! # Directories holding <host[:port]>/*.crt CA files and NAME.cert + NAME.key client
//! # certificates (default below).
//! certs-dirs = ["/etc/berth/certs.d", "/etc/docker/certs.d"]
//!
//! [[registry]]
//! location = "registry.lan:5000"
//! insecure = true        # HTTPS without verification, then plain HTTP
//! blocked = false        # true: refuse to pull from or push to it
//! [[registry.mirror]]    # pulls try mirrors first, in order, then the registry itself
//! location = "mirror.lan:5001/dockerhub"
//! insecure = true
//! ```
//!
//! Loopback registries (`localhost`, `127.0.0.0/8`, `::1`) need no entry: like Docker, berth
//! lets them use plain HTTP. It asks over plain HTTP first (a local registry usually is one,
//! and a port speaks either HTTP or TLS, never both); when what answers is not a registry
//! speaking HTTP (a TLS server's 400, a closed connection), it uses HTTPS, verified against
//! the system roots and the certs.d CAs: a certificate that fails verification is an error,
//! never a reason to skip verification. Registries marked insecure get HTTPS without
//! verification first, then plain HTTP, as in Docker.
//!
//! Environment: `BERTH_REGISTRIES_CONF` (the file), `BERTH_CERTS_D` (colon-separated certs.d
//! directories, replacing `certs-dirs`), `BERTH_MAX_CONCURRENT_DOWNLOADS`,
//! `BERTH_MAX_CONCURRENT_UPLOADS`, `BERTH_PUSH_CHUNK_SIZE` (bytes; larger blobs are pushed in
//! PATCH chunks of this size, default 32 MiB).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/berth/registries.toml";
pub const DEFAULT_CERTS_DIRS: &[&str] = &["/etc/berth/certs.d", "/etc/docker/certs.d", "/etc/containers/certs.d"];
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
    #[serde(default)]
    pub max_concurrent_downloads: Option<usize>,
    #[serde(default)]
    pub max_concurrent_uploads: Option<usize>,
    #[serde(default)]
    pub certs_dirs: Option<Vec<PathBuf>>,
    /// Bytes per PATCH when pushing large blobs.
    #[serde(default)]
    pub push_chunk_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

impl Config {
    /// The file named by `$BERTH_REGISTRIES_CONF`, else `/etc/berth/registries.toml` (missing is
    /// fine: the defaults), with the environment's overrides applied.
    pub fn load() -> Result<Config> {
        let path = std::env::var_os("BERTH_REGISTRIES_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let mut c = match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(d) = std::env::var_os("BERTH_CERTS_D") {
            c.certs_dirs = Some(std::env::split_paths(&d).filter(|p| !p.as_os_str().is_empty()).collect());
        }
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0);
        if let Some(n) = num("BERTH_MAX_CONCURRENT_DOWNLOADS") {
            c.max_concurrent_downloads = Some(n as usize);
        }
        if let Some(n) = num("BERTH_MAX_CONCURRENT_UPLOADS") {
            c.max_concurrent_uploads = Some(n as usize);
        }
        if let Some(n) = num("BERTH_PUSH_CHUNK_SIZE") {
            c.push_chunk_size = Some(n);
        }
        Ok(c)
    }

    pub fn parse(text: &str) -> Result<Config> {
        toml::from_str(text).context("invalid registries configuration")
    }

    pub fn downloads(&self) -> usize {
        self.max_concurrent_downloads.unwrap_or(3).clamp(1, 64)
    }

    pub fn uploads(&self) -> usize {
        self.max_concurrent_uploads.unwrap_or(5).clamp(1, 64)
    }

    pub fn chunk_size(&self) -> u64 {
        self.push_chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE).max(1024)
    }

    pub fn certs_dirs(&self) -> Vec<PathBuf> {
        match &self.certs_dirs {
            Some(d) => d.clone(),
            None => DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect(),
        }
    }

    /// Registries a short name is looked up in, in order.
    pub fn search_registries(&self) -> Vec<String> {
        if self.unqualified_search_registries.is_empty() {
            vec![berth_image::reference::DEFAULT_REGISTRY.to_string()]
        } else {
            self.unqualified_search_registries.clone()
        }
    }

    fn entry(&self, registry: &str) -> Option<&RegistryEntry> {
        self.registries.iter().find(|r| same_location(&r.location, registry))
    }

    /// Whether `registry` may use plain HTTP and unverified TLS (configured so; loopback is
    /// handled separately).
    pub fn insecure(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|r| same_location(r, registry))
            || self.entry(registry).is_some_and(|e| e.insecure)
            || self
                .registries
                .iter()
                .flat_map(|r| &r.mirrors)
                .any(|m| m.insecure && same_location(&m.location, registry))
    }

    pub fn blocked(&self, registry: &str) -> bool {
        self.entry(registry).is_some_and(|e| e.blocked)
    }

    /// Mirrors for pulls from `registry`, as (registry host, repository prefix).
    pub fn mirrors(&self, registry: &str) -> Vec<(String, String)> {
        self.entry(registry)
            .map(|e| {
                e.mirrors
                    .iter()
                    .map(|m| {
                        let loc = strip_scheme(&m.location);
                        match loc.split_once('/') {
                            Some((h, p)) => (h.to_string(), p.trim_matches('/').to_string()),
                            None => (loc.to_string(), String::new()),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn strip_scheme(s: &str) -> &str {
    s.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/')
}

/// `registry.lan:5000` matches `registry.lan:5000`; an entry without a port matches any port.
fn same_location(entry: &str, registry: &str) -> bool {
    let e = strip_scheme(entry);
    e == registry || (!e.contains(':') && host_of(registry) == e)
}

/// The host part of `host[:port]` (brackets kept off IPv6 literals).
pub fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let h = host_of(registry);
    h == "localhost" || h.ends_with(".localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host berth talks HTTP to for a registry name: Docker Hub's API is not at docker.io.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

/// Client certificates for `registry` from the certs.d directories, as Docker pairs them:
/// each `NAME.cert` with its `NAME.key` (a certificate without its key is an error).
pub fn client_cert_files(dirs: &[PathBuf], registry: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for d in dirs {
        let dir: &Path = &d.join(registry);
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cert"))
            .collect();
        v.sort();
        for cert in v {
            let key = cert.with_extension("key");
            if !key.exists() {
                anyhow::bail!("{} has no key: {} is missing", cert.display(), key.display());
            }
            out.push((cert, key));
        }
    }
    Ok(out)
}

/// CA files (`*.crt`) for `registry` from the certs.d directories.
pub fn ca_files(dirs: &[PathBuf], registry: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in dirs {
        let dir: &Path = &d.join(registry);
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        let mut v: Vec<PathBuf> =
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "crt")).collect();
        v.sort();
        out.extend(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_file() {
        let c = Config::parse(
            r#"
unqualified-search-registries = ["quay.io", "docker.io"]
insecure-registries = ["plain.lan"]
max-concurrent-downloads = 6
[[registry]]
location = "registry.lan:5000"
insecure = true
[[registry.mirror]]
location = "https://mirror.lan:5001/hub/"
[[registry]]
location = "evil.example"
blocked = true
"#,
        )
        .unwrap();
        assert_eq!(c.search_registries(), ["quay.io", "docker.io"]);
        assert!(c.insecure("registry.lan:5000"));
        assert!(c.insecure("plain.lan:8080"));
        assert!(!c.insecure("registry.lan:5001"));
        assert!(c.blocked("evil.example"));
        assert_eq!(c.downloads(), 6);
        assert_eq!(c.mirrors("registry.lan:5000"), [("mirror.lan:5001".to_string(), "hub".to_string())]);
        assert!(Config::parse("max-concurrent-downloads = \"x\"").is_err());
        assert_eq!(Config::default().search_registries(), ["docker.io"]);
    }

    #[test]
    fn loopback_and_hosts() {
        for r in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.9.9.9", "[::1]:5000"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["10.0.0.1:5000", "quay.io", "[::2]:80", "localhost.example.com"] {
            assert!(!is_loopback(r), "{r}");
        }
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
    }
}
