//! The token-auth registry: the Bearer flow by hand over plain HTTP, then with skopeo as a real
//! client pushing and pulling the test kit's busybox image.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_testkit::image;
use berth_testkit::registry::{PASSWORD, Registry, USER, Variant};
use berth_testkit::token;
use serde_json::{Value, json};

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET http://127.0.0.1:PORT/PATH` with an optional Authorization header, `Connection: close`.
fn get(port: u16, path: &str, authorization: Option<&str>) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Resp { status, headers, body: body.to_string() }
}

fn token_path(scope: &str) -> String {
    let enc = scope.replace(':', "%3A").replace('/', "%2F").replace(',', "%2C");
    format!("/token?service={}&scope={enc}", token::SERVICE)
}

#[test]
fn token_auth_bearer_flow() {
    let r = Registry::start(Variant::TokenAuth).expect("starting docker-registry with token auth");
    let ts = r.token.as_ref().unwrap();

    // Without a token: 401 and a Bearer challenge naming our token server and service.
    let v2 = get(r.port, "/v2/", None);
    assert_eq!(v2.status, 401, "{}", v2.body);
    let challenge = v2.header("WWW-Authenticate").expect("a WWW-Authenticate header");
    assert!(challenge.starts_with(&format!("Bearer realm=\"{}\"", ts.realm())), "{challenge}");
    assert!(challenge.contains(&format!("service=\"{}\"", token::SERVICE)), "{challenge}");

    // With the right credentials: a token for what was asked.
    let good = token::basic_auth(USER, PASSWORD);
    let t = get(ts.port, &token_path("repository:berth/busybox:pull,push"), Some(&good));
    assert_eq!(t.status, 200, "{}", t.body);
    let body = t.json();
    let jwt = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"].as_str(), Some(jwt.as_str()));
    assert_eq!(body["expires_in"], 300);
    let claims = token::claims(&jwt).unwrap();
    assert_eq!(claims["sub"], USER);
    assert_eq!(claims["aud"], token::SERVICE);
    assert_eq!(claims["iss"], token::ISSUER);
    assert_eq!(claims["access"], json!([{"type": "repository", "name": "berth/busybox", "actions": ["pull", "push"]}]));

    // The registry accepts it.
    let v2 = get(r.port, "/v2/", Some(&format!("Bearer {jwt}")));
    assert_eq!(v2.status, 200, "{}", v2.body);

    // ... and not a token whose claims were changed after signing.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    let mut forged = claims.clone();
    forged["sub"] = json!("mallory");
    parts[1] = token::base64url(&serde_json::to_vec(&forged).unwrap());
    let v2 = get(r.port, "/v2/", Some(&format!("Bearer {}", parts.join("."))));
    assert_eq!(v2.status, 401, "a forged token was accepted");

    // Bad credentials: 401 from the token server.
    for bad in [token::basic_auth(USER, "wrong"), token::basic_auth("mallory", PASSWORD), "Basic !!".to_string()] {
        let t = get(ts.port, &token_path("repository:berth/busybox:pull"), Some(&bad));
        assert_eq!(t.status, 401, "{bad}: {}", t.body);
        assert!(t.header("WWW-Authenticate").is_some_and(|h| h.starts_with("Basic ")));
    }

    // Anonymous: pull only.
    let t = get(ts.port, &token_path("repository:berth/busybox:pull,push"), None);
    assert_eq!(t.status, 200, "{}", t.body);
    let claims = token::claims(t.json()["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], "");
    assert_eq!(claims["access"], json!([{"type": "repository", "name": "berth/busybox", "actions": ["pull"]}]));

    // Another service: 400.
    let t = get(ts.port, "/token?service=elsewhere&scope=repository%3Ax%3Apull", Some(&good));
    assert_eq!(t.status, 400, "{}", t.body);
}

fn skopeo(tmp: &Path, args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        // skopeo keeps big temporary files in TMPDIR (default /var/tmp): keep them in ours.
        .env("TMPDIR", tmp)
        .output()
        .expect("running skopeo (apt install skopeo)")
}

#[test]
fn skopeo_push_and_pull_through_token_auth() {
    let r = Registry::start(Variant::TokenAuth).expect("starting docker-registry with token auth");
    let tmp = tempfile::Builder::new().prefix("berth-testkit-skopeo-").tempdir().unwrap();
    let archive = tmp.path().join("busybox.tar");
    let layout = image::write_oci_archive(&archive, "latest");
    let creds = format!("{USER}:{PASSWORD}");
    let dest = format!("docker://{}/berth/busybox:latest", r.host());

    let push = skopeo(
        tmp.path(),
        &[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-tls-verify=false",
            &format!("oci-archive:{}:latest", archive.display()),
            &dest,
        ],
    );
    assert!(push.status.success(), "skopeo push: {}", String::from_utf8_lossy(&push.stderr));

    // Anonymous clients may not push ...
    let anon_push = skopeo(
        tmp.path(),
        &[
            "copy",
            "--dest-no-creds",
            "--dest-tls-verify=false",
            &format!("oci-archive:{}:latest", archive.display()),
            &format!("docker://{}/berth/anon:latest", r.host()),
        ],
    );
    let err = String::from_utf8_lossy(&anon_push.stderr);
    assert!(!anon_push.status.success(), "an anonymous push went through");
    assert!(err.contains("denied") || err.contains("unauthorized"), "anonymous push failed otherwise: {err}");

    // ... but may pull: the manifest is the one the test kit wrote, byte for byte.
    let raw = skopeo(tmp.path(), &["inspect", "--raw", "--no-creds", "--tls-verify=false", &dest]);
    assert!(raw.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(image::sha256(&raw.stdout), layout.manifest);

    // Copy it back with credentials into an OCI layout.
    let back = tmp.path().join("back");
    let pull = skopeo(
        tmp.path(),
        &["copy", "--src-creds", &creds, "--src-tls-verify=false", &dest, &format!("oci:{}:latest", back.display())],
    );
    assert!(pull.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&pull.stderr));
    let index: Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], layout.manifest.as_str());
    let layer = back.join("blobs/sha256").join(&layout.layer["sha256:".len()..]);
    assert!(layer.exists(), "the layer blob came back");
}
