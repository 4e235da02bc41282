//! Image commands with Docker's output: `images` flags and filters, `history`, `image inspect`,
//! `save` (docker-archive and oci-archive, read back by berth and by skopeo), `export` of
//! stopped and running containers (read back by `import`), `system df`, and `system check`
//! finding and repairing a damaged store.

mod common;

use std::process::{Command, Stdio};

use common::Berth;
use serde_json::Value;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// The entries of a tar file: (path, type, content of small files).
fn tar_entries(path: &std::path::Path) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    use std::io::Read;
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        if kind.is_file() && e.size() < (1 << 20) {
            e.read_to_end(&mut data).unwrap();
        }
        out.push((p, kind, data));
    }
    out
}

fn json_of(entries: &[(String, tar::EntryType, Vec<u8>)], name: &str) -> Value {
    let e = entries.iter().find(|e| e.0 == name).unwrap_or_else(|| panic!("{name} is not in the archive"));
    serde_json::from_slice(&e.2).unwrap()
}

#[test]
fn images_history_and_inspect_in_dockers_shape() {
    let b = Berth::new("img-ls");
    let id = b.ok(&["images", "-q", "--no-trunc"]).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");

    let out = b.ok(&["images"]);
    let ls = lines(&out);
    assert!(ls[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"), "{out}");
    assert!(ls[1].starts_with("busybox      latest    "), "{out}");
    assert!(ls[1].contains(&id[7..19]) && ls[1].contains("years ago"), "{out}");
    let out = b.ok(&["images", "--digests"]);
    assert!(lines(&out)[0].contains("TAG       DIGEST    "), "{out}");
    assert!(lines(&out)[1].contains("<none>"), "a loaded image has no repo digest: {out}");
    let out = b.ok(&["images", "-a", "--format", "{{.Repository}}|{{.Tag}}|{{.ID}}|{{.CreatedAt}}"]);
    assert_eq!(out, format!("busybox|latest|{}|1970-01-01 00:00:00 +0000 UTC\n", &id[7..19]));
    let j: Value = serde_json::from_str(b.ok(&["images", "--format", "json"]).trim()).unwrap();
    assert_eq!(j["Repository"], "busybox");

    // A second image: committed from a container, with a label, newer than busybox.
    b.ok(&["run", "--name", "c1", "--network", "none", "busybox", "sh", "-c", "echo hi > /hi.txt"]);
    b.ok(&["commit", "-c", "LABEL role=web", "c1", "web:v1"]);
    b.ok(&["rm", "c1"]);
    b.ok(&["tag", "web:v1", "127.0.0.1:5000/team/web:v2"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = b.ok(&a).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["-f", "label=role=web"]), ["127.0.0.1:5000/team/web:v2", "web:v1"]);
    assert_eq!(names(&["-f", "label=role"]).len(), 2);
    assert_eq!(names(&["-f", "label=role=db"]), Vec::<String>::new());
    assert_eq!(names(&["-f", "reference=busy*"]), ["busybox:latest"]);
    assert_eq!(names(&["-f", "reference=web:v*"]), ["web:v1"]);
    assert_eq!(names(&["-f", "reference=*/*/*"]), ["127.0.0.1:5000/team/web:v2"]);
    assert_eq!(names(&["-f", "reference=busybox", "-f", "reference=web"]), ["busybox:latest", "web:v1"]);
    assert_eq!(names(&["web"]), ["web:v1"]);
    assert_eq!(names(&["-f", "since=busybox"]), ["127.0.0.1:5000/team/web:v2", "web:v1"]);
    assert_eq!(names(&["-f", "before=web:v1"]), ["busybox:latest"]);
    assert_eq!(names(&["-f", "dangling=true"]), Vec::<String>::new());
    assert_eq!(names(&["-f", "dangling=false"]).len(), 3);
    let (code, _, err) = b.run(&["images", "-f", "color=red"]);
    assert!(code != 0 && err.contains("invalid filter 'color'"), "{err}");

    // history: newest first, the top line with the image id, sizes of the layers.
    let out = b.ok(&["history", "127.0.0.1:5000/team/web:v2"]);
    let ls = lines(&out);
    let header: Vec<&str> = ls[0].split("   ").map(str::trim).filter(|s| !s.is_empty()).collect();
    assert_eq!(header, ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], "{out}");
    assert_eq!(ls.len(), 3, "{out}");
    assert!(!ls[1].starts_with("<missing>") && ls[2].starts_with("<missing>"), "{out}");
    assert!(ls[2].contains("berth-testkit: busybox-static") && ls[2].contains("MB"), "{out}");
    let out = b.ok(&["history", "--no-trunc", "-H=false", "--format", "{{.ID}} {{.Size}}", "busybox"]);
    let (hid, size) = out.trim().split_once(' ').unwrap();
    assert_eq!(hid, id);
    assert!(size.parse::<u64>().unwrap() > 500_000, "{out}");
    assert_eq!(b.ok(&["image", "history", "-q", "busybox"]).trim(), &id[7..19]);
    let (code, _, err) = b.run(&["history", "nothing:here"]);
    assert!(code == 1 && err.contains("No such image: nothing:here"), "{err}");

    // inspect: Docker's keys.
    let v: Value = serde_json::from_str(&b.ok(&["image", "inspect", "busybox"])).unwrap();
    let i = &v[0];
    assert_eq!(i["Id"], id.as_str());
    assert_eq!(i["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(i["RepoDigests"], serde_json::json!([]));
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(i["Config"]["Tty"], false);
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Created"], "1970-01-01T00:00:00Z");
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(i["GraphDriver"]["Name"], "overlay");
    assert!(i["Size"].as_u64().unwrap() > 500_000);
    assert_eq!(b.ok(&["inspect", "-f", "{{.Config.Labels.role}}", "127.0.0.1:5000/team/web:v2"]).trim(), "web");
    assert_eq!(b.ok(&["image", "inspect", "-f", "{{.Architecture}}", "busybox"]).trim(), berth_testkit::image::arch());

    // Tags moved away leave a dangling image.
    b.ok(&["tag", "busybox", "web:v1"]);
    b.ok(&["tag", "busybox", "127.0.0.1:5000/team/web:v2"]);
    assert_eq!(names(&["-f", "dangling=true"]), ["<none>:<none>"]);
    assert_eq!(names(&["-f", "dangling=false"]).len(), 3);
}

#[test]
fn save_and_load_round_trip_in_both_formats() {
    let b = Berth::new("img-save");
    let id = b.ok(&["images", "-q", "--no-trunc"]).trim().to_string();
    b.ok(&["tag", "busybox", "busybox:other"]);
    let docker = b.g.path("saved.tar");
    b.ok(&["save", "-o", docker.to_str().unwrap(), "busybox"]);
    let entries = tar_entries(&docker);
    let m = json_of(&entries, "manifest.json");
    assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", &id[7..]));
    let mut tags: Vec<String> =
        m[0]["RepoTags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
    tags.sort();
    assert_eq!(tags, ["busybox:latest", "busybox:other"], "a repository saves all its tags");
    // Layers as uncompressed tars named by their diff ids.
    let cfg: Value = serde_json::from_str(&b.ok(&["image", "inspect", "busybox"])).unwrap();
    let diff = cfg[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    assert_eq!(m[0]["Layers"][0], format!("blobs/sha256/{}", &diff[7..]));
    let index = json_of(&entries, "index.json");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert!(entries.iter().any(|e| e.0 == "oci-layout"));
    // skopeo reads it as a docker-archive and as an OCI layout.
    for src in [
        format!("docker-archive:{}:busybox:latest", docker.display()),
        format!("oci-archive:{}:latest", docker.display()),
    ] {
        let o = Command::new("skopeo").args(["inspect", "--config", &src]).output().expect("skopeo");
        assert!(o.status.success(), "skopeo inspect {src}: {}", String::from_utf8_lossy(&o.stderr));
        let c: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], diff.as_str());
    }
    // One tag only; to stdout.
    let o = b.cmd(&["save", "busybox:other"]).stdout(Stdio::piped()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let piped = b.g.path("piped.tar");
    std::fs::write(&piped, &o.stdout).unwrap();
    assert_eq!(json_of(&tar_entries(&piped), "manifest.json")[0]["RepoTags"], serde_json::json!(["busybox:other"]));
    // oci-archive keeps the stored manifest (and so its digest).
    let oci = b.g.path("oci.tar");
    b.ok(&["save", "--format", "oci-archive", "-o", oci.to_str().unwrap(), "busybox:latest"]);
    let manifest_digest = b.g.path("root/images/blobs/sha256");
    let entries = tar_entries(&oci);
    let index = json_of(&entries, "index.json");
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    assert!(manifest_digest.join(&md[7..]).exists(), "the stored manifest {md}");
    assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], "docker.io/library/busybox:latest");

    // Back: remove everything, load each, run.
    b.ok(&["rmi", "busybox:other"]);
    b.ok(&["rmi", "busybox"]);
    let out = b.ok(&["load", "-i", docker.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest") && out.contains("Loaded image: busybox:other"), "{out}");
    assert_eq!(b.ok(&["images", "-q", "--no-trunc"]).trim(), id, "same image id");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "busybox:other", "echo", "loaded"]), "loaded\n");
    b.ok(&["rmi", "busybox:other"]);
    b.ok(&["rmi", "busybox"]);
    let out = b.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert_eq!(b.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "busybox", "echo", "again"]), "again\n");

    // Errors: nothing written.
    let bad = b.g.path("bad.tar");
    let (code, _, err) = b.run(&["save", "-o", bad.to_str().unwrap(), "nothing:here"]);
    assert!(code == 1 && err.contains("No such image: nothing:here"), "{err}");
    for args in [&["rmi", "nothing"][..], &["tag", "nothing:here", "other"], &["history", "nothing"]] {
        let (code, _, err) = b.run(args);
        assert!(code == 1 && err.contains("No such image: nothing:"), "{args:?}: {err}");
    }
    assert!(!bad.exists());
    let (code, _, err) = b.run(&["save", "--format", "zip", "-o", bad.to_str().unwrap(), "busybox"]);
    assert!(code != 0 && err.contains("unsupported --format"), "{err}");
    let left: Vec<_> = std::fs::read_dir(b.g.path(""))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".bad"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn export_stopped_and_running_containers() {
    let b = Berth::new("img-export");
    // Stopped, with an added file, a deleted file and a changed one.
    b.ok(&[
        "run",
        "--name",
        "stopped",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo new > /new.txt && rm -f /bin/vi && echo changed > /etc/hostname.orig && ln -f /new.txt /hard.txt",
    ]);
    let out = b.g.path("stopped.tar");
    b.ok(&["export", "-o", out.to_str().unwrap(), "stopped"]);
    let e = tar_entries(&out);
    let find = |p: &str| e.iter().find(|x| x.0 == p);
    // Hardlinks: the first name in order holds the data, the other links to it.
    assert_eq!(find("hard.txt").map(|x| (x.1, x.2.as_slice())), Some((tar::EntryType::Regular, &b"new\n"[..])));
    assert_eq!(find("new.txt").map(|x| x.1), Some(tar::EntryType::Link));
    assert!(find("bin/busybox").is_some() && find("bin/").is_some());
    assert!(find("bin/vi").is_none(), "a deleted file is not exported");
    assert!(!e.iter().any(|x| x.0.starts_with('/') || x.0.contains("..")));
    // Nothing stays mounted (the leak guard checks too), the container still starts.
    assert_eq!(b.ok(&["start", "-a", "stopped"]), "");

    // Running: what it writes shows up.
    b.ok(&[
        "run",
        "-d",
        "--name",
        "running",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo live > /live.txt; sleep 300",
    ]);
    let mut found = false;
    for _ in 0..50 {
        let o = b.cmd(&["container", "export", "running"]).stdout(Stdio::piped()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let p = b.g.path("running.tar");
        std::fs::write(&p, &o.stdout).unwrap();
        if tar_entries(&p).iter().any(|x| x.0 == "live.txt" && x.2 == b"live\n") {
            found = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(found, "the running container's file is in the export");
    assert_eq!(b.ok(&["exec", "running", "cat", "/live.txt"]), "live\n");
    b.ok(&["rm", "-f", "running"]);

    // What export writes, import takes back.
    b.ok(&["import", out.to_str().unwrap(), "exported:v1"]);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "exported:v1", "cat", "/new.txt"]), "new\n");
    // -c sets the new image's config, as commit's -c does.
    b.ok(&[
        "import",
        "-c",
        r#"CMD ["cat", "/new.txt"]"#,
        "-c",
        "ENV GREETING=hi",
        out.to_str().unwrap(),
        "exported:v2",
    ]);
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "exported:v2"]), "new\n");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "exported:v2", "sh", "-c", "echo $GREETING"]), "hi\n");
    let (code, _, err) = b.run(&["export", "-o", b.g.path("x.tar").to_str().unwrap(), "nothing"]);
    assert!(code != 0 && err.contains("nothing"), "{err}");
    assert!(!b.g.path("x.tar").exists());
}

#[test]
fn system_df_counts_images_containers_and_volumes() {
    let b = Berth::new("img-df");
    let out = b.ok(&["system", "df"]);
    let ls = lines(&out);
    assert_eq!(ls[0].split_whitespace().collect::<Vec<_>>(), ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    assert!(ls[1].starts_with("Images          1         0 "), "{out}");
    assert!(ls[1].ends_with("(100%)"), "nothing uses the image: {out}");
    assert!(ls[2].starts_with("Containers      0         0         0B"), "{out}");
    assert!(ls[3].starts_with("Local Volumes   0         0         0B"), "{out}");
    assert!(ls[4].starts_with("Build Cache"), "{out}");

    b.ok(&["volume", "create", "data"]);
    b.ok(&[
        "run",
        "--name",
        "ww",
        "--network",
        "none",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "head -c 5000 /dev/zero > /data/f && head -c 3000 /dev/zero > /big",
    ]);
    let f = |t: &str| {
        b.ok(&["system", "df", "--format", "{{.Type}}={{.TotalCount}}/{{.Active}}/{{.Size}}/{{.Reclaimable}}"])
            .lines()
            .find(|l| l.starts_with(t))
            .unwrap()
            .to_string()
    };
    assert!(f("Images").starts_with("Images=1/1/"), "{}", f("Images"));
    assert!(f("Images").ends_with("/0B (0%)"), "{}", f("Images"));
    assert_eq!(f("Containers"), "Containers=1/0/3kB/3kB (100%)");
    assert_eq!(f("Local Volumes"), "Local Volumes=1/1/5kB/0B (0%)");
    let out = b.ok(&["system", "df", "-v"]);
    assert!(out.starts_with("Images space usage:\n\nREPOSITORY"), "{out}");
    assert!(out.contains("SHARED SIZE   UNIQUE SIZE   CONTAINERS"), "{out}");
    assert!(out.contains("\nContainers space usage:\n\nCONTAINER ID"), "{out}");
    assert!(
        out.contains("\nLocal Volumes space usage:\n\nVOLUME NAME   LINKS     SIZE\ndata          1         5kB\n"),
        "{out}"
    );
    assert!(out.ends_with("Build cache usage: 0B\n"), "{out}");
    b.ok(&["rm", "ww"]);
}

#[test]
fn system_check_compares_unpacked_layers_with_their_blobs() {
    let b = Berth::new("img-layercheck");
    b.ok(&["create", "--name", "keep", "--network", "none", "busybox", "true"]);
    let layers: Vec<std::path::PathBuf> =
        std::fs::read_dir(b.g.path("root/storage/layers")).unwrap().flatten().map(|e| e.path().join("diff")).collect();
    assert_eq!(layers.len(), 1);
    assert!(b.ok(&["system", "check"]).ends_with("No problems found.\n"));
    // A file planted in the layer (what a host intruder or a bad disk leaves).
    std::fs::write(layers[0].join("planted"), b"x").unwrap();
    let (code, out, err) = b.run(&["system", "check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("differs from its blob") && out.contains("/planted is not in the layer's tar"), "{out}");
    // A container's root is made of it: reported, not removed.
    let (code, out, _) = b.run(&["system", "check", "--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("none while container keep uses it"), "{out}");
    assert!(layers[0].join("planted").exists());
    // Without the container, the repair removes it and the next run unpacks it again.
    b.ok(&["rm", "keep"]);
    let (code, out, err) = b.run(&["system", "check", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired (remove the layer"), "{out}");
    assert!(!b.ok(&["run", "--rm", "--network", "none", "busybox", "ls", "/"]).contains("planted"));
    assert!(b.ok(&["system", "check"]).ends_with("No problems found.\n"));
    // A changed file is found too.
    let busybox = layers[0].join("bin/busybox");
    let mut f = std::fs::OpenOptions::new().append(true).open(&busybox).unwrap();
    std::io::Write::write_all(&mut f, b"\0").unwrap();
    let out = b.run(&["system", "check"]).1;
    assert!(out.contains("/bin/busybox: "), "{out}");
}

#[test]
fn system_check_finds_and_repairs_a_damaged_store() {
    let b = Berth::new("img-check");
    let out = b.ok(&["system", "check"]);
    assert!(
        out.starts_with("Checked 3 blobs, 0 layers and 1 images.\n") && out.ends_with("No problems found.\n"),
        "{out}"
    );
    b.ok(&["create", "--name", "keep", "busybox", "true"]);
    b.ok(&["run", "--name", "cc", "--network", "none", "busybox", "true"]);
    b.ok(&["commit", "cc", "second:v1"]);
    b.ok(&["rm", "cc"]);
    assert!(b.ok(&["system", "check"]).ends_with("No problems found.\n"));

    // Damage: the committed image's layer blob rots, a layer loses its layer.json, a short
    // link goes, a temp file of a dead process stays, a stray blob appears.
    let v: Value = serde_json::from_str(&b.ok(&["image", "inspect", "second:v1"])).unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_string();
    let blobs = b.g.path("root/images/blobs/sha256");
    let cfg: Value = serde_json::from_slice(&std::fs::read(blobs.join(&id[7..])).unwrap()).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let manifests: Vec<Value> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter(|m| m["config"]["digest"] == id.as_str())
        .collect();
    let top = manifests[0]["layers"][1]["digest"].as_str().unwrap().to_string();
    let len = std::fs::metadata(blobs.join(&top[7..])).unwrap().len() as usize;
    std::fs::write(blobs.join(&top[7..]), vec![b'x'; len]).unwrap();
    let layers: Vec<std::path::PathBuf> =
        std::fs::read_dir(b.g.path("root/storage/layers")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(layers.len(), 2);
    let second = layers
        .iter()
        .find(|l| std::fs::read_to_string(l.join("layer.json")).unwrap().contains("\"parent\":\"sha256"))
        .unwrap();
    std::fs::remove_file(second.join("layer.json")).unwrap();
    let first = layers.iter().find(|l| *l != second).unwrap();
    let links: Vec<_> = std::fs::read_dir(b.g.path("root/storage/l")).unwrap().flatten().map(|e| e.path()).collect();
    let first_link = links
        .iter()
        .find(|l| {
            std::fs::read_link(l).unwrap().to_string_lossy().contains(&*first.file_name().unwrap().to_string_lossy())
        })
        .unwrap();
    std::fs::remove_file(first_link).unwrap();
    std::fs::write(b.g.path("root/images/tmp/blob-999999999-0-0"), b"half").unwrap();
    let stray = berth_testkit::image::sha256(b"stray");
    std::fs::write(blobs.join(&stray[7..]), b"stray").unwrap();

    let (code, out, err) = b.run(&["system", "check"]);
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        format!("blob {top} is corrupt"),
        "layer.json is unreadable".to_string(),
        "has no short link".to_string(),
        format!("image {}", &id[7..19]),
        format!("its layer blob {top} is missing"),
        format!("blob {stray} belongs to no image"),
        "blob-999999999-0-0 was left by an interrupted operation".to_string(),
        "problems found: run `berth system check --repair`".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} in {out}");
    }
    // Nothing changed without --repair.
    assert!(blobs.join(&stray[7..]).exists());

    let (code, out, err) = b.run(&["system", "check", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired (remove the image)") && out.contains("problems found and repaired."), "{out}");
    let out = b.ok(&["system", "check"]);
    assert!(out.ends_with("No problems found.\n"), "{out}");
    // The broken image is gone, busybox and its container work.
    assert_eq!(b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "busybox:latest\n");
    assert_eq!(b.ok(&["start", "-a", "keep"]), "");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", "busybox", "echo", "whole"]), "whole\n");
    b.ok(&["rm", "keep"]);
}

#[test]
fn image_group_commands_and_the_prune_report() {
    let b = Berth::new("img-group");
    // An image a running container uses: rmi -f by id is refused (Docker's "cannot be
    // forced"); by name it only untags.
    let id = b.ok(&["images", "-q", "--no-trunc", "busybox"]).trim().to_string();
    b.ok(&["tag", "busybox", "other:1"]);
    let c = b.ok(&["run", "-d", "--network", "none", "other:1", "sleep", "60"]);
    let (code, _, err) = b.run(&["rmi", "-f", &id]);
    assert!(code == 1 && err.contains("(cannot be forced) - image is being used by running container"), "{err}");
    assert_eq!(b.ok(&["rmi", "-f", "other:1"]), "Untagged: other:1\n");
    b.ok(&["rm", "-f", c.trim()]);
    b.ok(&["image", "tag", "busybox", "copy:1"]);
    assert!(b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).contains("copy:1"));
    // SIZE is the unpacked size, as inspect's (Docker's), not the compressed blobs'.
    let bytes: f64 = b.ok(&["image", "inspect", "-f", "{{.Size}}", "busybox"]).trim().parse().unwrap();
    let shown = b.ok(&["images", "--format", "{{.Size}}", "busybox"]);
    let mb: f64 = shown.trim().strip_suffix("MB").expect("a size in MB").parse().unwrap();
    assert!((mb * 1e6 - bytes).abs() < bytes / 100.0, "{shown} vs {bytes}");
    assert_eq!(b.ok(&["image", "rm", "copy:1"]), "Untagged: copy:1\n");
    let archive = b.g.path("bb.tar");
    b.ok(&["image", "save", "-o", archive.to_str().unwrap(), "busybox"]);
    let out = b.ok(&["image", "rm", "busybox"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    let out = b.ok(&["image", "load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    // Docker's report: what went, then the space given back.
    let out = b.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Images:\nuntagged: busybox:latest\ndeleted: sha256:"), "{out}");
    let total = out.lines().last().unwrap();
    assert!(total.starts_with("Total reclaimed space: ") && total != "Total reclaimed space: 0B", "{out}");
    assert_eq!(b.ok(&["image", "prune", "-f"]), "Total reclaimed space: 0B\n");
}
