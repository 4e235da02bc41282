//! Debian's docker-registry on a free 127.0.0.1 port with storage in a temp dir: plain HTTP,
//! TLS with a certificate made at start, basic auth (htpasswd), or token auth (Bearer JWTs
//! from the test kit's own token server, [`crate::token`]). Stops on drop.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token::TokenServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    Tls,
    /// TLS that also requires a client certificate signed by the same CA
    /// ([`Registry::client_cert`]).
    TlsClientCert,
    BasicAuth,
    /// `auth: token`: the registry answers 401 with `WWW-Authenticate: Bearer realm=..,
    /// service=..` and trusts JWTs from [`Registry::token`] (see [`crate::token`] for who gets
    /// what: USER/PASSWORD get what they ask for, anonymous clients get pull only).
    TokenAuth,
}

pub const USER: &str = "berth";
pub const PASSWORD: &str = "s3cret-pass";

pub struct Registry {
    child: Child,
    pub port: u16,
    pub variant: Variant,
    pub dir: tempfile::TempDir,
    /// For `Variant::Tls`: the CA (PEM) that signed the registry's certificate, what clients
    /// should trust (e.g. as `certs.d/127.0.0.1:PORT/ca.crt`).
    pub ca_cert: Option<PathBuf>,
    /// For `Variant::TlsClientCert`: a client certificate and its key (PEM) the registry takes.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The token server for `Variant::TokenAuth`.
    pub token: Option<TokenServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    pub fn start(variant: Variant) -> std::io::Result<Registry> {
        let dir = tempfile::Builder::new().prefix("berth-testkit-registry-").tempdir()?;
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut ca_cert = None;
        let mut client_cert = None;
        if matches!(variant, Variant::Tls | Variant::TlsClientCert) {
            // A CA and a server certificate it signs: rustls (like browsers) refuses a CA
            // certificate used as the server's own, which `openssl req -x509` alone would make.
            let d = dir.path();
            let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
            let ext = d.join("server-ext.cnf");
            std::fs::write(
                &ext,
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )?;
            let ok = |c: &mut Command| -> std::io::Result<()> {
                let st = c.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
                if st.success() { Ok(()) } else { Err(std::io::Error::other("openssl could not make a certificate")) }
            };
            let (ca_key, csr) = (d.join("ca.key"), d.join("server.csr"));
            ok(Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=berth-testkit-ca"])
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca))?;
            ok(Command::new("openssl")
                .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&csr))?;
            ok(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&ca)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert))?;
            cfg.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            if variant == Variant::TlsClientCert {
                let (ccert, ckey, ccsr, cext) =
                    (d.join("client.cert"), d.join("client.key"), d.join("client.csr"), d.join("client-ext.cnf"));
                std::fs::write(&cext, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")?;
                ok(Command::new("openssl")
                    .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=berth-testkit-client", "-keyout"])
                    .arg(&ckey)
                    .arg("-out")
                    .arg(&ccsr))?;
                ok(Command::new("openssl")
                    .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                    .arg(&ccsr)
                    .arg("-CA")
                    .arg(&ca)
                    .arg("-CAkey")
                    .arg(&ca_key)
                    .arg("-extfile")
                    .arg(&cext)
                    .arg("-out")
                    .arg(&ccert))?;
                cfg.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
                client_cert = Some((ccert, ckey));
            }
            ca_cert = Some(ca);
        }
        if variant == Variant::BasicAuth {
            let out = Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]).output()?;
            if !out.status.success() {
                return Err(std::io::Error::other("htpasswd failed (apt install apache2-utils)"));
            }
            let f = dir.path().join("htpasswd");
            std::fs::write(&f, out.stdout)?;
            cfg.push_str(&format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", f.display()));
        }
        let mut token = None;
        if variant == Variant::TokenAuth {
            let t = TokenServer::start(dir.path())?;
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm(),
                crate::token::SERVICE,
                crate::token::ISSUER,
                t.cert.display()
            ));
            token = Some(t);
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let r = Registry { child, port, variant, dir, ca_cert, client_cert, token };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("docker-registry did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        let scheme = if matches!(self.variant, Variant::Tls | Variant::TlsClientCert) { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Stop the token server before the temp dir with its key goes.
        drop(self.token.take());
    }
}
