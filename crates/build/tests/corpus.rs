//! The Dockerfile corpus (tests/dockerfiles):
//! - `NAME.Dockerfile` with `NAME.json`: the parse, the stages, the plan of the default target
//!   and the instructions' expansion with fixed variables, as JSON;
//! - `bad/NAME.Dockerfile` with `bad/NAME.err`: the error the file must give;
//! - every file, truncated and garbled, must never make the parser panic.
//!
//! `BERTH_BLESS=1 cargo test -p berth-build --test corpus` rewrites the `.json` files (read
//! them before committing).

use std::collections::BTreeMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use berth_build::dockerfile::Command;
use berth_build::subst::{self, Platform};
use berth_build::{Dockerfile, Ignore, Lexer};
use serde_json::{Value, json};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The variables the corpus expands instructions with.
fn vars() -> BTreeMap<String, String> {
    [
        ("HOME", "/root"),
        ("NAME", "berth"),
        ("VERSION", "1.2.3"),
        ("EMPTY", ""),
        ("FILE", "/tmp/pkg.tar.gz"),
        ("PORTS", "80 443/tcp"),
        ("MODE", "0640"),
        ("SUM", "sha256:0123"),
        ("A", "1"),
        ("B", "two words"),
        ("TWO", "2"),
        ("PATH", "/usr/bin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn amd64() -> Platform {
    Platform { os: "linux".into(), arch: "amd64".into(), variant: None }
}

/// Everything the corpus checks about one file, as JSON.
fn describe(text: &str) -> Result<Value, String> {
    let df = Dockerfile::parse(text).map_err(|e| e.to_string())?;
    let stages = df.stages().map_err(|e| e.to_string())?;
    let target = stages.target(None).map_err(|e| e.to_string())?;
    let meta = stages
        .meta_args(&df, &BTreeMap::new(), &subst::platform_args(&amd64(), &amd64()))
        .map_err(|e| e.to_string())?;
    let plan = stages.plan(&df, target, &meta).map_err(|e| e.to_string())?;
    let lexer = Lexer::new(df.directives.escape);
    let vars = vars();
    let mut expanded = Vec::new();
    for inst in &df.instructions {
        let value = match subst::expand_command(&inst.command, &lexer, &vars) {
            Ok(cmd) if cmd == inst.command => continue,
            Ok(cmd) => serde_json::to_value(&cmd).map_err(|e| e.to_string())?,
            Err(e) => Value::String(format!("error: {e}")),
        };
        expanded.push(json!({ "line": inst.line, "command": value }));
    }
    Ok(json!({ "dockerfile": df, "stages": stages, "plan": plan, "expanded": expanded }))
}

#[test]
fn good_files_match_their_golden_json() {
    let bless = std::env::var_os("BERTH_BLESS").is_some();
    let files = files(&corpus());
    assert!(files.len() >= 10, "corpus missing");
    let mut failures = Vec::new();
    for path in files {
        let got = describe(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let golden = path.with_extension("json");
        if bless {
            let text = serde_json::to_string_pretty(&got).unwrap_or_default() + "\n";
            fs::write(&golden, text).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
            continue;
        }
        let want: Value = serde_json::from_str(&read(&golden)).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        if got != want {
            failures.push(format!(
                "{}: differs from its golden file; got:\n{}",
                path.display(),
                serde_json::to_string_pretty(&got).unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn bad_files_give_their_error() {
    let files = files(&corpus().join("bad"));
    assert!(files.len() >= 30, "corpus missing");
    let mut failures = Vec::new();
    for path in files {
        let want = read(&path.with_extension("err")).trim_end_matches('\n').to_string();
        match describe(&read(&path)) {
            Ok(_) => failures.push(format!("{}: no error, expected {want}", path.display())),
            Err(got) if got != want => failures.push(format!("{}:\n  got  {got}\n  want {want}", path.display())),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs every entry point on the text; only a panic is a failure.
fn exercise(text: &str) {
    if let Ok(df) = Dockerfile::parse(text) {
        let lexer = Lexer::new(df.directives.escape);
        let vars = vars();
        for inst in &df.instructions {
            let _ = subst::expand_command(&inst.command, &lexer, &vars);
            if let Command::Onbuild(o) = &inst.command {
                let _ = Dockerfile::parse_trigger(&o.expression);
            }
            if let Command::Run(r) = &inst.command {
                r.heredocs.iter().for_each(|h| drop(h.body()));
            }
        }
        if let Ok(stages) = df.stages() {
            let predefined = subst::platform_args(&amd64(), &amd64());
            if let Ok(meta) = stages.meta_args(&df, &vars, &predefined) {
                for target in 0..stages.stages.len() {
                    let _ = stages.plan(&df, target, &meta);
                }
            }
        }
    }
    // The same bytes as words, patterns and substitutions.
    let _ = Lexer::new('\\').words(text, &vars());
    let _ = Lexer::new('`').word(text, &vars());
    let _ = Lexer::heredoc(text, &vars());
    if let Ok(ignore) = Ignore::parse(text) {
        for path in ["a", "a/b/c", "src/main.go", ".", "../x", "node_modules/x/y", "é/[x]"] {
            let _ = ignore.matches(path, false);
            let _ = ignore.can_skip_dir(path);
        }
    }
    for line in text.lines().take(50) {
        let _ = Ignore::new([line]);
        let _ = berth_build::dockerfile::Mount::parse(line);
        let _ = Platform::parse(line);
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SPECIAL: &[&str] = &[
    "\\",
    "`",
    "\"",
    "'",
    "$",
    "${",
    "}",
    "{",
    "[",
    "]",
    "<<",
    "<<-",
    "-",
    "--",
    "=",
    "#",
    ",",
    "\n",
    "\r\n",
    " ",
    "\t",
    "*",
    "**",
    "?",
    "!",
    "é",
    "\u{feff}",
    "\u{a0}",
    "EOF",
    "FROM",
    "AS",
    "RUN",
    "COPY",
    "--mount=",
    "--from=",
    ":",
    "/",
    "..",
    "0",
    "9999999999999999999",
    "\0",
];

fn garble(text: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                chars.remove(at.min(chars.len() - 1));
            }
            1 if !chars.is_empty() => {
                let s = SPECIAL[rng.below(SPECIAL.len())];
                chars.splice(at.min(chars.len() - 1)..at.min(chars.len() - 1) + 1, s.chars());
            }
            2 => {
                let end = (at + rng.below(40)).min(chars.len());
                let piece: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, piece);
            }
            _ => {
                let s = SPECIAL[rng.below(SPECIAL.len())];
                chars.splice(at..at, s.chars());
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn truncated_and_garbled_files_never_panic() {
    let mut all = files(&corpus());
    all.extend(files(&corpus().join("bad")));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut panics = Vec::new();
    let mut check = |text: String| {
        if panic::catch_unwind(AssertUnwindSafe(|| exercise(&text))).is_err() {
            panics.push(text);
        }
    };
    for path in &all {
        let text = read(path);
        for (i, _) in text.char_indices() {
            check(text[..i].to_string());
            check(text[i..].to_string());
        }
        for _ in 0..300 {
            check(garble(&text, &mut rng));
        }
    }
    assert!(panics.is_empty(), "{} inputs panicked, e.g. {:?}", panics.len(), panics.first());
}

/// Random lines of instruction names, flags and special characters.
#[test]
fn token_soup_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let words = ["FROM a AS b\n", "RUN ", "COPY ", "ADD ", "ONBUILD ", "HEALTHCHECK ", "ENV ", "ARG ", "SHELL ", "\n"];
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..rng.below(40) {
            let pick =
                if rng.below(3) == 0 { words[rng.below(words.len())] } else { SPECIAL[rng.below(SPECIAL.len())] };
            text.push_str(pick);
        }
        if panic::catch_unwind(AssertUnwindSafe(|| exercise(&text))).is_err() {
            panic!("panicked on {text:?}");
        }
    }
}
