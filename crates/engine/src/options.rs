//! Docker's option strings into a container's settings: `-v`, `--mount`, `--security-opt`,
//! `--ulimit`, `--sysctl`, `--log-opt`, label and env files. The command line reads them from
//! flags; an API server gets the same strings in a create request's `HostConfig`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::containers::{Bind, ContainerConfig};

/// `--security-opt` values: `no-new-privileges[=true|false]`, `seccomp=unconfined|FILE`,
/// `apparmor=PROFILE|unconfined`, `label=user:|role:|type:|level:|disable`. The capabilities
/// must be set first: a seccomp profile's rules may depend on them.
pub fn apply_security_opts(c: &mut ContainerConfig, opts: &[String]) -> Result<()> {
    let mut label: BTreeMap<&str, String> = BTreeMap::new();
    for so in opts {
        match so.split_once(['=', ':']) {
            Some(("no-new-privileges", v)) => c.no_new_privileges = v != "false",
            None if so == "no-new-privileges" => c.no_new_privileges = true,
            Some(("seccomp", "unconfined")) => c.seccomp = "unconfined".into(),
            Some(("seccomp", file)) => {
                let bytes = std::fs::read(file).with_context(|| format!("opening seccomp profile ({file})"))?;
                let caps = crate::spec::capabilities(&c.cap_add, &c.cap_drop, c.privileged)?;
                c.seccomp_profile = Some(
                    crate::seccomp::from_file(&bytes, &caps)
                        .with_context(|| format!("loading seccomp profile ({file})"))?,
                );
                c.seccomp = file.into();
            }
            Some(("apparmor", "unconfined")) | Some(("label", "disable")) => {}
            Some(("apparmor", profile)) => c.apparmor_profile = Some(profile.into()),
            Some(("label", part)) => {
                let (key, value) = part.split_once(':').with_context(|| format!("invalid --security-opt {so:?}"))?;
                if !matches!(key, "user" | "role" | "type" | "level") {
                    bail!("invalid --security-opt {so:?}: label takes user:, role:, type:, level: or disable");
                }
                label.insert(key, value.to_string());
            }
            _ => bail!(
                "--security-opt {so:?} is not supported (berth takes no-new-privileges, seccomp=, apparmor=, label=)"
            ),
        }
    }
    if !label.is_empty() {
        // Docker's container process label, with the parts given replaced.
        let part = |k: &str, d: &str| label.get(k).cloned().unwrap_or_else(|| d.to_string());
        c.selinux_label = Some(format!(
            "{}:{}:{}:{}",
            part("user", "system_u"),
            part("role", "system_r"),
            part("type", "container_t"),
            part("level", "s0")
        ));
    }
    Ok(())
}

/// `--ulimit NAME=SOFT[:HARD]` (-1 for unlimited) as (name, soft, hard); the names and
/// soft <= hard are checked at create.
pub fn parse_ulimit(u: &str) -> Result<(String, u64, u64)> {
    let (name, vals) =
        u.split_once('=').with_context(|| format!("invalid --ulimit {u:?}: expected name=soft[:hard]"))?;
    let (s, h) = vals.split_once(':').unwrap_or((vals, vals));
    let n = |x: &str| -> Result<u64> {
        if x == "-1" { Ok(u64::MAX) } else { x.parse().with_context(|| format!("invalid --ulimit {u:?}")) }
    };
    Ok((name.into(), n(s)?, n(h)?))
}

/// `--sysctl KEY=VALUE`; which keys a container may set is checked at create.
pub fn parse_sysctl(s: &str) -> Result<(String, String)> {
    let (k, v) = s.split_once('=').with_context(|| format!("invalid --sysctl {s:?}: expected key=value"))?;
    Ok((k.into(), v.into()))
}

/// `--log-opt max-size=SIZE|max-file=N`.
pub fn apply_log_opts(c: &mut ContainerConfig, opts: &[String]) -> Result<()> {
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                c.log_max_size = Some(
                    berth_runtime::units::parse_size(v).with_context(|| format!("invalid --log-opt {o:?}"))? as u64,
                )
            }
            Some(("max-file", v)) => c.log_max_file = v.parse().with_context(|| format!("invalid --log-opt {o:?}"))?,
            _ => bail!("unknown log opt {o:?}: berth's json-file driver takes max-size and max-file"),
        }
    }
    Ok(())
}

/// The lines of an `--env-file` or `--label-file`: blank lines and `#` comments skipped.
pub fn file_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// A `-l KEY=VALUE` label (a bare KEY has an empty value).
pub fn parse_label(l: &str) -> (String, String) {
    let (k, v) = l.split_once('=').unwrap_or((l, ""));
    (k.into(), v.into())
}

/// Refuses two mounts (binds, volumes, tmpfs) on one container path, in Docker's words.
pub fn check_mount_points(c: &ContainerConfig) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for d in c.binds.iter().map(|b| b.destination.as_str()).chain(c.tmpfs.iter().map(|(d, _)| d.as_str())) {
        if !seen.insert(d.trim_end_matches('/')) {
            bail!("Duplicate mount point: {d}");
        }
    }
    Ok(())
}

/// `-v /host:/ctr[:opts]` (a bind), `-v NAME:/ctr[:opts]` (a named volume, made when missing)
/// or `-v /ctr` (an anonymous volume).
pub fn parse_volume(v: &str) -> Result<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("invalid volume specification: '{v}'"),
    };
    if !dst.starts_with('/') {
        bail!("invalid volume specification: '{v}': the container path must be absolute");
    }
    let mut b = Bind { destination: dst.into(), ..Default::default() };
    if src.starts_with('/') {
        b.source = src.into();
    } else if src.is_empty() {
        b.volume = Some(String::new());
    } else if crate::volumes::valid_name(src) {
        b.volume = Some(src.into());
    } else {
        bail!(
            "invalid volume specification: '{v}': {src:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
        );
    }
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => b.readonly = true,
            "rw" | "z" | "Z" => {}
            "nocopy" => b.nocopy = true,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => b.propagation = Some(o.into()),
            other => bail!("invalid volume specification: '{v}': unknown option {other:?}"),
        }
    }
    Ok(b)
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…,…`: a bind or volume, or a tmpfs
/// (destination, options).
pub enum Mount {
    Bind(Bind),
    Tmpfs(String, String),
}

pub fn parse_mount(spec: &str) -> Result<Mount> {
    let bad = |why: String| anyhow::anyhow!("invalid argument {spec:?} for \"--mount\" flag: {why}");
    let mut kind = "volume".to_string();
    let (mut src, mut dst) = (String::new(), String::new());
    let mut b = Bind::default();
    let (mut size, mut mode) = (None, None);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        let flag = |v: &str| -> Result<bool> {
            match v {
                "" | "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(format!("invalid value {v:?} for {k}"))),
            }
        };
        match k {
            "type" => kind = v.to_string(),
            "source" | "src" => src = v.to_string(),
            "target" | "destination" | "dst" => dst = v.to_string(),
            "readonly" | "ro" => b.readonly = flag(v)?,
            "bind-propagation" => b.propagation = Some(v.to_string()),
            "volume-nocopy" => b.nocopy = flag(v)?,
            "volume-opt" => {
                let (ok, ov) = v.split_once('=').ok_or_else(|| bad(format!("invalid volume-opt {v:?}")))?;
                b.volume_options.insert(ok.into(), ov.into());
            }
            "volume-driver" if v == "local" => {}
            "tmpfs-size" => size = Some(v.to_string()),
            "tmpfs-mode" => mode = Some(v.to_string()),
            "consistency" | "bind-nonrecursive" => {}
            other => return Err(bad(format!("unexpected key '{other}'"))),
        }
    }
    if !dst.starts_with('/') {
        return Err(bad("target is required and must be an absolute path".into()));
    }
    match kind.as_str() {
        "bind" => {
            if !src.starts_with('/') {
                return Err(bad("a bind mount needs an absolute source path".into()));
            }
            if !std::path::Path::new(&src).exists() {
                return Err(bad(format!("bind source path does not exist: {src}")));
            }
            b.source = src.into();
            b.destination = dst;
            Ok(Mount::Bind(b))
        }
        "volume" => {
            if !src.is_empty() && !crate::volumes::valid_name(&src) {
                return Err(bad(format!("invalid volume name {src:?}")));
            }
            b.volume = Some(src);
            b.destination = dst;
            Ok(Mount::Bind(b))
        }
        "tmpfs" => {
            if !src.is_empty() {
                return Err(bad("a tmpfs mount takes no source".into()));
            }
            let mut o = Vec::new();
            if let Some(s) = size {
                o.push(format!("size={s}"));
            }
            if let Some(m) = mode {
                o.push(format!("mode={m}"));
            }
            Ok(Mount::Tmpfs(dst, o.join(",")))
        }
        other => Err(bad(format!("mount type {other:?} is not supported (bind, volume, tmpfs)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_strings() {
        assert_eq!(parse_ulimit("nofile=100:200").unwrap(), ("nofile".into(), 100, 200));
        assert_eq!(parse_ulimit("core=-1").unwrap(), ("core".into(), u64::MAX, u64::MAX));
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_sysctl("net.ipv4.ip_forward").is_err());
        let mut c = ContainerConfig::default();
        apply_security_opts(&mut c, &["no-new-privileges".into(), "label=type:spc_t".into()]).unwrap();
        assert!(c.no_new_privileges);
        assert_eq!(c.selinux_label.as_deref(), Some("system_u:system_r:spc_t:s0"));
        assert!(apply_security_opts(&mut c, &["label=colour:red".into()]).is_err());
        assert!(apply_security_opts(&mut c, &["systempaths=unconfined".into()]).is_err());
        apply_log_opts(&mut c, &["max-size=1k".into(), "max-file=3".into()]).unwrap();
        assert_eq!((c.log_max_size, c.log_max_file), (Some(1024), 3));
        assert!(apply_log_opts(&mut c, &["compress=true".into()]).is_err());
        c.binds.push(parse_volume("/tmp:/data:ro").unwrap());
        assert!(c.binds[0].readonly);
        c.tmpfs.push(("/data/".into(), String::new()));
        assert!(check_mount_points(&c).unwrap_err().to_string().contains("Duplicate mount point"));
        assert!(parse_volume("./rel:/x").is_err());
        assert_eq!(parse_volume("data:/x").unwrap().volume.as_deref(), Some("data"));
        assert!(parse_volume("/x:data").is_err());
        assert!(
            matches!(parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap(), Mount::Tmpfs(d, o) if d == "/t" && o == "size=1m")
        );
        assert!(parse_mount("type=bind,source=/nonexistent-berth,target=/x").is_err());
        assert_eq!(file_lines(" # c\n\nA=1\n").collect::<Vec<_>>(), ["A=1"]);
        assert_eq!(parse_label("k"), ("k".into(), String::new()));
    }
}
