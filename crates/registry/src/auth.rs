//! Credentials and challenges.
//!
//! The auth file is Docker's: `{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`,
//! at `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//! Docker Hub's key is `https://index.docker.io/v1/`, as the docker CLI writes it. Other keys
//! of the file are kept untouched when berth writes it.
//!
//! Credential helpers, as Docker runs them: `credHelpers: {"HOST": "NAME"}` names the helper
//! for one registry, `credsStore: "NAME"` the one for all others; berth then runs
//! `docker-credential-NAME get|store|erase` with the server on standard input (JSON for
//! `store`) and reads `{"ServerURL", "Username", "Secret"}` back. The file itself then keeps
//! only an empty entry for the registry, as the docker CLI writes it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP Basic.
    pub fn basic(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.username, self.password)))
    }
}

const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The key a registry's entry is written under.
fn key_for(registry: &str) -> String {
    if registry == "docker.io" { DOCKER_HUB_KEY.to_string() } else { registry.to_string() }
}

/// A key of the file reduced to the registry name it stands for (`https://host:5000/v2/` ->
/// `host:5000`, Docker Hub's many spellings -> `docker.io`).
fn normalize_key(k: &str) -> String {
    let k = k.trim_start_matches("https://").trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        h => h.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct AuthFile {
    pub path: PathBuf,
}

impl AuthFile {
    /// `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            return PathBuf::from(d).join("config.json");
        }
        home().join(".docker").join("config.json")
    }

    pub fn new(path: PathBuf) -> AuthFile {
        AuthFile { path }
    }

    fn read(&self) -> Result<Value> {
        match std::fs::read(&self.path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
            Ok(b) => {
                let v: Value = serde_json::from_slice(&b)
                    .with_context(|| format!("the auth file {} is not valid JSON", self.path.display()))?;
                if !v.is_object() {
                    bail!("the auth file {} is not a JSON object", self.path.display());
                }
                Ok(v)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
            Err(e) => Err(e).with_context(|| format!("reading the auth file {}", self.path.display())),
        }
    }

    /// The credential helper for `registry`: its `credHelpers` entry, else `credsStore`.
    fn helper(v: &Value, registry: &str) -> Option<String> {
        let want = normalize_key(registry);
        v.get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|m| m.iter().find(|(k, _)| normalize_key(k) == want).map(|(_, h)| h))
            .or_else(|| v.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// Where the credentials for `registry` come from, for messages.
    pub fn source(&self, registry: &str) -> String {
        match self.read().ok().and_then(|v| Self::helper(&v, registry)) {
            Some(h) => format!("docker-credential-{h} (named in {})", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// The credentials stored for `registry` (a name as in image references).
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let v = self.read()?;
        if let Some(h) = Self::helper(&v, registry) {
            return helper_get(&h, registry);
        }
        let Some(auths) = v.get("auths").and_then(Value::as_object) else { return Ok(None) };
        let want = normalize_key(registry);
        // An exact key wins over a normalized match.
        let entry = auths
            .get(&key_for(registry))
            .or_else(|| auths.iter().find(|(k, _)| normalize_key(k) == want).map(|(_, e)| e));
        let Some(e) = entry else { return Ok(None) };
        if let Some(a) = e.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            let raw = STANDARD.decode(a.trim()).ok().and_then(|b| String::from_utf8(b).ok()).with_context(|| {
                format!("the auth file {}: the entry for {registry} is not base64", self.path.display())
            })?;
            let Some((u, p)) = raw.split_once(':') else {
                bail!("the auth file {}: the entry for {registry} is not user:password", self.path.display())
            };
            return Ok(Some(Credentials { username: u.into(), password: p.into() }));
        }
        match (e.get("username").and_then(Value::as_str), e.get("password").and_then(Value::as_str)) {
            (Some(u), Some(p)) => Ok(Some(Credentials { username: u.into(), password: p.into() })),
            _ => Ok(None),
        }
    }

    /// Stores credentials for `registry` (0600 file, 0700 directory, written atomically), or
    /// hands them to its credential helper.
    pub fn set(&self, registry: &str, c: &Credentials) -> Result<()> {
        let mut v = self.read()?;
        let helper = Self::helper(&v, registry);
        if let Some(h) = &helper {
            let input = json!({"ServerURL": key_for(registry), "Username": c.username, "Secret": c.password});
            run_helper(h, "store", input.to_string().as_bytes())
                .and_then(|(ok, out)| if ok { Ok(()) } else { bail!("{}", out.trim()) })
                .with_context(|| format!("storing the credentials for {registry} with docker-credential-{h}"))?;
        }
        let auths = v.as_object_mut().expect("checked by read").entry("auths").or_insert_with(|| json!({}));
        if !auths.is_object() {
            *auths = json!({});
        }
        let map = auths.as_object_mut().expect("just made an object");
        // Drop other spellings of the same registry so the new entry is the one found.
        let want = normalize_key(registry);
        map.retain(|k, _| normalize_key(k) != want);
        let entry = match helper {
            Some(_) => json!({}),
            None => json!({"auth": STANDARD.encode(format!("{}:{}", c.username, c.password))}),
        };
        map.insert(key_for(registry), entry);
        self.write(&v)
    }

    /// Removes the entry for `registry` (and what its credential helper holds); false when
    /// there was none.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let mut v = self.read()?;
        let mut erased = false;
        if let Some(h) = Self::helper(&v, registry) {
            let (ok, out) = run_helper(&h, "erase", key_for(registry).as_bytes())
                .with_context(|| format!("erasing the credentials for {registry} with docker-credential-{h}"))?;
            if !ok && !not_found(&out) {
                bail!("erasing the credentials for {registry} with docker-credential-{h}: {}", out.trim());
            }
            erased = ok;
        }
        let want = normalize_key(registry);
        let Some(map) = v.get_mut("auths").and_then(Value::as_object_mut) else { return Ok(erased) };
        let before = map.len();
        map.retain(|k, _| normalize_key(k) != want);
        if map.len() == before {
            return Ok(erased);
        }
        self.write(&v)?;
        Ok(true)
    }

    fn write(&self, v: &Value) -> Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            self.path.file_name().and_then(|n| n.to_str()).unwrap_or("auth"),
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut data = serde_json::to_vec_pretty(v)?;
        data.push(b'\n');
        let r = f.write_all(&data).and_then(|_| f.sync_all());
        if let Err(e) = r.and_then(|_| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing the auth file {}", self.path.display()));
        }
        Ok(())
    }
}

/// What helpers print when they hold nothing for a server.
fn not_found(out: &str) -> bool {
    out.to_ascii_lowercase().contains("credentials not found")
}

/// `docker-credential-NAME get` for `registry`.
fn helper_get(name: &str, registry: &str) -> Result<Option<Credentials>> {
    let what = || format!("getting the credentials for {registry} from docker-credential-{name}");
    let (ok, out) = run_helper(name, "get", key_for(registry).as_bytes()).with_context(what)?;
    if !ok {
        if not_found(&out) {
            return Ok(None);
        }
        bail!("{}: {}", what(), out.trim());
    }
    let v: Value = serde_json::from_str(&out).with_context(|| format!("{}: the answer is not JSON", what()))?;
    let user = v["Username"].as_str().unwrap_or("");
    let secret = v["Secret"].as_str().unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    if user == "<token>" {
        bail!("{}: it holds an identity token, which berth cannot use yet (log in with a password)", what());
    }
    Ok(Some(Credentials { username: user.to_string(), password: secret.to_string() }))
}

/// How long a credential helper may take (it may ask a keyring that prompts).
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `docker-credential-NAME ACTION` (found on PATH) with `input` on its standard input.
/// Returns whether it succeeded and what it printed (stdout, else stderr).
fn run_helper(name: &str, action: &str, input: &[u8]) -> Result<(bool, String)> {
    // The name comes from a file: it names a program on PATH, never a path.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) || name.starts_with('.')
    {
        bail!("invalid credential helper name {name:?}");
    }
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg(action)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (is it installed and on PATH?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that does not read its input is its own business; its answer tells.
        let _ = stdin.write_all(input);
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(r) => r.with_context(|| format!("running {program}"))?,
        Err(_) => {
            // SAFETY: kill(2) of our own child, which has not been reaped (its waiter is stuck).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            bail!("{program} {action} did not answer within {} s", HELPER_TIMEOUT.as_secs());
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = if stdout.trim().is_empty() { String::from_utf8_lossy(&out.stderr).into_owned() } else { stdout };
    Ok((out.status.success(), text))
}

fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_dir.is_null() {
            let s = std::ffi::CStr::from_ptr((*pw).pw_dir);
            return PathBuf::from(std::ffi::OsStr::from_encoded_bytes_unchecked(s.to_bytes()));
        }
    }
    PathBuf::from("/root")
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String>, error: Option<String> },
}

/// Parses the first Basic or Bearer challenge of a `WWW-Authenticate` value.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((h, ""));
    let params = parse_params(rest);
    let get = |k: &str| params.get(k).cloned();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        }),
        _ => None,
    }
}

/// `k="v", k2=token` -> map (keys lowercased, quoted values unescaped).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = s[i..].chars().next().unwrap_or('\0');
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
                error: Some("insufficient_scope".into()),
            })
        );
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(r#"bearer realm="a\"b", service=svc"#),
            Some(Challenge::Bearer { realm: "a\"b".into(), service: Some("svc".into()), scope: None, error: None })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auth_file_round_trip_keeps_other_keys() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("sub/config.json");
        let f = AuthFile::new(path.clone());
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), None);
        let c = Credentials { username: "u".into(), password: "p:w".into() };
        f.set("127.0.0.1:5000", &c).unwrap();
        f.set("docker.io", &Credentials { username: "hub".into(), password: "x".into() }).unwrap();
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), Some(c.clone()));
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["auths"]["127.0.0.1:5000"]["auth"], "dTpwOnc=");
        assert!(v["auths"][DOCKER_HUB_KEY].is_object());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Keys written by others, other settings kept.
        std::fs::write(
            &path,
            r#"{"auths":{"https://quay.io/v2/":{"auth":"YTpi"}},"detachKeys":"ctrl-q","HttpHeaders":{"A":"b"}}"#,
        )
        .unwrap();
        assert_eq!(f.get("quay.io").unwrap(), Some(Credentials { username: "a".into(), password: "b".into() }));
        f.set("127.0.0.1:5000", &c).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["detachKeys"], "ctrl-q");
        assert_eq!(v["HttpHeaders"]["A"], "b");
        assert!(f.remove("quay.io").unwrap());
        assert!(!f.remove("quay.io").unwrap());
        assert_eq!(f.get("quay.io").unwrap(), None);
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), Some(c));
        // Helpers are programs on PATH, never paths.
        std::fs::write(&path, r#"{"credHelpers":{"quay.io":"../../bin/sh"}}"#).unwrap();
        assert!(format!("{:#}", f.get("quay.io").unwrap_err()).contains("invalid credential helper name"));
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), None, "credHelpers of another registry");
        std::fs::write(&path, "[1]").unwrap();
        assert!(f.get("x").is_err());
    }
}
