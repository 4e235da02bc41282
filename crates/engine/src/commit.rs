//! `berth commit`: a container's changes (its overlay upper dir) become a new layer on top of its
//! image, with the container's settings and `-c` Dockerfile instructions in the new config.

use anyhow::{Context, Result, bail};
use berth_image::manifest::{Descriptor, media};
use berth_image::{Digest, Reference, archive};
use berth_storage::RootFs;
use serde_json::{Value, json};

use crate::{Engine, layer};

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub reference: Option<String>,
    pub message: String,
    pub author: String,
    /// `-c`: CMD, ENTRYPOINT, ENV, LABEL, EXPOSE, WORKDIR, USER, VOLUME, STOPSIGNAL, ONBUILD.
    pub changes: Vec<String>,
    /// Pause the container while its files are read (Docker's default).
    pub pause: bool,
}

impl Engine {
    /// Returns the new image's id.
    pub fn commit(&self, key: &str, o: &CommitOptions) -> Result<Digest> {
        let c = self.container(key)?;
        let reference = o.reference.as_deref().map(Reference::parse).transpose()?;
        let mut changes = Vec::new();
        for ch in &o.changes {
            changes.push(parse_change(ch)?);
        }
        let _l = self.store_lock(false)?;
        let image = self.resolve_image(&c.image)?;
        let paused = o.pause && c.state == "running" && self.pause_container(&c.id, true).is_ok();
        let made = (|| -> Result<Digest> {
            let upper = RootFs::path(&self.layers, &c.id).changes()?;
            let l = layer::store_layer(&self.store, &upper, &self.root.join("images").join("tmp"), None)?;
            let mut cfg: Value = serde_json::from_slice(&self.store.read(&image.id)?)?;
            let now = berth_runtime::state::now_rfc3339();
            let cc = &mut cfg["config"];
            if !cc.is_object() {
                *cc = json!({});
            }
            cc["Env"] = json!(c.config.env.iter().filter(|e| !e.starts_with("HOSTNAME=")).collect::<Vec<_>>());
            cc["Labels"] = json!(c.config.labels);
            if !c.config.workdir.is_empty() {
                cc["WorkingDir"] = json!(c.config.workdir);
            }
            if !c.config.user.is_empty() {
                cc["User"] = json!(c.config.user);
            }
            if !c.config.exposed.is_empty() {
                cc["ExposedPorts"] = c.config.exposed.iter().map(|p| (p.clone(), json!({}))).collect();
            }
            // The container's command, as Docker commits it (the image's, unless run gave
            // another; containers made before the split was recorded keep the image's).
            if c.config.entrypoint_len.is_some() {
                let (entry, cmd) = c.config.entrypoint_and_cmd();
                let list = |v: &[String]| if v.is_empty() { Value::Null } else { json!(v) };
                cc["Entrypoint"] = list(entry);
                cc["Cmd"] = list(cmd);
            }
            for (instr, v) in &changes {
                apply_change(cc, instr, v.clone());
            }
            cfg["created"] = json!(now);
            if !o.author.is_empty() {
                cfg["author"] = json!(o.author);
            }
            if !cfg["rootfs"]["diff_ids"].is_array() {
                bail!("the image's config has no rootfs.diff_ids");
            }
            if let Some(d) = cfg["rootfs"]["diff_ids"].as_array_mut() {
                d.push(json!(l.diff_id.to_string()));
            }
            let entry = json!({
                "created": now,
                "created_by": c.config.args.join(" "),
                "author": o.author,
                "comment": o.message,
            });
            match cfg["history"].as_array_mut() {
                Some(h) => h.push(entry),
                None => cfg["history"] = json!([entry]),
            }
            let cbytes = serde_json::to_vec(&cfg)?;
            let cd = self.store.put_bytes(&cbytes)?;
            let mut layers: Vec<Descriptor> = self.manifest_of(&image)?.layers;
            for d in &mut layers {
                // One OCI manifest: Docker's media types become their OCI twins.
                if d.media_type == media::DOCKER_LAYER_GZIP {
                    d.media_type = media::OCI_LAYER_GZIP.into();
                }
            }
            layers.push(Descriptor::new(media::OCI_LAYER_GZIP, l.blob, l.size as i64));
            let m = archive::put_manifest(
                &self.store,
                Descriptor::new(media::OCI_CONFIG, cd, cbytes.len() as i64),
                layers,
            )?;
            let id = self.register(&m, reference.as_ref())?;
            let row = self.resolve_image(&id.to_string())?;
            self.prepare_layers(&row)?;
            self.container_event(&c, "commit", &[("comment", &o.message)]);
            Ok(id)
        })();
        if paused {
            let _ = self.pause_container(&c.id, false);
        }
        made.with_context(|| format!("committing container {}", c.name))
    }
}

/// One `-c` instruction: its keyword and its value for the image config.
pub fn parse_change(s: &str) -> Result<(String, Value)> {
    let s = s.trim();
    let (word, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    let rest = rest.trim();
    let word = word.to_ascii_uppercase();
    let words = |r: &str| -> Vec<String> { r.split_whitespace().map(str::to_string).collect() };
    let cmd = |r: &str| -> Value {
        match serde_json::from_str::<Vec<String>>(r) {
            Ok(v) => json!(v),
            Err(_) => json!(["/bin/sh", "-c", r]),
        }
    };
    let v = match word.as_str() {
        "CMD" | "ENTRYPOINT" => cmd(rest),
        "ENV" | "LABEL" => {
            let mut m = serde_json::Map::new();
            if rest.contains('=') {
                for kv in words(rest) {
                    let (k, v) =
                        kv.split_once('=').with_context(|| format!("invalid {word} {kv:?}: expected key=value"))?;
                    m.insert(k.into(), json!(v.trim_matches('"')));
                }
            } else {
                let (k, v) =
                    rest.split_once(char::is_whitespace).with_context(|| format!("invalid {word} {rest:?}"))?;
                m.insert(k.into(), json!(v.trim()));
            }
            Value::Object(m)
        }
        "EXPOSE" | "VOLUME" => json!(serde_json::from_str::<Vec<String>>(rest).unwrap_or_else(|_| words(rest))),
        "WORKDIR" | "USER" | "STOPSIGNAL" => json!(rest),
        "ONBUILD" => json!(rest),
        other => bail!(
            "invalid change {s:?}: {other} cannot be changed by commit (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)"
        ),
    };
    if rest.is_empty() {
        bail!("invalid change {s:?}: {word} needs a value");
    }
    Ok((word, v))
}

pub(crate) fn apply_change(cc: &mut Value, word: &str, v: Value) {
    match word {
        "CMD" => cc["Cmd"] = v,
        "ENTRYPOINT" => cc["Entrypoint"] = v,
        "WORKDIR" => cc["WorkingDir"] = v,
        "USER" => cc["User"] = v,
        "STOPSIGNAL" => cc["StopSignal"] = v,
        "ONBUILD" => {
            if !cc["OnBuild"].is_array() {
                cc["OnBuild"] = json!([]);
            }
            if let Some(a) = cc["OnBuild"].as_array_mut() {
                a.push(v);
            }
        }
        "ENV" => {
            let mut env: Vec<String> = cc["Env"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            for (k, x) in v.as_object().into_iter().flatten() {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
                env.push(format!("{k}={}", x.as_str().unwrap_or_default()));
            }
            cc["Env"] = json!(env);
        }
        "LABEL" => {
            if !cc["Labels"].is_object() {
                cc["Labels"] = json!({});
            }
            for (k, x) in v.as_object().into_iter().flatten() {
                cc["Labels"][k] = x.clone();
            }
        }
        "EXPOSE" | "VOLUME" => {
            let key = if word == "EXPOSE" { "ExposedPorts" } else { "Volumes" };
            if !cc[key].is_object() {
                cc[key] = json!({});
            }
            for p in v.as_array().into_iter().flatten().filter_map(|p| p.as_str()) {
                let p = if word == "EXPOSE" && !p.contains('/') { format!("{p}/tcp") } else { p.to_string() };
                cc[key][p] = json!({});
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_and_apply() {
        let mut cc = json!({"Env": ["PATH=/bin", "A=1"]});
        for c in [
            "CMD [\"sh\", \"-c\", \"echo hi\"]",
            "ENTRYPOINT top -b",
            "ENV A=2 B=3",
            "LABEL x=y",
            "EXPOSE 80 53/udp",
            "WORKDIR /w",
            "USER nobody",
            "VOLUME /data",
        ] {
            let (w, v) = parse_change(c).unwrap();
            apply_change(&mut cc, &w, v);
        }
        assert_eq!(cc["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(cc["Entrypoint"], json!(["/bin/sh", "-c", "top -b"]));
        assert_eq!(cc["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(cc["Labels"]["x"], "y");
        assert_eq!(cc["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!((cc["WorkingDir"].as_str(), cc["User"].as_str()), (Some("/w"), Some("nobody")));
        assert_eq!(cc["Volumes"], json!({"/data": {}}));
        assert!(parse_change("RUN rm -rf /").unwrap_err().to_string().contains("cannot be changed"));
        assert!(parse_change("CMD").is_err());
    }
}
