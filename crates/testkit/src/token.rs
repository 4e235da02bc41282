//! A small Docker token server (the `auth: token` scheme of distribution) for
//! [`crate::registry::Variant::TokenAuth`]: a std `TcpListener` on a free 127.0.0.1 port,
//! served by one thread, stopped on drop.
//!
//! `GET /token?service=S&scope=repository:NAME:pull,push` (any number of `scope`s) answers
//! `{"token": JWT, "access_token": JWT, "expires_in": 300}`.
//! - HTTP Basic credentials must be [`USER`]/[`PASSWORD`]; anything else gets 401.
//! - Without an `Authorization` header the request is anonymous and is *granted pull only*
//!   (the actions `pull` of `repository` scopes; everything else is dropped), like Docker Hub:
//!   anonymous pulls work, an anonymous push fails at the registry with 401 insufficient_scope.
//! - A `service` other than ours gets 400; `POST /token` (OAuth2) gets 404, which tells Docker
//!   and containers/image clients to fall back to `GET`.
//!
//! The JWT is RS256, signed by shelling out to `openssl dgst -sha256 -sign`. Its header
//! carries `x5c` (the self-signed certificate made at start, which is also the registry's
//! `rootcertbundle`), so distribution verifies the chain and then the signature with the
//! leaf's key; no libtrust `kid` is needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::registry::{PASSWORD, USER};

/// The `service` (JWT `aud`) the registry is configured with.
pub const SERVICE: &str = "berth-testkit-registry";
/// The JWT `iss` the registry trusts.
pub const ISSUER: &str = "berth-testkit-token";
/// Lifetime of a token in seconds.
pub const EXPIRES_IN: u64 = 300;

pub struct TokenServer {
    pub port: u16,
    /// The signing certificate (PEM), the registry's `rootcertbundle`.
    pub cert: PathBuf,
    key: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Makes an RSA key and a self-signed certificate in `dir` and starts serving.
    pub fn start(dir: &Path) -> std::io::Result<TokenServer> {
        let (cert, key) = (dir.join("token-cert.pem"), dir.join("token-key.pem"));
        let st = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=berth-testkit-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            return Err(std::io::Error::other("openssl could not make the token signing certificate"));
        }
        let x5c = pem_body(&std::fs::read_to_string(&cert)?)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let signer = Signer { key: key.clone(), x5c };
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("berth-testkit-token".into()).spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = serve(conn, &signer);
                }
            }
        })?;
        Ok(TokenServer { port, cert, key, stop, thread: Some(thread) })
    }

    /// The URL the registry sends clients to (`realm` of its `WWW-Authenticate: Bearer`).
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The private key the tokens are signed with.
    pub fn key(&self) -> &Path {
        &self.key
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Signer {
    key: PathBuf,
    /// Standard base64 of the certificate's DER, the one `x5c` entry.
    x5c: String,
}

impl Signer {
    /// A signed JWT for `sub` (empty when anonymous) with the given access entries.
    fn token(&self, sub: &str, access: &[Value]) -> std::io::Result<String> {
        static JTI: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": ISSUER,
            "sub": sub,
            "aud": SERVICE,
            "exp": now.as_secs() + EXPIRES_IN,
            "nbf": now.as_secs(),
            "iat": now.as_secs(),
            "jti": format!("{}-{}-{}", std::process::id(), now.as_nanos(), JTI.fetch_add(1, Ordering::Relaxed)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            base64url(&serde_json::to_vec(&header).unwrap()),
            base64url(&serde_json::to_vec(&claims).unwrap())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() || out.stdout.is_empty() {
            return Err(std::io::Error::other("openssl dgst -sign failed"));
        }
        Ok(format!("{input}.{}", base64url(&out.stdout)))
    }
}

/// Answers one request on `conn` and closes it.
fn serve(mut conn: TcpStream, signer: &Signer) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let authorization = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let (status, extra, body) = respond(method, target, authorization.as_deref(), signer);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes())?;
    conn.flush()
}

/// (status, extra header lines each ending in CRLF, JSON body).
fn respond(method: &str, target: &str, authorization: Option<&str>, signer: &Signer) -> (u16, String, String) {
    let err = |status: u16, extra: &str, msg: &str| (status, extra.to_string(), json!({"details": msg}).to_string());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        return err(404, "", "only GET /token is served here");
    }
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    if let Some((_, s)) = params.iter().find(|(k, _)| k == "service")
        && s != SERVICE
    {
        return err(400, "", &format!("unknown service {s:?}"));
    }
    let challenge = "WWW-Authenticate: Basic realm=\"berth-testkit-token\"\r\n";
    let sub = match authorization {
        None => None,
        Some(a) => {
            let creds = a
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                .and_then(|(_, b)| base64_decode(b.trim()))
                .and_then(|b| String::from_utf8(b).ok());
            match creds.as_deref().and_then(|c| c.split_once(':')) {
                Some((u, p)) if u == USER && p == PASSWORD => Some(USER),
                _ => return err(401, challenge, "bad credentials"),
            }
        }
    };
    let mut access = Vec::new();
    for (_, scope) in params.iter().filter(|(k, _)| k == "scope") {
        // type:name:actions, where the name may itself hold ':' (never the type or actions).
        let Some((kind, rest)) = scope.split_once(':') else { continue };
        let Some((name, actions)) = rest.rsplit_once(':') else { continue };
        let actions: Vec<&str> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .filter(|a| sub.is_some() || (kind == "repository" && *a == "pull"))
            .collect();
        if !actions.is_empty() {
            access.push(json!({"type": kind, "name": name, "actions": actions}));
        }
    }
    match signer.token(sub.unwrap_or(""), &access) {
        Ok(t) => (200, String::new(), json!({"token": t, "access_token": t, "expires_in": EXPIRES_IN}).to_string()),
        Err(e) => err(500, "", &e.to_string()),
    }
}

/// The base64 body of the first PEM block.
fn pem_body(pem: &str) -> std::io::Result<String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err(std::io::Error::other("no PEM block in the certificate"));
    }
    Ok(body)
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push(hex(b[i + 1]).unwrap() << 4 | hex(b[i + 2]).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// base64url without padding, as JWTs use.
pub fn base64url(data: &[u8]) -> String {
    base64(data).trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// Decodes standard or url-safe base64, padded or not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `Authorization` header value for HTTP Basic.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// The claims of a JWT, unverified (for tests to look at `access`, `sub`, ...).
pub fn claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&base64_decode(payload)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"berth:s3cret-pass"), "YmVydGg6czNjcmV0LXBhc3M=");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(base64_decode(&base64(&data)).unwrap(), data);
            assert_eq!(base64_decode(&base64url(&data)).unwrap(), data);
        }
        assert_eq!(base64_decode("a b"), None);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(percent_decode("repository%3Aberth%2Fbusybox%3Apull%2Cpush"), "repository:berth/busybox:pull,push");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
