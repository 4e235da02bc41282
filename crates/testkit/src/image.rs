//! The busybox test image, built only from the host's busybox-static binary.
//! Same binary in, same bytes and digests out: entries are sorted, owners 0, mtimes 0, and the
//! gzip header carries no time or name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

/// Applet paths relative to / (e.g. `bin/sh`, `usr/bin/wget`), sorted.
pub fn applets() -> Vec<String> {
    let out = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .expect("running /bin/busybox --list-full (apt install busybox-static)");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && l != "bin/busybox")
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Files of the minimal /etc.
pub fn etc_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("etc/group", "root:x:0:\nnobody:x:65534:\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    ]
}

const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("proc", 0o755),
    ("root", 0o700),
    ("sbin", 0o755),
    ("sys", 0o755),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/www", 0o755),
];

/// Writes the rootfs into `dir` (which must exist).
pub fn write_rootfs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (d, mode) in DIRS {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).expect("copying /bin/busybox");
    for a in applets() {
        let p = dir.join(&a);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink("/bin/busybox", &p).unwrap();
    }
    for (f, content) in etc_files() {
        std::fs::write(dir.join(f), content).unwrap();
    }
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The rootfs as an uncompressed tar layer.
pub fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (d, mode) in DIRS {
        let mut h = header(&format!("{d}/"), tar::EntryType::Directory, *mode, 0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    let bin = std::fs::read(BUSYBOX).expect("reading /bin/busybox (apt install busybox-static)");
    let mut h = header("bin/busybox", tar::EntryType::Regular, 0o755, bin.len() as u64);
    h.set_cksum();
    b.append(&h, &bin[..]).unwrap();
    for a in applets() {
        let mut h = header(&a, tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("/bin/busybox").unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    for (f, content) in etc_files() {
        let mut h = header(f, tar::EntryType::Regular, 0o644, content.len() as u64);
        h.set_cksum();
        b.append(&h, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Digests of what [`write_oci_layout`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub manifest: String,
    pub config: String,
    pub layer: String,
    pub diff_id: String,
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let p = dir.join("blobs/sha256").join(&d["sha256:".len()..]);
    std::fs::write(p, data).unwrap();
    d
}

/// An OCI image layout of busybox in `dir`, tagged `ref_name` (e.g. "latest").
pub fn write_oci_layout(dir: &Path, ref_name: &str) -> Layout {
    write_oci_layout_of(dir, ref_name, &layer_tar())
}

/// An OCI image layout in `dir` whose one layer is `tar` (gzipped here): for images built to
/// test what a puller does with them.
pub fn write_oci_layout_of(dir: &Path, ref_name: &str, tar: &[u8]) -> Layout {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_id = sha256(tar);
    let gz = gzip(tar);
    let layer = put_blob(dir, &gz);
    let config = serde_json::json!({
        "architecture": arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "berth-testkit: busybox-static"}]
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_d = put_blob(dir, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": gz.len()}]
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_d = put_blob(dir, &mbytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_d,
            "size": mbytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Layout { dir: dir.to_path_buf(), manifest: manifest_d, config: config_d, layer, diff_id }
}

/// The layout as an oci-archive tarball (what `docker save`/`podman save --format oci-archive`
/// give), deterministic as well.
pub fn write_oci_archive(path: &Path, ref_name: &str) -> Layout {
    let tmp = tempfile::tempdir().unwrap();
    let l = write_oci_layout(tmp.path(), ref_name);
    let mut files = Vec::new();
    collect(tmp.path(), tmp.path(), &mut files);
    files.sort();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for rel in files {
        let full = tmp.path().join(&rel);
        if full.is_dir() {
            let mut h = header(&format!("{rel}/"), tar::EntryType::Directory, 0o755, 0);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        } else {
            let data = std::fs::read(&full).unwrap();
            let mut h = header(&rel, tar::EntryType::Regular, 0o644, data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
    }
    b.finish().unwrap();
    Layout { dir: path.to_path_buf(), ..l }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        if p.is_dir() {
            collect(base, &p, out);
        }
    }
}

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let la = write_oci_layout(a.path(), "latest");
        let lb = write_oci_layout(b.path(), "latest");
        assert_eq!((la.manifest, la.config, la.layer), (lb.manifest, lb.config, lb.layer));
        // The layer holds the shell and a passwd file.
        let tar = layer_tar();
        let mut ar = tar::Archive::new(&tar[..]);
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert!(names.iter().any(|n| n == "bin/sh"));
        assert!(names.iter().any(|n| n == "etc/passwd"));
    }
}
