//! Image references: `[registry/]name[:tag][@digest]`, with Docker's short-name rules
//! (`busybox` -> `docker.io/library/busybox:latest`).

use anyhow::{Result, bail};

use crate::Digest;

pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    /// Repository path without the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() || s.len() > 4096 {
            bail!("invalid reference format: {s:?}");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                || t.starts_with(['.', '-']))
        {
            bail!("invalid reference format: bad tag {t:?} in {s:?}");
        }
        let (registry, repo) = match name.split_once('/') {
            Some((first, r)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), r.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let repo = if registry == DEFAULT_REGISTRY && !repo.contains('/') { format!("library/{repo}") } else { repo };
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repo.is_empty()
            || !repo.chars().all(ok)
            || repo.starts_with(['.', '-', '/'])
            || repo.ends_with('/')
            || repo.contains("//")
        {
            bail!("invalid reference format: repository name {name:?} must be lowercase letters, digits and . _ - /");
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { registry, repository: repo, tag, digest })
    }

    /// `docker.io/library/busybox:latest`.
    pub fn full(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The repository as `docker images` shows it: `busybox`, `user/app`, `127.0.0.1:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_short_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        let r = Reference::parse("127.0.0.1:5000/app/web:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "app/web", Some("v1"))
        );
        let r = Reference::parse("localhost/demo").unwrap();
        assert_eq!(r.full(), "localhost/demo:latest");
        let r = Reference::parse("user/app:1.0").unwrap();
        assert_eq!(r.full(), "docker.io/user/app:1.0");
        assert!(Reference::parse("UPPER").is_err());
        assert!(Reference::parse("a:b:c").is_err());
        assert!(Reference::parse("x@sha256:123").is_err());
    }
}
