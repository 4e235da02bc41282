//! `ADD URL`: the file is downloaded on every build (its checksum is part of the cache key, as
//! with Docker), over HTTP or verified HTTPS (the system's CA bundle), redirects followed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_image::digest::Hasher;
use berth_image::{Algo, Digest};
use ureq::tls::{RootCerts, TlsConfig};

/// Larger downloads are refused.
const MAX_DOWNLOAD: u64 = 16 << 30;

pub(crate) struct Download {
    pub path: PathBuf,
    /// The name a file gets in a destination directory (the URL's last path segment).
    pub name: String,
    /// From `Last-Modified`.
    pub mtime: Option<i64>,
    pub digest: Digest,
}

pub(crate) fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

pub(crate) fn is_git(s: &str) -> bool {
    s.starts_with("git@")
        || s.starts_with("git://")
        || (is_url(s) && s.split(['?', '#']).next().is_some_and(|u| u.ends_with(".git")))
}

/// The file name a URL gives: its last path segment, without query or fragment.
pub(crate) fn url_name(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    path.rsplit('/').find(|s| !s.is_empty()).filter(|s| *s != "." && *s != "..").map(str::to_string)
}

/// Downloads `url` into a new file in `dir`.
pub(crate) fn fetch(url: &str, dir: &Path) -> Result<Download> {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(format!("berth/{}", env!("CARGO_PKG_VERSION")))
        .max_redirects(10)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(60)));
    if url.starts_with("https://") {
        let roots = berth_registry::client::system_roots();
        if roots.is_empty() {
            bail!(
                "no CA certificates to verify {url} with: install the system's bundle (ca-certificates) or set SSL_CERT_FILE"
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        cfg = cfg.tls_config(
            TlsConfig::builder()
                .unversioned_rustls_crypto_provider(provider)
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .build(),
        );
    }
    let agent = ureq::Agent::new_with_config(cfg.build());
    let resp = agent.get(url).call().map_err(|e| anyhow::anyhow!("cannot fetch {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("cannot fetch {url}: the server answered {status}");
    }
    let mtime = resp.headers().get("last-modified").and_then(|v| v.to_str().ok()).and_then(parse_http_date);
    let name = url_name(url).unwrap_or_else(|| "download".into());
    let path = dir.join(format!("download-{}", crate::names::new_id()));
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut body = resp.into_body();
    let mut r = body.as_reader().take(MAX_DOWNLOAD + 1);
    let mut h = Hasher::new(Algo::Sha256);
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).with_context(|| format!("downloading {url}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_DOWNLOAD {
            bail!("{url} is larger than {MAX_DOWNLOAD} bytes");
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
    }
    Ok(Download { path, name, mtime, digest: h.finish() })
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) as unix seconds.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else { return None };
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = months.iter().position(|x| x == mon)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else { return None };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(url_name("http://h/a/b.tar.gz?x=1").as_deref(), Some("b.tar.gz"));
        assert_eq!(url_name("http://h/dir/").as_deref(), Some("dir"));
        assert_eq!(url_name("http://h").as_deref(), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("garbage"), None);
        assert!(is_git("https://github.com/x/y.git"));
        assert!(!is_git("https://example.com/a.tar"));
    }
}
