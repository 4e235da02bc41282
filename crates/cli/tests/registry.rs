//! `berth pull`, `push`, `login` and `logout` against Debian's docker-registry from the test
//! kit (plain HTTP, TLS, basic auth, token auth), with skopeo as the other client: images
//! pushed by skopeo are pulled and run by berth, images pushed by berth are read back by
//! skopeo, and both agree on the digests. Bad input gets a clear error and leaves nothing in
//! `berth images`. Each test has its own engine root, auth file and certs.d under a leak guard.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use berth_testkit::image::{self, Layout};
use berth_testkit::leak::Guard;
use berth_testkit::registry::{PASSWORD, Registry, USER, Variant};
use serde_json::{Value, json};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

struct Berth {
    g: Guard,
}

impl Berth {
    fn new(tag: &str) -> Berth {
        Berth { g: Guard::new(tag) }
    }

    fn auth_file(&self) -> PathBuf {
        self.g.path("auth.json")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BERTH);
        c.arg("--root").arg(self.g.path("root")).arg("--runroot").arg(self.g.path("run")).args(args);
        // Only what the test sets up: no machine-wide registries file, CAs or credentials.
        c.env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("BERTH_CERTS_D", self.g.path("certs.d"))
            .env("BERTH_REGISTRIES_CONF", self.g.path("registries.toml"))
            .env_remove("DOCKER_CONFIG")
            .env_remove("BERTH_PUSH_CHUNK_SIZE")
            .env_remove("BERTH_MAX_CONCURRENT_DOWNLOADS");
        c.stdin(Stdio::null());
        c
    }

    fn output(mut c: Command) -> (i32, String, String) {
        let o = c.output().expect("running berth");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        Self::output(self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "berth {args:?} failed: {err}{out}");
        out
    }

    /// Runs with `input` on stdin.
    fn run_stdin(&self, args: &[&str], input: &str) -> (i32, String, String) {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("running berth");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Fails with a message containing every one of `want`; returns stderr.
    fn fails(&self, args: &[&str], want: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_ne!(code, 0, "berth {args:?} succeeded: {out}");
        eprintln!("berth {}: {}", args.join(" "), err.trim_end());
        for w in want {
            assert!(err.contains(w), "berth {args:?}: expected {w:?} in {err:?}");
        }
        err
    }

    fn images(&self) -> Vec<String> {
        self.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).lines().map(str::to_string).collect()
    }

    /// Nothing visible, nothing half-written.
    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.images(), Vec::<String>::new(), "{what}: an image is visible");
        for d in ["root/images/tmp", "root/storage/tmp"] {
            let left: Vec<_> = std::fs::read_dir(self.g.path(d)).map(|r| r.flatten().collect()).unwrap_or_default();
            assert!(left.is_empty(), "{what}: {d} holds {left:?}");
        }
    }

    /// A busybox OCI layout under the guard's dir (for skopeo to push).
    fn layout(&self) -> Layout {
        let dir = self.g.path("layout");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        image::write_oci_layout(&dir, "latest")
    }

    fn skopeo(&self, args: &[&str]) -> Output {
        let tmp = self.g.path("skopeo-tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            // skopeo keeps big temporary files in TMPDIR (default /var/tmp): keep them in ours.
            .env("TMPDIR", &tmp)
            .output()
            .expect("running skopeo (apt install skopeo)")
    }

    /// skopeo pushes the test kit's busybox to `r` as `repo_tag`.
    fn skopeo_push(&self, r: &Registry, repo_tag: &str) -> Layout {
        let l = self.layout();
        let dest = format!("docker://{}/{repo_tag}", r.host());
        let src = format!("oci:{}:latest", l.dir.display());
        let creds = format!("{USER}:{PASSWORD}");
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if matches!(r.variant, Variant::BasicAuth | Variant::TokenAuth) {
            args.extend(["--dest-creds", &creds]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        let o = self.skopeo(&args);
        assert!(o.status.success(), "skopeo push: {}", String::from_utf8_lossy(&o.stderr));
        l
    }

    /// Pushes (with skopeo) an image whose one layer is `tar`.
    fn skopeo_push_tar(&self, r: &Registry, repo_tag: &str, tar: &[u8]) -> Layout {
        let dir = self.g.path("layout-of");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let l = image::write_oci_layout_of(&dir, "latest", tar);
        let dest = format!("docker://{}/{repo_tag}", r.host());
        let src = format!("oci:{}:latest", l.dir.display());
        let o = self.skopeo(&["copy", "--dest-tls-verify=false", &src, &dest]);
        assert!(o.status.success(), "skopeo push: {}", String::from_utf8_lossy(&o.stderr));
        l
    }
}

/// One tar entry: path, type, link target, content.
type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// A tar written header by header, past the tar crate's own checks on names and links.
fn raw_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Ok(o) = self.cmd(&["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
    }
}

/// `curl` against the registry: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl").args(["-s", "-w", "\n%{http_code}"]).args(args).output().expect("running curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn short(digest: &str) -> &str {
    &digest["sha256:".len().."sha256:".len() + 12]
}

/// PUTs `manifest` (JSON) as `repo:tag` on a plain registry.
fn put_manifest(r: &Registry, repo: &str, tag: &str, media_type: &str, manifest: &Value) -> String {
    let body = serde_json::to_string(manifest).unwrap();
    let (code, text) = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &body,
        &format!("{}/v2/{repo}/manifests/{tag}", r.url()),
    ]);
    assert_eq!(code, 201, "PUT manifest {repo}:{tag}: {text}");
    image::sha256(body.as_bytes())
}

fn blob(l: &Layout, digest: &str) -> Vec<u8> {
    std::fs::read(l.dir.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
}

/// The file a registry keeps a blob in.
fn registry_blob(r: &Registry, digest: &str) -> PathBuf {
    let hex = &digest["sha256:".len()..];
    r.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn pull_from_plain_registry_then_run_and_pull_policies() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-plain");
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let name = format!("{}/berth/busybox", r.host());

    let out = b.ok(&["pull", &name]);
    let ls = lines(&out);
    assert_eq!(ls[0], "Using default tag: latest", "{out}");
    assert_eq!(ls[1], "latest: Pulling from berth/busybox", "{out}");
    assert!(ls.contains(&format!("{}: Pull complete", short(&l.layer)).as_str()), "{out}");
    assert!(ls.contains(&format!("Digest: {}", l.manifest).as_str()), "{out}");
    assert!(ls.contains(&format!("Status: Downloaded newer image for {name}:latest").as_str()), "{out}");
    assert_eq!(ls.last().copied(), Some(format!("{name}:latest").as_str()), "{out}");
    assert_eq!(b.images(), [format!("{name}:latest")]);
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", &name]).trim(), l.config);

    // Again: nothing to download.
    let out = b.ok(&["pull", &format!("{name}:latest")]);
    assert!(out.contains(&format!("{}: Already exists", short(&l.layer))), "{out}");
    assert!(out.contains(&format!("Status: Image is up to date for {name}:latest")), "{out}");
    assert_eq!(b.ok(&["pull", "-q", &name]), format!("{name}:latest\n"));
    // By digest.
    let out = b.ok(&["pull", &format!("{name}@{}", l.manifest)]);
    assert!(out.contains(&format!("Digest: {}", l.manifest)), "{out}");

    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "hello"]), "hello\n");

    // run pulls what is missing, Docker's lines on stderr.
    let o = b.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{name}:latest"),
        &format!("docker://{name}:v2"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, out, err) = b.run(&["run", "--rm", "--network", "none", &format!("{name}:v2"), "echo", "pulled"]);
    assert_eq!((code, out.as_str()), (0, "pulled\n"), "{err}");
    assert!(err.starts_with(&format!("Unable to find image '{name}:v2' locally\n")), "{err}");
    assert!(err.contains("v2: Pulling from berth/busybox"), "{err}");
    assert!(err.contains(&format!("Status: Downloaded newer image for {name}:v2")), "{err}");
    // --pull never: no pull, Docker's error.
    let (code, _, err) = b.run(&["run", "--rm", "--network", "none", "--pull", "never", &format!("{name}:v3"), "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains(&format!("Unable to find image '{name}:v3' locally")), "{err}");
    assert!(!err.contains("Pulling from"), "{err}");
    // --pull missing (default) for a tag the registry lacks: the pull's error, code 125.
    let (code, _, err) = b.run(&["run", "--rm", "--network", "none", &format!("{name}:v3"), "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("manifest unknown"), "{err}");
    // --pull always: asks the registry even though the image is here.
    let (code, out, err) = b.run(&["run", "--rm", "--network", "none", "--pull", "always", &name, "echo", "again"]);
    assert_eq!((code, out.as_str()), (0, "again\n"), "{err}");
    assert!(err.contains("latest: Pulling from berth/busybox"), "{err}");
    assert!(err.contains("Status: Image is up to date"), "{err}");
    assert!(!err.contains("Unable to find image"), "{err}");
    let id = b.ok(&["create", "--pull", "always", &name, "true"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    b.ok(&["rm", id.trim()]);
    let (code, _, err) = b.run(&["run", "--rm", "--network", "none", "--pull", "sometimes", &name, "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("invalid --pull"), "{err}");

    // A short name through the search list of registries.toml: pulled from that registry,
    // stored under its name, and found again by the short name (no second pull).
    std::fs::write(b.g.path("registries.toml"), format!("unqualified-search-registries = [\"{}\"]\n", r.host()))
        .unwrap();
    let out = b.ok(&["pull", "berth/busybox:v2"]);
    assert!(out.contains(&format!("{name}:v2")), "{out}");
    let (code, out, err) =
        b.run(&["run", "--rm", "--network", "none", "--pull", "never", "berth/busybox:v2", "echo", "short"]);
    assert_eq!((code, out.as_str()), (0, "short\n"), "{err}");
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", "berth/busybox:v2"]).trim(), l.config);
    // rmi by that short name takes that tag only.
    let out = b.ok(&["rmi", "berth/busybox:v2"]);
    assert!(out.starts_with("Untagged: ") && !out.contains("Deleted"), "{out}");
    assert!(b.images().contains(&format!("{name}:latest")), "{:?}", b.images());
}

#[test]
fn pull_picks_the_platform_from_an_index() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-index");
    let l = b.skopeo_push(&r, "berth/multi:latest");
    let size = blob(&l, &l.manifest).len();
    let entry = |arch: &str, variant: Option<&str>| {
        let mut p = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            p["variant"] = json!(v);
        }
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": l.manifest, "size": size, "platform": p})
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("arm64", Some("v8")), entry(image::arch(), None), entry("ppc64le", None)],
    });
    let idx = put_manifest(&r, "berth/multi", "multi", "application/vnd.oci.image.index.v1+json", &index);
    let name = format!("{}/berth/multi:multi", r.host());
    let out = b.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {idx}")), "the digest is the index's: {out}");
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", &name]).trim(), l.config);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "ok"]), "ok\n");
    b.ok(&["rmi", &name]);
    b.fails(&["pull", "--platform", "linux/s390x", &name], &["no image for platform linux/s390x", "linux/arm64/v8"]);
    b.fails(&["pull", "--platform", "linux", &name], &["invalid platform"]);
    b.ok(&["pull", "--platform", "linux/arm64", &name]);
    // A single-platform image is what it is.
    b.fails(
        &["pull", "--platform", "linux/s390x", &format!("{}/berth/multi:latest", r.host())],
        &["does not match the requested linux/s390x"],
    );
    b.assert_nothing_left_but(&[&name]);
}

impl Berth {
    fn assert_nothing_left_but(&self, names: &[&str]) {
        let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(self.images(), want);
    }
}

#[test]
fn tls_registry_needs_its_ca_in_certs_d() {
    let r = Registry::start(Variant::Tls).expect("starting docker-registry with TLS");
    let b = Berth::new("reg-tls");
    let l = b.skopeo_push(&r, "berth/busybox:1");
    let name = format!("{}/berth/busybox:1", r.host());
    // Without the CA: a certificate error, and no downgrade to plain HTTP.
    b.fails(&["pull", &name], &["certificate", "certs.d"]);
    b.assert_nothing_left("an untrusted TLS registry");
    let dir = b.g.path("certs.d").join(r.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(r.ca_cert.as_ref().unwrap(), dir.join("ca.crt")).unwrap();
    let out = b.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {}", l.manifest)), "{out}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "tls"]), "tls\n");
    // And push over TLS.
    b.ok(&["tag", &name, &format!("{}/berth/pushed:1", r.host())]);
    let out = b.ok(&["push", &format!("{}/berth/pushed:1", r.host())]);
    assert!(out.contains(&format!("1: digest: {} size:", l.manifest)), "{out}");
}

#[test]
fn basic_auth_login_pull_push_logout() {
    let r = Registry::start(Variant::BasicAuth).expect("starting docker-registry with basic auth");
    let b = Berth::new("reg-basic");
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let name = format!("{}/berth/busybox", r.host());
    let host = r.host();

    b.fails(&["pull", &name], &["unauthorized", &format!("berth login {host}")]);
    b.assert_nothing_left("a pull without credentials");
    // Bad credentials: refused, nothing stored.
    let (code, _, err) = b.run(&["login", "-u", USER, "-p", "wrong", &host]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("incorrect username or password"), "{err}");
    assert!(!b.auth_file().exists() || !std::fs::read_to_string(b.auth_file()).unwrap().contains(&host));
    let (code, _, err) = b.run_stdin(&["login", "-u", USER, "--password-stdin", &host], "nope\n");
    assert_eq!(code, 1, "{err}");

    let (code, out, err) = b.run_stdin(&["login", "-u", USER, "--password-stdin", &host], &format!("{PASSWORD}\n"));
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"), "{err}");
    let auth: Value = serde_json::from_str(&std::fs::read_to_string(b.auth_file()).unwrap()).unwrap();
    assert_eq!(auth["auths"][&host]["auth"], berth_testkit::token::base64(format!("{USER}:{PASSWORD}").as_bytes()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(b.auth_file()).unwrap().permissions().mode() & 0o777, 0o600);

    let out = b.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {}", l.manifest)), "{out}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "authed"]), "authed\n");
    let out = b.ok(&["tag", &name, &format!("{host}/berth/copy:v1")]);
    assert!(out.is_empty());
    let out = b.ok(&["push", &format!("{host}/berth/copy:v1")]);
    assert!(out.contains(&format!("v1: digest: {} size:", l.manifest)), "{out}");

    assert_eq!(b.ok(&["logout", &host]), format!("Removing login credentials for {host}\n"));
    assert_eq!(b.ok(&["logout", &host]), format!("Not logged in to {host}\n"));
    b.ok(&["rmi", &name]);
    b.fails(&["pull", &name], &["unauthorized"]);
}

#[test]
fn token_auth_anonymous_pull_login_push_mount_and_skopeo_agrees() {
    let r = Registry::start(Variant::TokenAuth).expect("starting docker-registry with token auth");
    let b = Berth::new("reg-token");
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let host = r.host();
    let name = format!("{host}/berth/busybox:latest");

    // Anonymous clients get pull tokens from this token server.
    let out = b.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {}", l.manifest)), "{out}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "token"]), "token\n");
    // ... but not push tokens.
    b.ok(&["tag", &name, &format!("{host}/berth/mine:v1")]);
    b.fails(&["push", &format!("{host}/berth/mine:v1")], &["pushing", "berth login"]);
    // 401 with bad credentials.
    let (code, _, err) = b.run(&["login", "-u", USER, "-p", "bad", &host]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("incorrect username or password"), "{err}");

    let (code, out, err) = b.run_stdin(&["login", "--username", USER, "--password-stdin", &host], PASSWORD);
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"), "{err}");
    let out = b.ok(&["push", &format!("{host}/berth/mine:v1")]);
    let ls = lines(&out);
    assert_eq!(ls[0], format!("The push refers to repository [{host}/berth/mine]"), "{out}");
    // The blob is already in the registry (skopeo pushed it to berth/busybox, where berth
    // pulled it from): mounted, not uploaded again.
    assert!(ls.contains(&format!("{}: Mounted from berth/busybox", short(&l.layer)).as_str()), "{out}");
    let digest_line = format!("v1: digest: {} size: {}", l.manifest, blob(&l, &l.manifest).len());
    assert_eq!(ls.last().copied(), Some(digest_line.as_str()), "{out}");
    let out = b.ok(&["push", &format!("{host}/berth/mine:v1")]);
    assert!(out.contains(&format!("{}: Layer already exists", short(&l.layer))), "{out}");

    // skopeo reads what berth pushed: same manifest digest, blobs verified on copy.
    let creds = format!("{USER}:{PASSWORD}");
    let raw = b.skopeo(&[
        "inspect",
        "--raw",
        "--creds",
        &creds,
        "--tls-verify=false",
        &format!("docker://{host}/berth/mine:v1"),
    ]);
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(image::sha256(&raw.stdout), l.manifest);
    let back = b.g.path("back");
    let o = b.skopeo(&[
        "copy",
        "--src-creds",
        &creds,
        "--src-tls-verify=false",
        &format!("docker://{host}/berth/mine:v1"),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert!(o.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&o.stderr));
    let index: Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], l.manifest.as_str());
}

#[test]
fn layers_stored_uncompressed_are_pushed_gzipped() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let host = r.host();
    let b = Berth::new("reg-push-gz");
    // A docker-archive (`save`) holds its layers as plain tars, and `load` keeps them so.
    let oci = b.g.path("oci.tar");
    image::write_oci_archive(&oci, "busybox:latest");
    b.ok(&["load", "-i", oci.to_str().unwrap()]);
    let archive = b.g.path("busybox.tar");
    b.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    b.ok(&["rmi", "busybox"]);
    b.ok(&["load", "-i", archive.to_str().unwrap()]);
    let name = format!("{host}/gz/busybox:v1");
    b.ok(&["tag", "busybox", &name]);
    let out = b.ok(&["push", &name]);
    assert!(out.contains(": Pushed"), "{out}");
    let raw = b.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{name}")]);
    let m: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layer = &m["layers"][0];
    assert!(layer["mediaType"].as_str().unwrap().ends_with("gzip"), "{m}");
    // The blob is the gzip of the layer whose diff id the config names, and smaller.
    let cfg = b.ok(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", &name]);
    let back = b.g.path("back");
    let o = b.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let digest = layer["digest"].as_str().unwrap();
    let gz = std::fs::read(back.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
    assert_eq!(image::sha256(&gz), digest);
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
    assert!(cfg.contains(&image::sha256(&tar)), "{cfg}");
    assert!(gz.len() < tar.len());
    // The image now has the pushed manifest and layers: a pull of the tag finds them all, a
    // second push sends nothing; no temp file is left and the store is whole.
    b.ok(&["run", "--rm", "--network", "none", &name, "true"]);
    let out = b.ok(&["pull", &name]);
    assert!(out.contains("Already exists") && out.contains("Image is up to date"), "{out}");
    let out = b.ok(&["push", &name]);
    assert!(out.contains("Layer already exists") && !out.contains("Pushed"), "{out}");
    let tmp: Vec<_> =
        std::fs::read_dir(b.g.path("root/images/tmp")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert!(b.ok(&["system", "check"]).ends_with("No problems found.\n"));
    // Another engine pulls and runs it.
    let b2 = Berth::new("reg-push-gz-2");
    assert_eq!(b2.ok(&["run", "--rm", "--network", "none", &name, "echo", "gz"]), "gz\n");
}

#[test]
fn push_monolithic_and_chunked_then_skopeo_pulls_it_back() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let host = r.host();
    for (tag, chunk) in [("mono", None), ("chunked", Some("65536"))] {
        let b = Berth::new(&format!("reg-push-{tag}"));
        let archive = b.g.path("busybox.tar");
        let l = image::write_oci_archive(&archive, &format!("{host}/mine/{tag}:v1"));
        let out = b.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(out.contains(&format!("Loaded image: {host}/mine/{tag}:v1")), "{out}");
        let mut c = b.cmd(&["push", &format!("{host}/mine/{tag}:v1")]);
        if let Some(n) = chunk {
            c.env("BERTH_PUSH_CHUNK_SIZE", n);
        }
        let (code, out, err) = Berth::output(c);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("{}: Pushed", short(&l.layer))), "{out}");
        assert!(out.contains(&format!("v1: digest: {} size:", l.manifest)), "{out}");
        let raw = b.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{host}/mine/{tag}:v1")]);
        assert_eq!(image::sha256(&raw.stdout), l.manifest, "{}", String::from_utf8_lossy(&raw.stderr));
        let back = b.g.path("back");
        let o = b.skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/mine/{tag}:v1"),
            &format!("oci:{}:v1", back.display()),
        ]);
        assert!(o.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&o.stderr));
        let layer = std::fs::read(back.join("blobs/sha256").join(&l.layer["sha256:".len()..])).unwrap();
        assert_eq!(image::sha256(&layer), l.layer);
        // Pushing into another repository of the same registry mounts the layer.
        b.ok(&["tag", &format!("{host}/mine/{tag}:v1"), &format!("{host}/other/{tag}:v2")]);
        let out = b.ok(&["push", &format!("{host}/other/{tag}:v2")]);
        assert!(out.contains(&format!("{}: Mounted from mine/{tag}", short(&l.layer))), "{out}");
    }
    let b = Berth::new("reg-push-bad");
    b.fails(
        &["push", &format!("{host}/nothing/here:v1")],
        &[&format!("An image does not exist locally with the tag: {host}/nothing/here")],
    );
    b.fails(&["push", &format!("{host}/x@sha256:{}", "a".repeat(64))], &["cannot push a digest reference"]);
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-bad");
    let host = r.host();
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let manifest: Value = serde_json::from_slice(&blob(&l, &l.manifest)).unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json";

    // A tag that does not exist.
    b.fails(
        &["pull", &format!("{host}/berth/busybox:nope")],
        &[&format!("manifest for {host}/berth/busybox:nope not found"), "manifest unknown"],
    );
    b.fails(&["pull", &format!("{host}/berth/nothing")], &["not found"]);
    b.assert_nothing_left("a missing tag");

    // An unreachable registry.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    b.fails(
        &["pull", &format!("127.0.0.1:{free}/berth/busybox")],
        &[&format!("registry 127.0.0.1:{free} is unreachable"), "refused"],
    );
    b.assert_nothing_left("an unreachable registry");

    // A manifest that lies about a layer's size, both ways.
    for (tag, delta) in [("bigger", 100i64), ("smaller", -100)] {
        let mut m = manifest.clone();
        m["layers"][0]["size"] = json!(m["layers"][0]["size"].as_i64().unwrap() + delta);
        put_manifest(&r, "berth/busybox", tag, mt, &m);
        let name = format!("{host}/berth/busybox:{tag}");
        b.fails(&["pull", &name], &[&format!("pulling {name}"), &format!("layer {}", l.layer), "size mismatch"]);
        b.assert_nothing_left(&format!("a manifest with a {tag} size"));
    }

    // Unsupported media types: a layer's, a config's (an artifact, not an image), a manifest's.
    let mut m = manifest.clone();
    m["layers"][0]["mediaType"] = json!("application/vnd.example.unknown");
    put_manifest(&r, "berth/busybox", "badlayer", mt, &m);
    let name = format!("{host}/berth/busybox:badlayer");
    b.fails(
        &["pull", &name],
        &[
            &format!("pulling {name}"),
            &format!("layer {}", l.layer),
            "unsupported layer media type \"application/vnd.example.unknown\"",
        ],
    );
    let mut m = manifest.clone();
    m["config"]["mediaType"] = json!("application/vnd.example.config+json");
    put_manifest(&r, "berth/busybox", "artifact", mt, &m);
    b.fails(
        &["pull", &format!("{host}/berth/busybox:artifact")],
        &["unsupported media type \"application/vnd.example.config+json\"", "not a container image"],
    );
    b.assert_nothing_left("unsupported media types");

    // A corrupted blob in the registry's storage: same size, other bytes.
    let path = registry_blob(&r, &l.layer);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; len]).unwrap();
    let name = format!("{host}/berth/busybox:latest");
    b.fails(&["pull", &name], &[&format!("pulling {name}"), &format!("layer {}", l.layer), "digest mismatch"]);
    let (code, _, err) = b.run(&["run", "--rm", "--network", "none", &name, "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("digest mismatch"), "{err}");
    b.assert_nothing_left("a corrupted blob");
    // Nothing unverified entered the store either.
    let bad = b.g.path("root/images/blobs/sha256").join(&l.layer["sha256:".len()..]);
    assert!(!bad.exists(), "the corrupted layer is in the store");

    // Not a registry at all.
    b.fails(&["pull", "127.0.0.1:1/x"], &["unreachable"]);
    b.fails(&["pull", "Invalid/Name"], &["invalid reference format"]);
    // After all of it, the store checks out (the failed pulls took back what they stored).
    b.ok(&["system", "check"]);
}

#[test]
fn killed_pull_leaves_nothing_half_done_and_the_next_pull_finishes() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-kill");
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let name = format!("{}/berth/busybox:latest", r.host());
    for ms in [2u64, 10, 25, 50] {
        let mut c = b.cmd(&["pull", &name]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let imgs = b.images();
        // Either the pull got all the way (then the image is whole) or nothing shows.
        if !imgs.is_empty() {
            assert_eq!(imgs, std::slice::from_ref(&name));
            assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "whole"]), "whole\n");
            b.ok(&["rmi", &name]);
        }
    }
    let out = b.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {}", l.manifest)), "{out}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &name, "echo", "done"]), "done\n");
    for d in ["root/images/tmp", "root/storage/tmp"] {
        let left: Vec<_> = std::fs::read_dir(b.g.path(d)).unwrap().flatten().collect();
        assert!(left.is_empty(), "{d} holds what killed pulls left: {left:?}");
    }
}

#[test]
fn pull_all_tags_and_digests() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-all-tags");
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let repo = format!("{}/berth/busybox", r.host());
    for t in ["v1", "v2"] {
        let o = b.skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{repo}:latest"),
            &format!("docker://{repo}:{t}"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = b.ok(&["pull", "-a", &repo]);
    let ls = lines(&out);
    for t in ["latest", "v1", "v2"] {
        assert!(ls.contains(&format!("{t}: Pulling from berth/busybox").as_str()), "{out}");
    }
    assert!(!out.contains("Using default tag"), "{out}");
    assert_eq!(ls.last().copied(), Some(repo.as_str()), "{out}");
    let mut imgs = b.images();
    imgs.sort();
    assert_eq!(imgs, [format!("{repo}:latest"), format!("{repo}:v1"), format!("{repo}:v2")]);
    assert_eq!(b.ok(&["pull", "-a", "-q", &repo]), format!("{repo}\n"));
    b.fails(&["pull", "-a", &format!("{repo}:v1")], &["tag can't be used with --all-tags/-a"]);
    b.fails(&["pull", "-a", &format!("{}/berth/nothing", r.host())], &["not found"]);
    // The digest the registry gave, in images --digests, inspect and NAME@DIGEST.
    let out = b.ok(&["images", "--digests", "--format", "{{.Tag}} {{.Digest}}", &repo]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|x| x.ends_with(&format!(" {}", l.manifest))), "{out}");
    let rd = b.ok(&["image", "inspect", "-f", "{{json .RepoDigests}}", &format!("{repo}:v1")]);
    assert_eq!(rd.trim(), format!("[\"{repo}@{}\"]", l.manifest));
    assert_eq!(
        b.ok(&["run", "--rm", "--network", "none", &format!("{repo}@{}", l.manifest), "echo", "by digest"]),
        "by digest\n"
    );
}

#[test]
fn progress_bars_on_a_terminal() {
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-bars");
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let name = format!("{}/berth/busybox", r.host());
    // `script` gives berth a pseudo-terminal as its stdout.
    let root = b.g.path("root");
    let run = b.g.path("run");
    let cmdline = format!("{BERTH} --root {} --runroot {} pull {name}", root.display(), run.display());
    let mut c = Command::new("script");
    c.args(["-qec", &cmdline, "/dev/null"]).env("TERM", "xterm");
    for (k, v) in b.cmd(&[]).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.stdin(Stdio::null()).output().expect("running script (util-linux)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}");
    assert!(out.contains('\u{1b}'), "drawn with terminal escapes: {out:?}");
    let pos = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s:?} missing in {out:?}"));
    assert!(pos("latest: Pulling from berth/busybox") < pos(&format!("{}: Pull complete", short(&l.layer))));
    assert!(pos(&format!("{}: Pull complete", short(&l.layer))) < pos("Status: Downloaded newer image"));
    assert_eq!(b.images(), [format!("{name}:latest")]);
}

/// A `docker-credential-berthtest` in `dir`: keeps what `store` gets in files, one per server.
fn fake_helper(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"#!/bin/sh
d="$(dirname "$0")/store"
mkdir -p "$d"
input=$(cat)
echo "$1" >> "$(dirname "$0")/calls.log"
key() { printf %s "$1" | tr -c 'A-Za-z0-9' _; }
case "$1" in
  get) if [ -f "$d/$(key "$input")" ]; then cat "$d/$(key "$input")"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) url=$(printf %s "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/'); printf %s "$input" > "$d/$(key "$url")" ;;
  erase) if [ -f "$d/$(key "$input")" ]; then rm "$d/$(key "$input")"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) exit 2 ;;
esac
"#;
    let p = dir.join("docker-credential-berthtest");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn credential_helpers_hold_the_secrets() {
    let r = Registry::start(Variant::BasicAuth).expect("starting docker-registry with basic auth");
    let b = Berth::new("reg-helper");
    b.skopeo_push(&r, "berth/busybox:latest");
    let host = r.host();
    let name = format!("{host}/berth/busybox");
    let bin = b.g.path("helper-bin");
    fake_helper(&bin);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let with_path = |args: &[&str], stdin: Option<&str>| -> (i32, String, String) {
        let mut c = b.cmd(args);
        c.env("PATH", &path).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into(),
            String::from_utf8_lossy(&o.stderr).into(),
        )
    };
    std::fs::write(b.auth_file(), r#"{"credsStore": "berthtest"}"#).unwrap();
    let (code, _, err) = with_path(&["pull", &name], None);
    assert!(code != 0 && err.contains("unauthorized") && err.contains("docker-credential-berthtest"), "{err}");
    let (code, out, err) = with_path(&["login", "-u", USER, "--password-stdin", &host], Some(PASSWORD));
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"), "{err}");
    // The secret went to the helper; the file keeps an empty entry.
    let auth = std::fs::read_to_string(b.auth_file()).unwrap();
    assert!(!auth.contains("\"auth\""), "{auth}");
    let v: Value = serde_json::from_str(&auth).unwrap();
    assert_eq!(v["auths"][&host], json!({}));
    assert_eq!(v["credsStore"], "berthtest");
    let (code, out, err) = with_path(&["pull", &name], None);
    assert_eq!(code, 0, "{err}{out}");
    let calls = std::fs::read_to_string(bin.join("calls.log")).unwrap();
    assert!(calls.contains("store") && calls.contains("get"), "{calls}");
    // credHelpers for this registry names the helper too (credsStore unset).
    b.ok(&["rmi", &name]);
    std::fs::write(b.auth_file(), format!(r#"{{"credHelpers": {{"{host}": "berthtest"}}}}"#)).unwrap();
    let (code, _, err) = with_path(&["pull", &name], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = with_path(&["logout", &host], None);
    assert_eq!((code, out.as_str()), (0, format!("Removing login credentials for {host}\n").as_str()), "{err}");
    assert!(std::fs::read_to_string(bin.join("calls.log")).unwrap().contains("erase"));
    b.ok(&["rmi", &name]);
    let (code, _, err) = with_path(&["pull", &name], None);
    assert!(code != 0 && err.contains("unauthorized"), "{err}");
    // Helpers that are missing or named like paths: clear errors.
    std::fs::write(b.auth_file(), format!(r#"{{"credHelpers": {{"{host}": "../../bin/sh"}}}}"#)).unwrap();
    b.fails(&["pull", &name], &["invalid credential helper name"]);
    std::fs::write(b.auth_file(), r#"{"credsStore": "nosuchhelper"}"#).unwrap();
    b.fails(&["pull", &name], &["docker-credential-nosuchhelper"]);
}

#[test]
fn client_certificates_from_certs_d() {
    let r = Registry::start(Variant::TlsClientCert).expect("starting docker-registry with client certificates");
    let b = Berth::new("reg-client-cert");
    let host = r.host();
    let archive = b.g.path("busybox.tar");
    let l = image::write_oci_archive(&archive, &format!("{host}/berth/cc:v1"));
    b.ok(&["load", "-i", archive.to_str().unwrap()]);
    let dir = b.g.path("certs.d").join(&host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(r.ca_cert.as_ref().unwrap(), dir.join("ca.crt")).unwrap();
    // Without a client certificate the registry hangs up during the handshake.
    b.fails(&["push", &format!("{host}/berth/cc:v1")], &["pushing"]);
    let (cert, key) = r.client_cert.clone().unwrap();
    std::fs::copy(&cert, dir.join("client.cert")).unwrap();
    // A certificate without its key: named.
    b.fails(&["push", &format!("{host}/berth/cc:v1")], &["client.key is missing"]);
    std::fs::copy(&key, dir.join("client.key")).unwrap();
    let out = b.ok(&["push", &format!("{host}/berth/cc:v1")]);
    assert!(out.contains(&format!("v1: digest: {}", l.manifest)), "{out}");
    b.ok(&["rmi", &format!("{host}/berth/cc:v1")]);
    let out = b.ok(&["pull", &format!("{host}/berth/cc:v1")]);
    assert!(out.contains(&format!("Digest: {}", l.manifest)), "{out}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &format!("{host}/berth/cc:v1"), "echo", "mtls"]), "mtls\n");
}

#[test]
fn hostile_layers_full_disks_and_bad_credentials_fail_clearly_and_leave_nothing() {
    use tar::EntryType::{Link, Regular, Symlink};
    let r = Registry::start(Variant::Plain).expect("starting docker-registry");
    let b = Berth::new("reg-hostile");
    let host = r.host();
    let escaped = |what: &str| {
        // Nothing named "escaped" anywhere under the test's directory but the registry's.
        let found = Command::new("find")
            .arg(b.g.path(""))
            .args(["-name", "escaped*", "-not", "-path", "*/registry*", "-not", "-path", "*/root/storage/*"])
            .output()
            .unwrap();
        let found = String::from_utf8_lossy(&found.stdout).into_owned();
        assert!(found.trim().is_empty(), "{what}: written outside the layer: {found}");
    };
    let cases: &[(&str, Vec<Entry>, &str)] = &[
        (
            "traversal",
            vec![("../../../escaped-traversal", Regular, "", b"x")],
            "layer entry ../../../escaped-traversal",
        ),
        ("hardlink", vec![("h", Link, "../../../../etc/hostname", b"")], "../../../../etc/hostname: path traversal"),
    ];
    for (tag, entries, want) in cases {
        let l = b.skopeo_push_tar(&r, &format!("hostile/{tag}:latest"), &raw_tar(entries));
        let name = format!("{host}/hostile/{tag}:latest");
        b.fails(&["pull", &name], &[&format!("pulling {name}"), &format!("layer {}", l.layer), want]);
        b.assert_nothing_left(tag);
        escaped(tag);
    }
    // Through a symlink to "/": contained, the file lands inside the layer.
    let entries: &[Entry] = &[
        ("s", Symlink, "/", b""),
        ("tmp/", tar::EntryType::Directory, "", b""),
        ("s/tmp/escaped-symlink", Regular, "", b"in"),
    ];
    b.skopeo_push_tar(&r, "hostile/symlink:latest", &raw_tar(entries));
    let name = format!("{host}/hostile/symlink:latest");
    b.ok(&["pull", &name]);
    escaped("symlink");
    let layers =
        Command::new("find").arg(b.g.path("root/storage")).args(["-name", "escaped-symlink"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&layers.stdout).contains("/diff/tmp/escaped-symlink"),
        "the file is not in the layer"
    );
    b.ok(&["rmi", &name]);
    // A tar bomb, against the limits of berth.toml: a clear error, nothing left.
    let l = b.skopeo_push(&r, "berth/busybox:latest");
    let name = format!("{host}/berth/busybox:latest");
    std::fs::write(b.g.path("berth.toml"), "max-layer-entries = 10\n").unwrap();
    let mut c = b.cmd(&["pull", &name]);
    c.env("BERTH_CONFIG", b.g.path("berth.toml"));
    let (code, _, err) = Berth::output(c);
    assert!(code != 0 && err.contains(&format!("layer {}", l.layer)) && err.contains("more than 10 entries"), "{err}");
    b.assert_nothing_left("a tar bomb");
    // A full disk during the unpack: the store on a 1 MiB tmpfs.
    let small = b.g.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&small).status().unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let out = Command::new(BERTH)
        .arg("--root")
        .arg(small.join("root"))
        .arg("--runroot")
        .arg(b.g.path("run-small"))
        .args(["pull", &name])
        .env("BERTH_REGISTRIES_CONF", b.g.path("registries.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("No space left on device"), "{err}");
    let images = Command::new(BERTH)
        .arg("--root")
        .arg(small.join("root"))
        .arg("--runroot")
        .arg(b.g.path("run-small"))
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&images.stdout), "", "an image is visible after a full disk");
    let check = Command::new(BERTH)
        .arg("--root")
        .arg(small.join("root"))
        .arg("--runroot")
        .arg(b.g.path("run-small"))
        .args(["system", "check"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "system check after a full disk: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // And the store of the other cases checks out.
    b.ok(&["system", "check"]);
}

#[test]
fn bad_stored_credentials_get_the_registrys_refusal() {
    let r = Registry::start(Variant::BasicAuth).expect("starting docker-registry with basic auth");
    let b = Berth::new("reg-badcreds");
    b.skopeo_push(&r, "berth/busybox:latest");
    // An auth file with the wrong password (as a login that has since changed would leave).
    let wrong =
        Command::new("sh").args(["-c", &format!("printf %s '{USER}:not-{PASSWORD}' | base64 -w0")]).output().unwrap();
    let wrong = String::from_utf8_lossy(&wrong.stdout).into_owned();
    std::fs::write(b.auth_file(), json!({"auths": {r.host(): {"auth": wrong}}}).to_string()).unwrap();
    let name = format!("{}/berth/busybox:latest", r.host());
    b.fails(&["pull", &name], &[&format!("pulling {name}"), "unauthorized", "auth.json"]);
    b.assert_nothing_left("bad credentials");
}
