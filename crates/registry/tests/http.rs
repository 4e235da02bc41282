//! The client against a scripted HTTP server on loopback: blob downloads that break off resume
//! with `Range`, transient statuses are retried with backoff, lies about sizes are caught, and
//! redirects to "blob storage" are followed without our credentials.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::Digest;
use berth_registry::{AuthFile, Client, Config};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
}

/// What to answer: raw bytes to write, then close.
type Handler = dyn Fn(&Seen, usize) -> Vec<u8> + Send + Sync;

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves until the test process ends (one thread; every answer closes its connection).
    fn start(handler: Box<Handler>) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let Some(req) = read_request(&mut c) else { continue };
                let n = {
                    let mut g = s2.lock().unwrap();
                    g.push(req.clone());
                    g.len()
                };
                let _ = c.write_all(&handler(&req, n));
                let _ = c.flush();
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        Server { port, seen }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_request(c: &mut TcpStream) -> Option<Seen> {
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Seen { line, headers })
}

fn resp(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(body);
    v
}

fn client() -> (Client, tempfile::TempDir) {
    let t = tempfile::tempdir().unwrap();
    (Client::new(Config::default(), AuthFile::new(t.path().join("auth.json"))), t)
}

fn data() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

#[test]
fn a_broken_download_resumes_with_range() {
    let body = Arc::new(data());
    let b2 = body.clone();
    let srv = Server::start(Box::new(move |req, _| {
        if req.line.starts_with("GET /v2/ ") {
            return resp("200 OK", &[("Content-Length", "2".into())], b"{}");
        }
        match req.header("range") {
            // The first answer promises everything and breaks off after a third.
            None => resp("200 OK", &[("Content-Length", b2.len().to_string())], &b2[..100_000]),
            Some(r) => {
                let from: usize = r.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
                resp(
                    "206 Partial Content",
                    &[
                        ("Content-Length", (b2.len() - from).to_string()),
                        ("Content-Range", format!("bytes {from}-{}/{}", b2.len() - 1, b2.len())),
                    ],
                    &b2[from..],
                )
            }
        }
    }));
    let (c, _t) = client();
    let repo = c.repo(&srv.host(), "r", false).unwrap();
    let d = Digest::sha256_of(&body);
    let mut got = Vec::new();
    repo.blob(&d, Some(body.len() as u64), None).read_to_end(&mut got).unwrap();
    assert!(got == *body, "the resumed blob differs");
    let ranges: Vec<String> = srv.seen().iter().filter_map(|s| s.header("range").map(str::to_string)).collect();
    assert_eq!(ranges.len(), 1, "{:?}", srv.seen());
    assert!(ranges[0].starts_with("bytes="), "{ranges:?}");
}

#[test]
fn transient_statuses_are_retried_and_then_reported() {
    // 503 twice, then the manifest.
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
    let srv = Server::start(Box::new(move |req, _| {
        if req.line.starts_with("GET /v2/ ") {
            return resp("200 OK", &[("Content-Length", "2".into())], b"{}");
        }
        if req.line.contains("/manifests/flaky") {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                let b = br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#;
                return resp("503 Service Unavailable", &[("Content-Length", b.len().to_string())], b);
            }
            return resp(
                "200 OK",
                &[
                    ("Content-Length", manifest.len().to_string()),
                    ("Content-Type", "application/vnd.oci.image.manifest.v1+json".into()),
                ],
                manifest,
            );
        }
        let b = br#"{"errors":[{"code":"UNAVAILABLE","message":"down for good"}]}"#;
        resp("503 Service Unavailable", &[("Content-Length", b.len().to_string())], b)
    }));
    let (c, _t) = client();
    let repo = c.repo(&srv.host(), "r", false).unwrap();
    let m = repo.get_manifest("flaky").unwrap();
    assert_eq!(m.digest, Digest::sha256_of(manifest));
    let t = std::time::Instant::now();
    let e = format!("{:#}", repo.get_manifest("down").unwrap_err());
    assert!(e.contains("unavailable: down for good"), "{e}");
    let tries = srv.seen().iter().filter(|s| s.line.contains("/manifests/down")).count();
    assert_eq!(tries, 4, "attempts");
    assert!(t.elapsed() >= Duration::from_millis(1400), "no backoff: {:?}", t.elapsed());
}

#[test]
fn sizes_that_lie_and_redirects() {
    let body = Arc::new(data());
    let b2 = body.clone();
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let srv = Server::start(Box::new(move |req, _| {
        let p = *p2.lock().unwrap();
        if req.line.starts_with("GET /v2/ ") {
            return resp("200 OK", &[("Content-Length", "2".into())], b"{}");
        }
        if req.line.starts_with("GET /storage/") {
            return resp("200 OK", &[("Content-Length", b2.len().to_string())], &b2);
        }
        // Blob storage lives elsewhere: a redirect (to the same server, another path).
        resp("307 Temporary Redirect", &[("Location", format!("http://127.0.0.1:{p}/storage/x"))], b"")
    }));
    *port.lock().unwrap() = srv.port;
    let (c, _t) = client();
    let repo = c.repo(&srv.host(), "r", false).unwrap();
    let d = Digest::sha256_of(&body);
    let mut got = Vec::new();
    repo.blob(&d, Some(body.len() as u64), None).read_to_end(&mut got).unwrap();
    assert!(got == *body);
    for wrong in [body.len() as u64 - 1, body.len() as u64 + 10] {
        let e = repo.blob(&d, Some(wrong), None).read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("size mismatch") && e.contains(&format!("the manifest says {wrong} bytes")), "{e}");
    }
}
