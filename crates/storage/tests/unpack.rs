//! The unpacker against hostile and tricky layers. Runs as root (owners, whiteouts, devices).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_storage::{Limits, unpack::unpack};

/// A tar built entry by entry, bypassing the tar crate's own path checks.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }
    fn raw(mut self, path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>) -> Tar {
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_000_000);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(self, path: &str, data: &[u8]) -> Tar {
        self.raw(path, tar::EntryType::Regular, 0o644, data, None)
    }
    fn dir(self, path: &str, mode: u32) -> Tar {
        self.raw(path, tar::EntryType::Directory, mode, b"", None)
    }
    fn symlink(self, path: &str, target: &str) -> Tar {
        self.raw(path, tar::EntryType::Symlink, 0o777, b"", Some(target))
    }
    fn hardlink(self, path: &str, target: &str) -> Tar {
        self.raw(path, tar::EntryType::Link, 0o644, b"", Some(target))
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn run(t: Tar, dest: &Path) -> anyhow::Result<berth_storage::Stats> {
    unpack(&t.bytes()[..], dest, &Limits::default())
}

#[test]
fn files_dirs_links_and_metadata() {
    let d = tempfile::tempdir().unwrap();
    let t = Tar::new()
        .dir("ro/", 0o555)
        .file("ro/inside", b"x")
        .file("a/b/c.txt", b"hello")
        .symlink("link", "/a/b/c.txt")
        .hardlink("hard", "a/b/c.txt");
    let s = run(t, d.path()).unwrap();
    assert_eq!(s.entries, 5);
    let root = d.path();
    assert_eq!(std::fs::read(root.join("a/b/c.txt")).unwrap(), b"hello");
    let m = std::fs::metadata(root.join("a/b/c.txt")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mtime()), (1000, 1000, 1_000_000));
    assert_eq!(std::fs::read_link(root.join("link")).unwrap().to_str(), Some("/a/b/c.txt"));
    assert_eq!(std::fs::metadata(root.join("hard")).unwrap().ino(), m.ino());
    assert_eq!(std::fs::metadata(root.join("ro")).unwrap().permissions().mode() & 0o7777, 0o555);
    assert_eq!(std::fs::read(root.join("ro/inside")).unwrap(), b"x");
}

#[test]
fn escapes_are_refused_or_contained() {
    let outer = tempfile::tempdir().unwrap();
    let d = outer.path().join("layer");
    std::fs::create_dir(&d).unwrap();
    // `..` is refused outright.
    let e = run(Tar::new().file("../evil", b"x"), &d).unwrap_err().to_string();
    assert!(e.contains("path traversal"), "{e}");
    assert!(!outer.path().join("evil").exists());
    // Through a symlink pointing outside: the write lands inside the layer.
    let t = Tar::new().symlink("esc", outer.path().to_str().unwrap()).file("esc/owned", b"x");
    run(t, &d).unwrap();
    assert!(!outer.path().join("owned").exists(), "a write escaped through a symlink");
    let inside = d.join(outer.path().strip_prefix("/").unwrap()).join("owned");
    assert!(inside.exists(), "the write should be contained at {}", inside.display());
    // Absolute paths are relative to the layer.
    let e2 = outer.path().join("abs");
    std::fs::create_dir(&e2).unwrap();
    run(Tar::new().file(&format!("{}/x", outer.path().join("abs").display()), b"x"), &d).unwrap();
    assert!(!outer.path().join("abs/x").exists());
    // A hardlink to a host file is refused.
    let host = outer.path().join("secret");
    std::fs::write(&host, b"s").unwrap();
    let r = run(Tar::new().hardlink("h", "../secret"), &d);
    assert!(r.is_err());
    let r = run(Tar::new().symlink("s", "/").hardlink("h2", &format!("s{}", host.display())), &d);
    assert!(r.is_err() || std::fs::metadata(d.join("h2")).unwrap().ino() != std::fs::metadata(&host).unwrap().ino());
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let d = tempfile::tempdir().unwrap();
    let t = Tar::new().dir("etc/", 0o755).file("etc/.wh.gone", b"").file("opaque/.wh..wh..opq", b"");
    run(t, d.path()).unwrap();
    let m = std::fs::symlink_metadata(d.path().join("etc/gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0, "a 0/0 char device");
    let mut buf = [0u8; 8];
    let p = std::ffi::CString::new(d.path().join("opaque").to_str().unwrap()).unwrap();
    let k = std::ffi::CString::new("trusted.overlay.opaque").unwrap();
    // SAFETY: getxattr into a local buffer.
    let n = unsafe { libc::getxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(&buf[..n.max(0) as usize], b"y");
}

#[test]
fn whiteouts_of_the_directory_itself_are_refused() {
    for name in ["etc/.wh.", "etc/.wh..", "etc/.wh...", ".wh..."] {
        let d = tempfile::tempdir().unwrap();
        let t = Tar::new().dir("etc/", 0o755).file("etc/keep", b"k").file(name, b"");
        let e = run(t, d.path()).unwrap_err().to_string();
        assert!(e.contains("not a valid whiteout"), "{name}: {e}");
        assert_eq!(std::fs::read(d.path().join("etc/keep")).unwrap(), b"k", "{name} emptied etc/");
    }
}

#[test]
fn bombs_and_devices_hit_limits() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tar::new();
    for i in 0..20 {
        t = t.file(&format!("f{i}"), &[0u8; 1024]);
    }
    let bytes = t.bytes();
    let few = Limits { max_entries: 10, ..Limits::default() };
    assert!(unpack(&bytes[..], d.path(), &few).unwrap_err().to_string().contains("more than 10 entries"));
    let small = Limits { max_bytes: 4096, ..Limits::default() };
    assert!(unpack(&bytes[..], d.path(), &small).unwrap_err().to_string().contains("bytes"));
    let nodev = Limits { allow_devices: false, ..Limits::default() };
    let t = Tar::new().raw("dev/sda", tar::EntryType::Block, 0o600, b"", None);
    assert!(unpack(&t.bytes()[..], d.path(), &nodev).unwrap_err().to_string().contains("device nodes"));
}

#[test]
fn later_entries_replace_earlier_ones_and_owners_hold() {
    let d = tempfile::tempdir().unwrap();
    let owned = |t: Tar, path: &str, kind: tar::EntryType, mode: u32, uid: u64, gid: u64| -> Tar {
        let mut t = t;
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        t.0.append(&h, &b""[..]).unwrap();
        t
    };
    let t = Tar::new()
        .file("f", b"first")
        .file("f", b"second")
        .dir("d/", 0o755)
        .file("d/inner", b"x")
        .file("d", b"now a file")
        .file("x", b"a file")
        .dir("x/", 0o750)
        .symlink("l", "/old")
        .symlink("l", "/new")
        .file("h", b"h");
    let t = owned(t, "o/", tar::EntryType::Directory, 0o755, 1000, 1000);
    // The same directory again, owned by root: the later owner wins.
    let t = owned(t, "o/", tar::EntryType::Directory, 0o755, 0, 0);
    // Root-owned files below a set-group-id directory still get group 0.
    let t = owned(t, "sg/", tar::EntryType::Directory, 0o2775, 0, 1234);
    let t = owned(t, "sg/root-file", tar::EntryType::Regular, 0o644, 0, 0);
    let t = owned(t, "plain-root", tar::EntryType::Regular, 0o644, 0, 0);
    run(t, d.path()).unwrap();
    let root = d.path();
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"second");
    assert_eq!(std::fs::read(root.join("d")).unwrap(), b"now a file");
    assert!(std::fs::metadata(root.join("x")).unwrap().is_dir());
    assert_eq!(std::fs::read_link(root.join("l")).unwrap().to_str(), Some("/new"));
    let o = std::fs::metadata(root.join("o")).unwrap();
    assert_eq!((o.uid(), o.gid()), (0, 0));
    let sg = std::fs::metadata(root.join("sg")).unwrap();
    assert_eq!((sg.gid(), sg.mode() & 0o7777), (1234, 0o2775));
    let f = std::fs::metadata(root.join("sg/root-file")).unwrap();
    assert_eq!((f.uid(), f.gid()), (0, 0));
    let p = std::fs::metadata(root.join("plain-root")).unwrap();
    assert_eq!((p.uid(), p.gid()), (0, 0));
}
