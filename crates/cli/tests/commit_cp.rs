//! `commit` (a container's changes as a new image) and `cp` (both ways, through symlinks that a
//! container plants, for running and stopped containers).

mod common;

use common::Berth;

#[test]
fn commit_makes_an_image_of_the_changes() {
    let b = Berth::new("commit");
    b.ok(&[
        "run",
        "--name",
        "src",
        "--network",
        "none",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sh",
        "-c",
        "echo made > /made.txt && rm /bin/vi && mkdir -p /d && touch /d/x",
    ]);
    let id = b.ok(&[
        "commit",
        "-m",
        "a note",
        "-a",
        "me",
        "-c",
        "CMD cat /made.txt",
        "-c",
        "ENV K=V",
        "src",
        "committed:v1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "committed:v1"]), "made\n");
    // Deletions, the container's environment and -c changes are in the image.
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "committed:v1",
        "sh",
        "-c",
        "echo $K $FROM_RUN; test -e /bin/vi || echo vi-gone; ls /d",
    ]);
    assert_eq!(out, "V 1\nvi-gone\nx\n");
    let author = b.ok(&["inspect", "-f", "{{.Config.Cmd}}", "committed:v1"]);
    assert!(author.contains("cat /made.txt"), "{author}");
    // The source container can go; the image stays usable, and a commit of a commit stacks.
    b.ok(&["rm", "src"]);
    b.ok(&["run", "--name", "second", "--network", "none", "committed:v1", "sh", "-c", "echo more >> /made.txt"]);
    b.ok(&["commit", "second", "committed:v2"]);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "committed:v2", "cat", "/made.txt"]), "made\nmore\n");
    // Without -c CMD the image runs what the container ran, as Docker commits it; inspect of
    // a container shows its entrypoint and command apart.
    assert_eq!(
        b.ok(&["inspect", "-f", "{{json .Config.Cmd}}", "committed:v2"]).trim(),
        r#"["sh","-c","echo more >> /made.txt"]"#
    );
    b.ok(&["create", "--name", "ep", "--network", "none", "--entrypoint", "echo", "busybox", "a", "b"]);
    assert_eq!(b.inspect("ep", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}"), r#"["echo"] ["a","b"]"#);
    b.ok(&["commit", "ep", "committed:ep"]);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "committed:ep"]), "a b\n");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "committed:ep", "c"]), "c\n");
    b.ok(&["rm", "ep"]);
    let (code, _, err) = b.run(&["commit", "-c", "RUN rm -rf /", "second", "bad:v1"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be changed"), "{err}");
}

#[test]
fn cp_copies_both_ways_without_leaving_the_container() {
    let b = Berth::new("cp");
    let id = b.ok(&["run", "-d", "--network", "none", "busybox", "sleep", "60"]);
    let id = id.trim();
    let host = b.g.path("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f.txt"), "hello\n").unwrap();
    // Host to container, into a directory.
    b.ok(&["cp", host.join("f.txt").to_str().unwrap(), &format!("{id}:/tmp/")]);
    assert_eq!(b.ok(&["exec", id, "cat", "/tmp/f.txt"]), "hello\n");
    // Container to host: a directory, its symlinks copied as links (not followed).
    b.ok(&["exec", id, "sh", "-c", "mkdir -p /srv/d && echo a > /srv/d/a && ln -s /etc/passwd /srv/d/link"]);
    b.ok(&["cp", &format!("{id}:/srv/d"), host.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(host.join("d/a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_link(host.join("d/link")).unwrap(), std::path::Path::new("/etc/passwd"));
    // -L copies what a link points to (resolved in the container), under the link's name.
    b.ok(&["exec", id, "sh", "-c", "echo real > /srv/real && ln -s ../srv/real /srv/rel && ln -s /srv/rel /srv/abs"]);
    let followed = b.g.path("followed");
    std::fs::create_dir_all(&followed).unwrap();
    b.ok(&["cp", "-L", &format!("{id}:/srv/abs"), followed.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(followed.join("abs")).unwrap(), "real\n");
    assert!(!std::fs::symlink_metadata(followed.join("abs")).unwrap().file_type().is_symlink());
    b.ok(&["cp", &format!("{id}:/srv/abs"), followed.join("kept").to_str().unwrap()]);
    assert_eq!(std::fs::read_link(followed.join("kept")).unwrap(), std::path::Path::new("/srv/rel"));
    // Symlinks planted in the container resolve inside it, in both directions.
    let outside = b.g.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    b.ok(&["exec", id, "sh", "-c", &format!("ln -s {} /pwn && mkdir -p {}", outside.display(), outside.display())]);
    b.ok(&["cp", host.join("f.txt").to_str().unwrap(), &format!("{id}:/pwn/")]);
    assert!(!outside.join("f.txt").exists(), "cp followed a container's symlink out to the host");
    assert_eq!(b.ok(&["exec", id, "cat", &format!("{}/f.txt", outside.display())]), "hello\n");
    b.ok(&["exec", id, "sh", "-c", "ln -s / /up"]);
    std::fs::write(b.g.path("secret"), "host secret\n").unwrap();
    let rel = b.g.path("secret");
    let (code, _, err) = b.run(&["cp", &format!("{id}:/up{}", rel.display()), host.join("stolen").to_str().unwrap()]);
    assert_ne!(code, 0, "read a host file through the container's symlink");
    assert!(err.contains("Could not find"), "{err}");
    // A stopped container: its root is mounted for the copy and unmounted after.
    b.ok(&["rm", "-f", id]);
    let c2 = b.ok(&["create", "--network", "none", "busybox", "true"]);
    let c2 = c2.trim();
    b.ok(&["cp", host.join("f.txt").to_str().unwrap(), &format!("{c2}:/f.txt")]);
    b.ok(&["cp", &format!("{c2}:/f.txt"), host.join("back.txt").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(host.join("back.txt")).unwrap(), "hello\n");
    // -L of a stopped one: /bin/sh is a link to busybox there.
    b.ok(&["cp", "-L", &format!("{c2}:/bin/sh"), host.join("sh").to_str().unwrap()]);
    assert!(std::fs::metadata(host.join("sh")).unwrap().len() > 100_000);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(c2), "the stopped container's root stayed mounted");
    let (code, _, err) = b.run(&["cp", &format!("{c2}:/nope"), host.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("Could not find"), "{err}");
}

#[test]
fn cp_streams_tar_on_stdout_and_from_stdin() {
    use std::io::{Read, Write};
    let b = Berth::new("cp-stream");
    b.ok(&["run", "-d", "--name", "box", "--network", "none", "busybox", "sleep", "60"]);
    // Out: a tar of the path under its own name.
    let o = b.out(&["cp", "box:/etc", "-"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let mut passwd = String::new();
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p == "etc/passwd" {
            e.read_to_string(&mut passwd).unwrap();
        }
        names.push(p);
    }
    assert!(passwd.starts_with("root:"), "{names:?}");
    // In: a tar unpacked into a directory of the container.
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(9);
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_cksum();
    t.append_data(&mut h, "new/f.txt", &b"streamed\n"[..]).unwrap();
    // A symlink in the stream is copied as one, never followed on the host.
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    l.set_mode(0o777);
    l.set_cksum();
    t.append_link(&mut l, "hostetc", "/etc").unwrap();
    let data = t.into_inner().unwrap();
    let mut c = b.cmd(&["cp", "-", "box:/tmp"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(b.ok(&["exec", "box", "cat", "/tmp/new/f.txt"]), "streamed\n");
    assert_eq!(b.ok(&["exec", "box", "stat", "-c", "%u:%g %a", "/tmp/new/f.txt"]).trim(), "1000:1000 640");
    assert_eq!(b.ok(&["exec", "box", "readlink", "/tmp/hostetc"]).trim(), "/etc");
    // Into something that is not a directory: Docker's words.
    let mut c = b.cmd(&["cp", "-", "box:/etc/passwd"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("must be a directory"));
    b.ok(&["rm", "-f", "box"]);
}

#[test]
fn cp_of_a_stopped_container_sees_its_volumes_and_binds() {
    let b = Berth::new("cp-vols");
    let host = b.g.path("bound");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("from-bind"), "b\n").unwrap();
    let bind = format!("{}:/bound", host.display());
    let ro_host = b.g.path("ro");
    std::fs::create_dir_all(&ro_host).unwrap();
    let ro = format!("{}:/ro:ro", ro_host.display());
    b.ok(&[
        "run",
        "--name",
        "stopped",
        "--network",
        "none",
        "-v",
        "data:/data",
        "-v",
        &bind,
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "echo v > /data/from-volume",
    ]);
    let out = b.g.path("out");
    std::fs::create_dir_all(&out).unwrap();
    b.ok(&["cp", "stopped:/data/from-volume", out.to_str().unwrap()]);
    b.ok(&["cp", "stopped:/bound/from-bind", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("from-volume")).unwrap(), "v\n");
    assert_eq!(std::fs::read_to_string(out.join("from-bind")).unwrap(), "b\n");
    // Into the volume, as a running container would see it.
    std::fs::write(out.join("new"), "n\n").unwrap();
    b.ok(&["cp", out.join("new").to_str().unwrap(), "stopped:/data/"]);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "-v", "data:/d", "busybox", "cat", "/d/new"]), "n\n");
    // A read-only bind stays read-only for cp too.
    let (code, _, err) = b.run(&["cp", out.join("new").to_str().unwrap(), "stopped:/ro/"]);
    assert!(code != 0 && err.contains("Read-only file system"), "{err}");
    assert!(!ro_host.join("new").exists());
    // Nothing stays mounted after the copies.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(b.g.path("root").to_str().unwrap()), "{mounts}");
    b.ok(&["rm", "-v", "stopped"]);
    b.ok(&["volume", "rm", "data"]);
}
