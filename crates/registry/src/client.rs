//! The HTTP side of the distribution spec: endpoints (scheme, TLS roots), authentication,
//! retries, manifests and blobs.
//!
//! A [`Client`] is shared by the threads of one pull or push. The first request to a registry
//! pings `GET /v2/` to learn the scheme and how it authenticates: anonymous, HTTP Basic, or
//! Bearer tokens fetched from the challenge's realm (with Basic credentials when the auth file
//! has some) and reused per scope until they expire. A 401 later on refreshes the token once.
//! Idempotent requests are retried with exponential backoff on connection errors, timeouts,
//! 429 and 5xx; blob downloads resume with `Range` from where they broke off.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use berth_image::Digest;
use berth_image::digest::{Algo, Hasher};
use berth_image::manifest::media;
use ureq::config::RedirectAuthHeaders;
use ureq::http::Response;
use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use crate::auth::{AuthFile, Challenge, Credentials, parse_challenge};
use crate::config::{self, Config};

/// The manifest types berth asks for (and understands).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (the spec asks registries to accept at least 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

const ATTEMPTS: u32 = 4;

/// An error worth trying again (connection trouble, timeouts, 429, 5xx).
#[derive(Debug)]
pub struct Transient(pub String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transient {}

fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Transient>())
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(4000))
}

/// Runs `f` until it succeeds, fails for good, or the attempts run out.
fn retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if is_transient(&e) && attempt + 1 < ATTEMPTS => {
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// A ureq error as ours: transport trouble is transient, the rest (TLS, bad URLs) is not.
fn net_err(e: ureq::Error, what: &str) -> anyhow::Error {
    match e {
        // A name that does not resolve will not resolve a second later either.
        ureq::Error::Io(io) if io.to_string().contains("lookup address") => anyhow!("{what}: {io}"),
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => anyhow::Error::new(Transient(format!("{what}: {e}"))),
        ureq::Error::HostNotFound => anyhow!("{what}: no such host"),
        e => anyhow!("{what}: {e}"),
    }
}

/// A registry's `{"errors": [{"code", "message", "detail"}]}` as one line.
fn api_error(resp: &mut Response<Body>) -> String {
    let status = resp.status();
    let text = resp.body_mut().with_config().limit(64 << 10).read_to_string().unwrap_or_default();
    let mut parts = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        for e in v["errors"].as_array().into_iter().flatten() {
            let code = e["code"].as_str().unwrap_or("").to_ascii_lowercase().replace('_', " ");
            let msg = e["message"].as_str().unwrap_or("");
            parts.push(if msg.is_empty() || msg == code { code } else { format!("{code}: {msg}") });
        }
        if parts.is_empty()
            && let Some(d) = v["details"].as_str().or(v["error"].as_str())
        {
            parts.push(d.to_string());
        }
    }
    if parts.is_empty() {
        let t = text.trim();
        if !t.is_empty() && t.len() < 300 && !t.starts_with('<') {
            parts.push(t.to_string());
        }
    }
    let reason = status.canonical_reason().unwrap_or("");
    if parts.is_empty() { format!("{} {reason}", status.as_u16()).trim().to_string() } else { parts.join("; ") }
}

/// Percent-encodes a query value.
fn qenc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[derive(Debug, Clone)]
enum AuthMode {
    Anonymous,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// One registry host we talk to, as learnt from its `/v2/` ping.
pub struct Endpoint {
    /// The registry as image references name it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// `https://registry-1.docker.io`, `http://127.0.0.1:5000`.
    pub base: String,
    agent: Agent,
    creds: Option<Credentials>,
    cred_source: String,
    auth: Mutex<AuthMode>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl Endpoint {
    fn scheme(&self) -> &str {
        self.base.split(':').next().unwrap_or("https")
    }

    /// The `Authorization` value for a request needing `scopes`.
    fn authorization(&self, scopes: &[String], refresh: bool) -> Result<Option<String>> {
        let mode = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match mode {
            AuthMode::Anonymous => Ok(None),
            AuthMode::Basic => Ok(self.creds.as_ref().map(Credentials::basic)),
            AuthMode::Bearer { realm, service } => {
                let mut key_scopes = scopes.to_vec();
                key_scopes.sort();
                let key = key_scopes.join(" ");
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                if !refresh
                    && let Some((t, until)) = tokens.get(&key)
                    && Instant::now() < *until
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (t, ttl) = self.fetch_token(&realm, service.as_deref(), scopes)?;
                tokens.insert(key, (t.clone(), Instant::now() + ttl));
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// `GET realm?service=..&scope=..` (Basic credentials when we have them).
    fn fetch_token(&self, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<(String, Duration)> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", qenc(s)));
            sep = '&';
        }
        if let Some(c) = &self.creds {
            url.push_str(&format!("{sep}account={}", qenc(&c.username)));
            sep = '&';
        }
        for s in scopes {
            url.push_str(&format!("{sep}scope={}", qenc(s)));
            sep = '&';
        }
        retry(|| {
            let mut req = self.agent.get(&url);
            if let Some(c) = &self.creds {
                req = req.header("Authorization", c.basic());
            }
            let mut resp = req.call().map_err(|e| net_err(e, &format!("fetching a token from {realm}")))?;
            let st = resp.status().as_u16();
            match st {
                200 => {}
                401 | 403 if self.creds.is_some() => bail!(
                    "unauthorized: incorrect username or password for {} (credentials of {} from {}; run `berth login {}` again)",
                    self.registry,
                    self.creds.as_ref().map(|c| c.username.as_str()).unwrap_or(""),
                    self.cred_source,
                    self.registry
                ),
                401 | 403 => bail!(
                    "unauthorized: the token server {realm} refused an anonymous token ({})",
                    api_error(&mut resp)
                ),
                429 | 500.. => {
                    return Err(anyhow::Error::new(Transient(format!(
                        "token server {realm}: {}",
                        api_error(&mut resp)
                    ))));
                }
                _ => bail!("the token server {realm} answered {}", api_error(&mut resp)),
            }
            let v: serde_json::Value = serde_json::from_str(
                &resp.body_mut().with_config().limit(1 << 20).read_to_string().context("reading the token")?,
            )
            .context("the token server's answer is not JSON")?;
            let t = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .filter(|t| !t.is_empty())
                .context("the token server's answer holds no token")?;
            let ttl = v["expires_in"].as_u64().filter(|n| *n > 0).unwrap_or(60);
            Ok((t.to_string(), Duration::from_secs(ttl.saturating_sub(5).max(1))))
        })
    }

    /// Sends a request (built by `f` with the `Authorization` value it is given). A 401 updates
    /// what we know of the registry's auth and sends once more with fresh credentials.
    fn send(
        &self,
        scopes: &[String],
        what: &str,
        mut f: impl FnMut(Option<&str>) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>> {
        let auth = self.authorization(scopes, false)?;
        let resp = f(auth.as_deref()).map_err(|e| net_err(e, what))?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenge = header(&resp, "www-authenticate").and_then(|h| parse_challenge(&h));
        let mut scopes = scopes.to_vec();
        match &challenge {
            Some(Challenge::Bearer { realm, service, scope, error }) => {
                if error.as_deref() == Some("insufficient_scope") && auth.is_some() && self.creds.is_none() {
                    // An anonymous token that lacks the scope: more tokens will not help.
                    return Ok(resp);
                }
                if let Some(s) = scope
                    && !scopes.contains(s)
                {
                    scopes.push(s.clone());
                }
                *self.auth.lock().unwrap_or_else(|p| p.into_inner()) =
                    AuthMode::Bearer { realm: realm.clone(), service: service.clone() };
            }
            Some(Challenge::Basic) => {
                if self.creds.is_none() {
                    return Ok(resp);
                }
                *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = AuthMode::Basic;
            }
            None => return Ok(resp),
        }
        let auth = self.authorization(&scopes, true)?;
        f(auth.as_deref()).map_err(|e| net_err(e, what))
    }

    /// The error for a 401/403 that survived `send`.
    fn denied(&self, resp: &mut Response<Body>, what: &str) -> anyhow::Error {
        let msg = api_error(resp);
        match &self.creds {
            None => anyhow!(
                "{what}: {msg} (no credentials for {} in {}; run `berth login {}`)",
                self.registry,
                self.cred_source,
                self.registry
            ),
            Some(c) => anyhow!("{what}: {msg} (as {} from {})", c.username, self.cred_source),
        }
    }

    /// A status that is not what a request wanted, as an error (transient when worth a retry).
    fn unexpected(&self, resp: &mut Response<Body>, what: &str) -> anyhow::Error {
        match resp.status().as_u16() {
            401 | 403 => self.denied(resp, what),
            408 | 429 | 500.. => anyhow::Error::new(Transient(format!("{what}: {}", api_error(resp)))),
            _ => anyhow!("{what}: {}", api_error(resp)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An upload `Location` (absolute or relative) as a URL.
    fn location(&self, resp: &Response<Body>, what: &str) -> Result<String> {
        let loc = header(resp, "location").with_context(|| format!("{what}: the registry sent no Location"))?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") {
            loc
        } else if loc.starts_with('/') {
            self.url(&loc)
        } else {
            format!("{}/{loc}", self.base)
        })
    }
}

/// The registry client of one berth command.
pub struct Client {
    pub config: Config,
    pub auth_file: AuthFile,
    overrides: Mutex<HashMap<String, Credentials>>,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    system_roots: OnceLock<Vec<Certificate<'static>>>,
    provider: OnceLock<Arc<rustls::crypto::CryptoProvider>>,
}

/// A manifest as the registry sent it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Client {
    /// Settings from the registries file and the environment, credentials from the auth file.
    pub fn from_env() -> Result<Client> {
        Ok(Client::new(Config::load()?, AuthFile::new(AuthFile::default_path())))
    }

    pub fn new(config: Config, auth_file: AuthFile) -> Client {
        Client {
            config,
            auth_file,
            overrides: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            system_roots: OnceLock::new(),
            provider: OnceLock::new(),
        }
    }

    /// Uses `c` for `registry` instead of the auth file (for `login`).
    pub fn set_credentials(&self, registry: &str, c: Credentials) {
        self.overrides.lock().unwrap_or_else(|p| p.into_inner()).insert(registry.to_string(), c);
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).remove(registry);
    }

    /// A repository on `registry`, for pulling or (with `push`) pushing.
    pub fn repo(&self, registry: &str, repository: &str, push: bool) -> Result<Repo> {
        let ep = self.endpoint(registry)?;
        let actions = if push { "pull,push" } else { "pull" };
        Ok(Repo { ep, name: repository.to_string(), scopes: vec![format!("repository:{repository}:{actions}")] })
    }

    /// Where a pull of `registry/repository` may come from: its mirrors, then itself, as
    /// (registry, repository) pairs.
    pub fn pull_sources(&self, registry: &str, repository: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .config
            .mirrors(registry)
            .into_iter()
            .map(|(h, prefix)| {
                (h, if prefix.is_empty() { repository.to_string() } else { format!("{prefix}/{repository}") })
            })
            .collect();
        v.push((registry.to_string(), repository.to_string()));
        v
    }

    /// Checks credentials against the registry, as `docker login` does.
    pub fn login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        self.set_credentials(registry, creds.clone());
        let ep = self.endpoint(registry)?;
        let mode = ep.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let auth = match mode {
            // No auth at all: there is nothing to check (Docker says "Login Succeeded" too).
            AuthMode::Anonymous => return Ok(()),
            AuthMode::Basic => creds.basic(),
            AuthMode::Bearer { realm, service } => {
                format!("Bearer {}", ep.fetch_token(&realm, service.as_deref(), &[])?.0)
            }
        };
        let what = format!("logging in to {registry}");
        let mut resp = retry(|| {
            ep.agent.get(ep.url("/v2/")).header("Authorization", &auth).call().map_err(|e| net_err(e, &what))
        })?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 | 403 => bail!("{what}: unauthorized: incorrect username or password ({})", api_error(&mut resp)),
            _ => bail!("{what}: GET /v2/ answered {}", api_error(&mut resp)),
        }
    }

    fn credentials(&self, registry: &str) -> Result<(Option<Credentials>, String)> {
        if let Some(c) = self.overrides.lock().unwrap_or_else(|p| p.into_inner()).get(registry) {
            return Ok((Some(c.clone()), "the command line".into()));
        }
        let src = self.auth_file.source(registry);
        Ok((self.auth_file.get(registry).with_context(|| format!("credentials for {registry}"))?, src))
    }

    fn roots(&self) -> &[Certificate<'static>] {
        self.system_roots.get_or_init(system_roots)
    }

    /// TLS settings for `registry`: the system's roots plus its certs.d CAs (`https`: there
    /// must be some), or no verification at all for registries configured insecure.
    fn tls(&self, registry: &str, verify: bool, https: bool) -> Result<TlsConfig> {
        let provider = self.provider.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone();
        if !verify {
            return Ok(TlsConfig::builder()
                .unversioned_rustls_crypto_provider(provider)
                .disable_verification(true)
                .client_cert(self.client_cert(registry)?)
                .build());
        }
        let mut roots: Vec<Certificate<'static>> = self.roots().to_vec();
        for f in config::ca_files(&self.config.certs_dirs(), registry) {
            let pem = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            let before = roots.len();
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(PemItem::Certificate(c)) = item {
                    roots.push(c);
                }
            }
            if roots.len() == before {
                bail!("{} holds no PEM certificate", f.display());
            }
        }
        if roots.is_empty() && https {
            bail!(
                "no CA certificates to verify {registry} with: install the system's bundle (ca-certificates, or set SSL_CERT_FILE) or put the registry's CA in <certs.d>/{registry}/ca.crt"
            );
        }
        Ok(TlsConfig::builder()
            .unversioned_rustls_crypto_provider(provider)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .client_cert(self.client_cert(registry)?)
            .build())
    }

    /// The client certificate for `registry` from certs.d (`NAME.cert` + `NAME.key`), if any.
    fn client_cert(&self, registry: &str) -> Result<Option<ClientCert>> {
        let Some((cert, key)) = config::client_cert_files(&self.config.certs_dirs(), registry)?.into_iter().next()
        else {
            return Ok(None);
        };
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&read(&cert)?)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if chain.is_empty() {
            bail!("{} holds no PEM certificate", cert.display());
        }
        let key_pem = read(&key)?;
        let Some(k) = ureq::tls::parse_pem(&key_pem).find_map(|i| match i {
            Ok(PemItem::PrivateKey(k)) => Some(k),
            _ => None,
        }) else {
            bail!("{} holds no PEM private key", key.display());
        };
        Ok(Some(ClientCert::new_with_certs(&chain, k)))
    }

    fn agent(&self, registry: &str, verify: bool, https: bool) -> Result<Agent> {
        let loopback = config::is_loopback(registry);
        let cfg = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("berth/{}", env!("CARGO_PKG_VERSION")))
            .max_redirects(10)
            .redirect_auth_headers(RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(16)
            // Loopback never goes through a proxy.
            .proxy(if loopback { None } else { ureq::Proxy::try_from_env() })
            .tls_config(self.tls(registry, verify, https)?)
            .build();
        Ok(Agent::new_with_config(cfg))
    }

    /// The endpoint for `registry`, pinged once per client.
    pub fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>> {
        if let Some(e) = self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).get(registry) {
            return Ok(e.clone());
        }
        if self.config.blocked(registry) {
            bail!("registry {registry} is blocked by the registries configuration");
        }
        let host = config::api_host(registry);
        let insecure = self.config.insecure(registry);
        let loopback = config::is_loopback(registry);
        let (creds, cred_source) = self.credentials(registry)?;
        // Loopback: plain HTTP first (the common local registry, and no TLS set-up to pay
        // for), HTTPS when that is not what answers. Configured insecure: HTTPS without
        // verification first, then HTTP, as Docker does.
        let schemes: &[&str] = match (insecure, loopback) {
            (true, _) => &["https", "http"],
            (false, true) => &["http", "https"],
            (false, false) => &["https"],
        };
        let mut attempt = 0;
        loop {
            let mut errors = Vec::new();
            let mut again = false;
            for scheme in schemes {
                let agent = self.agent(registry, !insecure, *scheme == "https")?;
                let base = format!("{scheme}://{host}");
                let url = format!("{base}/v2/");
                let mut resp = match agent.get(&url).call() {
                    Ok(r) => r,
                    Err(e) => {
                        let refused =
                            matches!(&e, ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused);
                        let e = net_err(e, &format!("GET {url}"));
                        let msg = format!("{e:#}");
                        // A certificate that does not verify is an answer: do not downgrade.
                        if *scheme == "https" && !insecure && msg.contains("certificate") {
                            bail!(
                                "{msg} (add the registry's CA as <certs.d>/{registry}/ca.crt, or mark the registry insecure in the registries configuration)"
                            );
                        }
                        errors.push(msg);
                        if refused {
                            // Nothing listens: plain HTTP on the same port will not do better.
                            break;
                        }
                        // Over HTTPS a plain-HTTP server looks broken; only the last scheme's
                        // trouble is worth another try.
                        again = *scheme == schemes[schemes.len() - 1] && is_transient(&e);
                        continue;
                    }
                };
                let status = resp.status().as_u16();
                if *scheme == "http" && !matches!(status, 200 | 401) && schemes.len() > 1 && schemes[0] == "http" {
                    // E.g. a TLS server's "400: Client sent an HTTP request to an HTTPS server".
                    errors.push(format!("GET {url}: {}", api_error(&mut resp)));
                    continue;
                }
                // Read the (tiny) body so that the connection goes back to the pool.
                let _ = resp.body_mut().with_config().limit(64 << 10).read_to_vec();
                let mode = match status {
                    200 => AuthMode::Anonymous,
                    401 => match header(&resp, "www-authenticate").and_then(|h| parse_challenge(&h)) {
                        Some(Challenge::Basic) => AuthMode::Basic,
                        Some(Challenge::Bearer { realm, service, .. }) => AuthMode::Bearer { realm, service },
                        None => bail!("{url} wants authentication berth does not know (no Basic or Bearer challenge)"),
                    },
                    429 | 500.. if attempt + 1 < ATTEMPTS => {
                        errors.push(format!("GET {url}: {}", api_error(&mut resp)));
                        again = true;
                        break;
                    }
                    _ => bail!(
                        "{url} answered {}: this does not look like a registry (OCI distribution API)",
                        api_error(&mut resp)
                    ),
                };
                let ep = Arc::new(Endpoint {
                    registry: registry.to_string(),
                    base,
                    agent,
                    creds,
                    cred_source,
                    auth: Mutex::new(mode),
                    tokens: Mutex::new(HashMap::new()),
                });
                self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).insert(registry.to_string(), ep.clone());
                return Ok(ep);
            }
            if again && attempt + 1 < ATTEMPTS {
                std::thread::sleep(backoff(attempt));
                attempt += 1;
                continue;
            }
            bail!("registry {registry} is unreachable: {}", errors.join("; "))
        }
    }
}

/// `r` with the Authorization header `auth`, when there is one.
fn authorized<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

/// The system's CA bundle (`$SSL_CERT_FILE`, or the distribution's usual file); also what
/// the build's `ADD URL` verifies with.
pub fn system_roots() -> Vec<Certificate<'static>> {
    let mut files: Vec<std::path::PathBuf> = std::env::var_os("SSL_CERT_FILE").map(Into::into).into_iter().collect();
    files.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/ssl/cert.pem",
        ]
        .map(Into::into),
    );
    for f in files {
        if let Ok(pem) = std::fs::read(&f) {
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if !certs.is_empty() {
                return certs;
            }
        }
    }
    Vec::new()
}

/// A repository on a registry, with the token scopes its requests need.
pub struct Repo {
    ep: Arc<Endpoint>,
    pub name: String,
    scopes: Vec<String>,
}

/// What a cross-repository mount did.
pub enum Mount {
    Mounted,
    /// Not mounted: an upload session was opened instead, at this location.
    Upload(String),
}

impl Repo {
    pub fn registry(&self) -> &str {
        &self.ep.registry
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &str {
        self.ep.scheme()
    }

    /// `GET /v2/<name>/manifests/<reference>`, checked against the digest when `reference` is
    /// one, and against `Docker-Content-Digest` when the registry sends it.
    pub fn get_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let url = self.ep.url(&format!("/v2/{}/manifests/{reference}", self.name));
        let shown = if reference.contains(':') {
            format!("{}/{}@{reference}", self.ep.registry, self.name)
        } else {
            format!("{}/{}:{reference}", self.ep.registry, self.name)
        };
        let want = Digest::parse(reference).ok();
        retry(|| {
            let mut resp = self.ep.send(&self.scopes, &format!("GET {url}"), |auth| {
                authorized(self.ep.agent.get(&url).header("Accept", MANIFEST_ACCEPT), auth).call()
            })?;
            match resp.status().as_u16() {
                200 => {}
                404 => bail!("manifest for {shown} not found: {}", api_error(&mut resp)),
                _ => return Err(self.ep.unexpected(&mut resp, &format!("fetching the manifest for {shown}"))),
            }
            if resp.body().content_length().is_some_and(|n| n > MAX_MANIFEST) {
                bail!("the manifest for {shown} is larger than {MAX_MANIFEST} bytes");
            }
            let media_type =
                header(&resp, "content-type").unwrap_or_default().split(';').next().unwrap_or("").trim().to_string();
            let sent = header(&resp, "docker-content-digest").and_then(|d| Digest::parse(d.trim()).ok());
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(MAX_MANIFEST)
                .read_to_vec()
                .map_err(|e| net_err(e, &format!("reading the manifest for {shown}")))?;
            let algo = want.as_ref().map(|d| d.algo).unwrap_or(Algo::Sha256);
            let mut h = Hasher::new(algo);
            h.update(&bytes);
            let digest = h.finish();
            if let Some(w) = &want
                && *w != digest
            {
                bail!("the registry sent a manifest for {shown} whose digest is {digest}");
            }
            if let Some(s) = &sent
                && s.algo == digest.algo
                && *s != digest
            {
                bail!("the manifest for {shown} does not match its Docker-Content-Digest {s} (it is {digest})");
            }
            Ok(FetchedManifest { bytes, media_type, digest })
        })
    }

    /// `GET /v2/<name>/tags/list`, every page (`Link: <...>; rel="next"`), in the registry's
    /// order.
    pub fn tags(&self) -> Result<Vec<String>> {
        let shown = format!("{}/{}", self.ep.registry, self.name);
        let what = format!("listing the tags of {shown}");
        let mut url = self.ep.url(&format!("/v2/{}/tags/list", self.name));
        let mut out: Vec<String> = Vec::new();
        // A registry that keeps sending "next" pages must not keep us forever.
        for _ in 0..10_000 {
            let (tags, next) = retry(|| {
                let mut resp =
                    self.ep.send(&self.scopes, &what, |auth| authorized(self.ep.agent.get(&url), auth).call())?;
                match resp.status().as_u16() {
                    200 => {}
                    404 => bail!("repository {shown} not found: {}", api_error(&mut resp)),
                    _ => return Err(self.ep.unexpected(&mut resp, &what)),
                }
                let next = header(&resp, "link").and_then(|l| next_link(&l));
                let body =
                    resp.body_mut().with_config().limit(16 << 20).read_to_vec().map_err(|e| net_err(e, &what))?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).with_context(|| format!("{what}: the answer is not JSON"))?;
                let tags: Vec<String> = v["tags"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                Ok((tags, next))
            })?;
            out.extend(tags);
            match next {
                Some(n) if n.starts_with("http://") || n.starts_with("https://") => url = n,
                Some(n) if n.starts_with('/') => url = self.ep.url(&n),
                _ => return Ok(out),
            }
        }
        bail!("{what}: the registry sent too many pages")
    }

    /// A reader of a blob that verifies the size it was told, resumes after errors with
    /// `Range`, and stops when `cancel` is set. The caller verifies the digest (the store does).
    pub fn blob<'a>(&'a self, digest: &Digest, size: Option<u64>, cancel: Option<&'a AtomicBool>) -> BlobReader<'a> {
        BlobReader { repo: self, digest: digest.clone(), size, got: 0, body: None, failures: 0, cancel, fatal: None }
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: the size when the registry has it.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let url = self.ep.url(&format!("/v2/{}/blobs/{digest}", self.name));
        retry(|| {
            let mut resp = self
                .ep
                .send(&self.scopes, &format!("HEAD {url}"), |auth| authorized(self.ep.agent.head(&url), auth).call())?;
            match resp.status().as_u16() {
                200 => Ok(Some(header(&resp, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0))),
                404 => Ok(None),
                _ => Err(self.ep.unexpected(&mut resp, &format!("checking blob {digest}"))),
            }
        })
    }

    /// `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`.
    pub fn mount(&self, digest: &Digest, from: &str) -> Result<Mount> {
        let url = self.ep.url(&format!("/v2/{}/blobs/uploads/?mount={digest}&from={}", self.name, qenc(from)));
        let mut scopes = self.scopes.clone();
        scopes.push(format!("repository:{from}:pull"));
        let what = format!("mounting {digest} from {from}");
        retry(|| {
            let mut resp = self.ep.send(&scopes, &what, |auth| {
                authorized(self.ep.agent.post(&url).header("Content-Length", "0"), auth).send_empty()
            })?;
            match resp.status().as_u16() {
                201 => Ok(Mount::Mounted),
                202 => Ok(Mount::Upload(self.ep.location(&resp, &what)?)),
                _ => Err(self.ep.unexpected(&mut resp, &what)),
            }
        })
    }

    fn start_upload(&self) -> Result<String> {
        let url = self.ep.url(&format!("/v2/{}/blobs/uploads/", self.name));
        let what = format!("starting an upload to {}/{}", self.ep.registry, self.name);
        let mut resp = self.ep.send(&self.scopes, &what, |auth| {
            authorized(self.ep.agent.post(&url).header("Content-Length", "0"), auth).send_empty()
        })?;
        match resp.status().as_u16() {
            202 => self.ep.location(&resp, &what),
            _ => Err(self.ep.unexpected(&mut resp, &what)),
        }
    }

    /// Uploads the blob in `path`: one PUT when it is at most `chunk` bytes, else PATCHes of
    /// `chunk` bytes and a closing PUT. `session` is an upload already opened (by a mount that
    /// did not happen). Retried from the start on transient errors.
    pub fn upload(&self, digest: &Digest, path: &Path, chunk: u64, session: Option<String>) -> Result<()> {
        let mut session = session;
        retry(|| {
            let location = match session.take() {
                Some(l) => l,
                None => self.start_upload()?,
            };
            self.upload_once(digest, path, chunk, location)
        })
    }

    fn upload_once(&self, digest: &Digest, path: &Path, chunk: u64, mut location: String) -> Result<()> {
        let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        let what = format!("uploading {digest}");
        let open_at = |off: u64| -> Result<std::fs::File> {
            let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            f.seek(SeekFrom::Start(off))?;
            Ok(f)
        };
        let with_digest = |loc: &str| format!("{loc}{}digest={digest}", if loc.contains('?') { '&' } else { '?' });
        if size > chunk {
            let mut off = 0;
            while off < size {
                let n = chunk.min(size - off);
                let mut resp = self.ep.send(&self.scopes, &what, |auth| {
                    let f = open_at(off).map_err(|e| ureq::Error::Io(io::Error::other(e.to_string())))?;
                    let mut body = f.take(n);
                    authorized(
                        self.ep
                            .agent
                            .patch(&location)
                            .header("Content-Type", "application/octet-stream")
                            .header("Content-Length", n.to_string())
                            .header("Content-Range", format!("{off}-{}", off + n - 1)),
                        auth,
                    )
                    .send(ureq::SendBody::from_reader(&mut body))
                })?;
                if resp.status().as_u16() != 202 {
                    return Err(self.ep.unexpected(&mut resp, &format!("{what} (bytes {off}..{})", off + n)));
                }
                location = self.ep.location(&resp, &what)?;
                off += n;
            }
            let url = with_digest(&location);
            let mut resp = self.ep.send(&self.scopes, &what, |auth| {
                authorized(self.ep.agent.put(&url).header("Content-Length", "0"), auth).send_empty()
            })?;
            if resp.status().as_u16() != 201 {
                return Err(self.ep.unexpected(&mut resp, &what));
            }
            return Ok(());
        }
        let url = with_digest(&location);
        let mut resp = self.ep.send(&self.scopes, &what, |auth| {
            let f = open_at(0).map_err(|e| ureq::Error::Io(io::Error::other(e.to_string())))?;
            authorized(
                self.ep
                    .agent
                    .put(&url)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", size.to_string()),
                auth,
            )
            .send(f)
        })?;
        if resp.status().as_u16() != 201 {
            return Err(self.ep.unexpected(&mut resp, &what));
        }
        Ok(())
    }

    /// `PUT /v2/<name>/manifests/<reference>`; returns the digest the registry gives it.
    pub fn put_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<Digest> {
        let url = self.ep.url(&format!("/v2/{}/manifests/{reference}", self.name));
        let what = format!("pushing the manifest to {}/{}:{reference}", self.ep.registry, self.name);
        let ours = Digest::sha256_of(bytes);
        retry(|| {
            let mut resp = self.ep.send(&self.scopes, &what, |auth| {
                authorized(self.ep.agent.put(&url).header("Content-Type", media_type), auth).send(bytes)
            })?;
            if resp.status().as_u16() != 201 {
                return Err(self.ep.unexpected(&mut resp, &what));
            }
            let theirs = header(&resp, "docker-content-digest").and_then(|d| Digest::parse(d.trim()).ok());
            if let Some(t) = &theirs
                && *t != ours
            {
                bail!("{what}: the registry recorded digest {t}, berth sent {ours}");
            }
            Ok(ours.clone())
        })
    }
}

/// See [`Repo::blob`].
pub struct BlobReader<'a> {
    repo: &'a Repo,
    digest: Digest,
    size: Option<u64>,
    got: u64,
    body: Option<ureq::BodyReader<'static>>,
    failures: u32,
    cancel: Option<&'a AtomicBool>,
    /// The error that ended the download, returned again by every later read.
    fatal: Option<String>,
}

impl BlobReader<'_> {
    fn open(&mut self) -> Result<()> {
        let ep = &self.repo.ep;
        let url = ep.url(&format!("/v2/{}/blobs/{}", self.repo.name, self.digest));
        let got = self.got;
        let mut resp = ep.send(&self.repo.scopes, &format!("GET {url}"), |auth| {
            let mut r = authorized(ep.agent.get(&url), auth);
            if got > 0 {
                r = r.header("Range", format!("bytes={got}-"));
            }
            r.call()
        })?;
        let what = format!("fetching blob {}", self.digest);
        let st = resp.status().as_u16();
        let skip = match st {
            200 => got,
            206 => {
                let start = header(&resp, "content-range")
                    .and_then(|v| v.trim_start_matches("bytes").trim().split('-').next()?.parse::<u64>().ok());
                if start != Some(got) {
                    bail!("{what}: the registry resumed at the wrong offset ({start:?}, wanted {got})");
                }
                0
            }
            404 => bail!("{what}: {} (the registry does not have it)", api_error(&mut resp)),
            416 => bail!(
                "{what}: the registry has only {got} bytes{}",
                self.size.map(|s| format!(", the manifest says {s}")).unwrap_or_default()
            ),
            _ => return Err(ep.unexpected(&mut resp, &what)),
        };
        if let (Some(want), Some(len)) = (self.size, resp.body().content_length()) {
            let total = if st == 206 { len + got } else { len };
            if total != want {
                bail!("size mismatch: the manifest says {want} bytes, the registry serves {total}");
            }
        }
        let mut body = resp.into_body().into_reader();
        if skip > 0 {
            let n = io::copy(&mut (&mut body).take(skip), &mut io::sink())
                .map_err(|e| anyhow::Error::new(Transient(format!("{what}: {e}"))))?;
            if n != skip {
                return Err(anyhow::Error::new(Transient(format!("{what}: the stream ended early"))));
            }
        }
        self.body = Some(body);
        Ok(())
    }

    /// A failure: try again (after a pause) while attempts last.
    fn fail(&mut self, e: anyhow::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if !is_transient(&e) || self.failures >= ATTEMPTS + 2 {
            let msg = format!("{e:#}");
            self.fatal = Some(msg.clone());
            return Err(io::Error::other(msg));
        }
        std::thread::sleep(backoff(self.failures - 1));
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(f) = &self.fatal {
                return Err(io::Error::other(f.clone()));
            }
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(io::Error::other("cancelled (another download failed)"));
            }
            if self.body.is_none()
                && let Err(e) = self.open()
            {
                self.fail(e)?;
                continue;
            }
            // Never read more than one byte past the expected size.
            let cap = match self.size {
                Some(s) => buf.len().min((s + 1).saturating_sub(self.got).min(usize::MAX as u64) as usize),
                None => buf.len(),
            };
            if cap == 0 {
                return Ok(0);
            }
            let r = self.body.as_mut().map(|b| b.read(&mut buf[..cap])).unwrap_or(Ok(0));
            match r {
                Ok(0) => match self.size {
                    Some(s) if self.got < s => {
                        let e = Transient(format!(
                            "fetching blob {}: the stream ended after {} of {s} bytes",
                            self.digest, self.got
                        ));
                        self.fail(anyhow::Error::new(e))?;
                    }
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.got += n as u64;
                    if let Some(s) = self.size
                        && self.got > s
                    {
                        let msg = format!("size mismatch: the manifest says {s} bytes, the registry sent more");
                        self.fatal = Some(msg.clone());
                        return Err(io::Error::other(msg));
                    }
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let e = Transient(format!("fetching blob {}: {e}", self.digest));
                    self.fail(anyhow::Error::new(e))?;
                }
            }
        }
    }
}

/// The target of a `Link: <url>; rel="next"` header.
fn next_link(h: &str) -> Option<String> {
    h.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let rel_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let t = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        rel_next.then(|| t.to_string())
    })
}

/// The media type to PUT a stored manifest with.
pub fn manifest_media_type(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v["mediaType"].as_str() {
        Some(m) if !m.is_empty() => m.to_string(),
        _ if v.get("manifests").is_some() => media::OCI_INDEX.to_string(),
        _ => media::OCI_MANIFEST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding_and_media_types() {
        assert_eq!(qenc("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(manifest_media_type(br#"{"schemaVersion":2,"layers":[]}"#), media::OCI_MANIFEST);
        assert_eq!(manifest_media_type(br#"{"manifests":[]}"#), media::OCI_INDEX);
        assert_eq!(
            manifest_media_type(format!(r#"{{"mediaType":"{}"}}"#, media::DOCKER_MANIFEST).as_bytes()),
            media::DOCKER_MANIFEST
        );
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel=prev, <https://x/z>; rel=next"#).as_deref(), Some("https://x/z"));
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn retries_only_transient_errors() {
        let mut n = 0;
        let r: Result<()> = retry(|| {
            n += 1;
            Err(anyhow!("fatal"))
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
        let mut n = 0;
        let r = retry(|| {
            n += 1;
            if n < 3 { Err(anyhow::Error::new(Transient("again".into()))) } else { Ok(n) }
        });
        assert_eq!(r.unwrap(), 3);
    }
}
