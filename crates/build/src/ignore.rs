//! `.dockerignore`: which paths of the build context are not sent.
//!
//! The file, as Docker reads it: a line starting with `#` (in the first column) is a comment;
//! lines are trimmed; `!` makes an exception; each pattern is cleaned like Go's
//! `filepath.Clean` and loses one leading `/` (so `/a`, `./a` and `a/` are `a`).
//!
//! Matching, as moby's patternmatcher: patterns are anchored at the context root; `*` is any
//! run of characters but `/`, `?` one such character, `[...]` a class (`[^...]` negated, `\`
//! escapes), `**` any number of directories (`**/a` is `a` at any depth, `a/**` everything
//! under `a`). A pattern that matches a directory matches everything under it. The last
//! pattern that matches decides: an exception re-includes what an earlier pattern excluded.
//!
//! Patterns that climb out of the context (`../x`) can match nothing in it: they are dropped
//! with a warning. Paths given to [`Ignore::matches`] that climb out are always excluded.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A syntax error in a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreError {
    pub pattern: String,
    pub message: String,
}

impl std::fmt::Display for IgnoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}", self.message, self.pattern)
    }
}

impl std::error::Error for IgnoreError {}

/// A compiled set of patterns.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    /// Patterns dropped because they cannot match inside the context.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    /// `!pattern`: re-includes.
    exception: bool,
    kind: Kind,
}

/// patternmatcher's match types: its fast paths decide some results (e.g. `**.go` matches any
/// name ending in `.go`), so they are kept as such.
#[derive(Debug, Clone)]
enum Kind {
    /// No wildcard: the path is the pattern.
    Exact,
    /// `literal**`: the path starts with `literal`.
    Prefix(String),
    /// `**` then only literal characters: the path ends with them (or is them after `**/`).
    Suffix(String),
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// A trailing `**` after other wildcards: anything but a newline.
    Any,
    /// `**/` (or `**` before more pattern): `(.*/)?`.
    Dirs,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// The lines of an ignore file as patterns (`!` kept in front of exceptions), as Docker's
/// `ignorefile.ReadAll` gives them.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let exception = pattern.starts_with('!');
        if exception {
            pattern = pattern[1..].trim();
        }
        let mut p = if pattern.is_empty() { String::new() } else { clean(pattern) };
        if p.len() > 1 && p.starts_with('/') {
            p.remove(0);
        }
        out.push(if exception { format!("!{p}") } else { p });
    }
    out
}

impl Ignore {
    /// Reads and compiles an ignore file's text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        Ignore::new(read_patterns(text))
    }

    /// Compiles patterns (e.g. `COPY --exclude`): `!` in front makes an exception.
    pub fn new<I, S>(patterns: I) -> Result<Ignore, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut ignore = Ignore::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exception, text) = match p.strip_prefix('!') {
                Some("") => {
                    return Err(IgnoreError { pattern: p.clone(), message: "illegal exclusion pattern".into() });
                }
                Some(rest) => (true, rest.to_string()),
                None => (false, p.clone()),
            };
            if !valid(&text) {
                return Err(IgnoreError { pattern: p.clone(), message: "syntax error in pattern".into() });
            }
            if text == ".." || text.starts_with("../") {
                ignore
                    .warnings
                    .push(format!("pattern {p:?} refers to a path outside the build context and is ignored"));
                continue;
            }
            ignore.patterns.push(Pattern { kind: compile(&text), text, exception });
        }
        Ok(ignore)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether the context path (relative, `/`-separated) is excluded. A directory and a file
    /// are matched alike (a pattern's trailing `/` is cleaned away, as in Docker): `is_dir` is
    /// taken for the walker's convenience and does not change the answer. The context root is
    /// never excluded; a path that climbs out of the context always is.
    pub fn matches(&self, path: &str, is_dir: bool) -> bool {
        let _ = is_dir;
        let Some(path) = normalize(path) else { return true };
        if path == "." {
            return false;
        }
        self.patterns.iter().rev().find(|p| p.matches_or_parent(&path)).is_some_and(|p| !p.exception)
    }

    /// Whether a directory is excluded and no exception can re-include anything under it, so
    /// a walker need not enter it.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        let Some(dir) = normalize(dir) else { return true };
        if dir == "." {
            return false;
        }
        let Some(last) = self.patterns.iter().rposition(|p| p.matches_or_parent(&dir)) else { return false };
        if self.patterns[last].exception {
            return false;
        }
        // Only exceptions after the pattern that excluded the directory can win below it.
        let under = format!("{dir}/");
        !self.patterns[last + 1..].iter().any(|p| p.exception && p.may_match_under(&under))
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob(toks) => {
                let mut nfa = Nfa::new(toks);
                path.chars().all(|c| nfa.step(c)) && nfa.accepts()
            }
        }
    }

    /// The path or one of its parent directories matches.
    fn matches_or_parent(&self, path: &str) -> bool {
        let Kind::Glob(toks) = &self.kind else {
            return self.matches(path) || path.match_indices('/').any(|(i, _)| self.matches(&path[..i]));
        };
        // One pass: the pattern matches a parent when it accepts just before one of its `/`.
        let mut nfa = Nfa::new(toks);
        for c in path.chars() {
            if c == '/' && nfa.accepts() {
                return true;
            }
            if !nfa.step(c) {
                return false;
            }
        }
        nfa.accepts()
    }

    /// Whether some path starting with `under` (`dir/`) could match.
    fn may_match_under(&self, under: &str) -> bool {
        match &self.kind {
            Kind::Exact => self.text.starts_with(under),
            Kind::Prefix(prefix) => under.starts_with(prefix.as_str()) || prefix.starts_with(under),
            Kind::Suffix(_) => true,
            Kind::Glob(toks) => {
                let mut nfa = Nfa::new(toks);
                under.chars().all(|c| nfa.step(c))
            }
        }
    }
}

/// Go's `filepath.Clean` on `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// A context path cleaned and relative, or `None` when it climbs out.
fn normalize(path: &str) -> Option<String> {
    let p = clean(path);
    let p = match p.strip_prefix('/') {
        Some("") => ".".to_string(),
        Some(rest) => rest.to_string(),
        None => p,
    };
    if p == ".." || p.starts_with("../") { None } else { Some(p) }
}

/// The pattern syntax `filepath.Match` accepts: no trailing `\`, classes closed and not empty,
/// ranges in order.
fn valid(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '[' => match class(&chars, i + 1) {
                Some((_, _, next)) => i = next,
                None => return false,
            },
            _ => i += 1,
        }
    }
    i == chars.len()
}

/// A parsed `[...]`: negated, its ranges, and the index after its `]`.
type Class = (bool, Vec<(char, char)>, usize);

/// A class after its `[`, or `None` if malformed.
fn class(chars: &[char], mut i: usize) -> Option<Class> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Some((negated, ranges, i + 1));
        }
        let esc = |i: &mut usize| -> Option<char> {
            let mut c = *chars.get(*i)?;
            if c == '-' || c == ']' {
                return None;
            }
            if c == '\\' {
                *i += 1;
                c = *chars.get(*i)?;
            }
            *i += 1;
            // Go wants something after each class character: at least the closing `]`.
            chars.get(*i)?;
            Some(c)
        };
        let lo = esc(&mut i)?;
        let hi = if chars.get(i) == Some(&'-') {
            i += 1;
            esc(&mut i)?
        } else {
            lo
        };
        if lo > hi {
            return None;
        }
        ranges.push((lo, hi));
    }
}

/// patternmatcher's translation of a cleaned pattern.
fn compile(pattern: &str) -> Kind {
    #[derive(PartialEq)]
    enum Type {
        Exact,
        Prefix,
        Suffix,
        Glob,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let (mut toks, mut ty, mut i, mut first) = (Vec::new(), Type::Exact, 0, true);
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if ty == Type::Exact {
                        ty = Type::Prefix;
                    } else {
                        toks.push(Tok::Any);
                        ty = Type::Glob;
                    }
                } else {
                    toks.push(Tok::Dirs);
                    ty = Type::Glob;
                }
                if first {
                    ty = Type::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                ty = Type::Glob;
            }
            '?' => {
                toks.push(Tok::One);
                ty = Type::Glob;
            }
            '\\' => {
                if let Some(&c) = chars.get(i) {
                    i += 1;
                    toks.push(Tok::Lit(c));
                    ty = Type::Glob;
                }
            }
            '[' => {
                let (negated, ranges, next) = class(&chars, i).unwrap_or((false, vec![('[', '[')], i));
                i = next;
                toks.push(Tok::Class { negated, ranges });
                ty = Type::Glob;
            }
            // A stray `]` makes patternmatcher use its regular expression (where it is literal).
            ']' => {
                toks.push(Tok::Lit(']'));
                ty = Type::Glob;
            }
            c => toks.push(Tok::Lit(c)),
        }
        first = false;
    }
    match ty {
        Type::Exact => Kind::Exact,
        Type::Prefix => Kind::Prefix(pattern.get(..pattern.len().saturating_sub(2)).unwrap_or("").to_string()),
        Type::Suffix => Kind::Suffix(pattern.get(2..).unwrap_or("").to_string()),
        Type::Glob => Kind::Glob(toks),
    }
}

/// A set of positions in a token list, advanced one character at a time (linear in the path
/// for any pattern: no backtracking to blow up on `*a*a*a*...`).
struct Nfa<'a> {
    toks: &'a [Tok],
    /// At token k.
    at: Vec<bool>,
    /// Inside the `.*/` of a `Dirs` token k.
    inside: Vec<bool>,
    /// The next step's sets, kept to avoid allocating per character.
    next_at: Vec<bool>,
    next_inside: Vec<bool>,
}

impl<'a> Nfa<'a> {
    fn new(toks: &'a [Tok]) -> Nfa<'a> {
        let n = toks.len();
        let mut nfa = Nfa {
            toks,
            at: vec![false; n + 1],
            inside: vec![false; n],
            next_at: vec![false; n + 1],
            next_inside: vec![false; n],
        };
        nfa.at[0] = true;
        nfa.close();
        nfa
    }

    /// Tokens that can match nothing let the next one start.
    fn close(&mut self) {
        for k in 0..self.toks.len() {
            if self.at[k] && matches!(self.toks[k], Tok::Star | Tok::Any | Tok::Dirs) {
                self.at[k + 1] = true;
            }
        }
    }

    /// Consumes one character; false once no position is left.
    fn step(&mut self, c: char) -> bool {
        let n = self.toks.len();
        let (at, inside) = (&mut self.next_at, &mut self.next_inside);
        at.fill(false);
        inside.fill(false);
        for k in 0..n {
            if self.inside[k] && c != '\n' {
                inside[k] = true;
            }
            if self.inside[k] && c == '/' {
                at[k + 1] = true;
            }
            if !self.at[k] {
                continue;
            }
            match &self.toks[k] {
                Tok::Lit(x) if *x == c => at[k + 1] = true,
                Tok::One if c != '/' => at[k + 1] = true,
                Tok::Star if c != '/' => at[k] = true,
                Tok::Any if c != '\n' => at[k] = true,
                Tok::Dirs => {
                    if c != '\n' {
                        inside[k] = true;
                    }
                    if c == '/' {
                        at[k + 1] = true;
                    }
                }
                Tok::Class { negated, ranges } if ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated => {
                    at[k + 1] = true;
                }
                _ => {}
            }
        }
        std::mem::swap(&mut self.at, &mut self.next_at);
        std::mem::swap(&mut self.inside, &mut self.next_inside);
        self.close();
        self.at.contains(&true) || self.inside.contains(&true)
    }

    fn accepts(&self) -> bool {
        self.at[self.toks.len()]
    }
}

/// Where the ignore file for a build is looked for, first found wins: `<Dockerfile>.dockerignore`
/// beside the Dockerfile, then `.dockerignore` at the root of the context.
pub fn ignore_file_candidates(context: &Path, dockerfile: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(name) = dockerfile.file_name() {
        let mut name = name.to_os_string();
        name.push(".dockerignore");
        out.push(dockerfile.with_file_name(name));
    }
    out.push(context.join(".dockerignore"));
    out
}

/// Larger ignore files are refused rather than read whole.
const MAX_IGNORE_FILE: u64 = 16 << 20;

/// Reads the build's ignore file (see [`ignore_file_candidates`]): the path it came from and
/// its patterns, or `None` when there is none. A candidate that is a symlink or not a regular
/// file is an error, not followed: it could point outside the context.
pub fn load_ignore_file(context: &Path, dockerfile: &Path) -> anyhow::Result<Option<(PathBuf, Ignore)>> {
    for path in ignore_file_candidates(context, dockerfile) {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        if !meta.file_type().is_file() {
            anyhow::bail!("{}: not a regular file", path.display());
        }
        let mut file = fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let opened = file.metadata()?;
        // The file opened must be the one checked (not a symlink swapped in since).
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            anyhow::bail!("{}: changed while being read", path.display());
        }
        let mut bytes = Vec::new();
        file.by_ref().take(MAX_IGNORE_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_IGNORE_FILE {
            anyhow::bail!("{}: larger than {MAX_IGNORE_FILE} bytes", path.display());
        }
        let ignore =
            Ignore::parse(&String::from_utf8_lossy(&bytes)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(Some((path, ignore)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn excluded(text: &str, path: &str) -> bool {
        ig(text).matches(path, false)
    }

    #[test]
    fn reading_the_file() {
        assert_eq!(
            read_patterns("\u{feff}# comment\n  # not a comment\n\n  /a/b/  \r\n!  ./c\n../d\n!\n/\n"),
            vec!["# not a comment", "a/b", "!c", "../d", "!", "/"]
        );
        assert_eq!(Ignore::parse("!").err().map(|e| e.to_string()), Some("illegal exclusion pattern: \"!\"".into()));
        assert_eq!(Ignore::parse("[a").err().map(|e| e.message), Some("syntax error in pattern".into()));
        for bad in ["a\\", "[]", "[a-]", "[z-a]", "[-a]", "a[", "[\\"] {
            assert!(Ignore::parse(bad).is_err(), "{bad}");
        }
        let i = ig("../x\n..\na");
        assert_eq!((i.warnings.len(), i.patterns.len()), (2, 1));
    }

    #[test]
    fn docker_reference_examples() {
        let text = "# comment\n*/temp*\n*/*/temp*\ntemp?\n";
        assert!(excluded(text, "somedir/temporary.txt"));
        assert!(excluded(text, "somedir/temp"));
        assert!(excluded(text, "somedir/subdir/temporary.txt"));
        assert!(excluded(text, "tempa"));
        assert!(excluded(text, "tempb/x"), "everything under a matched directory");
        assert!(!excluded(text, "temp"));
        assert!(!excluded(text, "a/b/c/temp"));
        assert!(!excluded(text, "tempab"));

        let text = "*.md\n!README*.md\nREADME-secret.md";
        assert!(excluded(text, "a.md"));
        assert!(!excluded(text, "README.md"));
        assert!(excluded(text, "README-secret.md"));
        let text = "*.md\nREADME-secret.md\n!README*.md";
        assert!(!excluded(text, "README-secret.md"));
    }

    #[test]
    fn double_star() {
        assert!(excluded("**/*.go", "a.go"));
        assert!(excluded("**/*.go", "x/y/a.go"));
        assert!(!excluded("**/*.go", "x/y/a.goo"));
        assert!(excluded("**", "anything/at/all"));
        assert!(excluded("a/**", "a/b"));
        assert!(excluded("a/**", "a/b/c"));
        assert!(!excluded("a/**", "a"), "a/** is under a, not a");
        assert!(!excluded("a/**", "ab"));
        assert!(excluded("a/**/b", "a/b"));
        assert!(excluded("a/**/b", "a/x/y/b"));
        assert!(!excluded("a/**/b", "a/xb"));
        assert!(excluded("**/node_modules", "node_modules/x"));
        assert!(excluded("**/node_modules", "p/node_modules"));
        // patternmatcher's fast path: `**` then literal text is a suffix test.
        assert!(excluded("**.pyc", "x/y.pyc"));
        assert!(excluded("foo**", "foobar"));
        assert!(excluded("a*/**", "ab/c"));
        assert!(!excluded("a*/**", "ab"));
    }

    #[test]
    fn single_wildcards_and_classes() {
        assert!(excluded("*", "a"));
        assert!(excluded("*", "a/b"), "through the parent");
        assert!(!excluded("*/b", "b"));
        assert!(excluded("a?c", "abc"));
        assert!(!excluded("a?c", "a/c"));
        assert!(excluded("[a-c]x", "bx"));
        assert!(!excluded("[^a-c]x", "bx"));
        assert!(excluded("[^a-c]x", "dx"));
        assert!(excluded("a\\*b", "a*b"));
        assert!(!excluded("a\\*b", "aXb"));
        assert!(excluded("a.b", "a.b"));
        assert!(!excluded("a.b", "aXb"));
        assert!(excluded("(x)+{y}$|", "(x)+{y}$|"));
        assert!(excluded("*a*a*a*a*a*a*a*a*a*b", &format!("{}b", "a".repeat(60))));
        assert!(!excluded("*a*a*a*a*a*a*a*a*a*b", &"a".repeat(60)));
    }

    #[test]
    fn paths_are_cleaned_and_kept_inside() {
        assert!(excluded("a", "./a/"));
        assert!(excluded("a", "/a"));
        assert!(!excluded("*", "."));
        assert!(excluded("nothing", "../escape"));
        assert!(excluded("nothing", "a/../../escape"));
        assert!(!excluded("a", "b/../c"));
        assert!(excluded("a", "b/../a"));
        assert!(!excluded("", "x"));
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("a/../.."), "..");
        assert_eq!(clean(""), ".");
    }

    #[test]
    fn parent_matching_agrees_with_matching_each_parent() {
        let i = ig("a*/b\n**/c?\nx/**/y\n[a-c]\n!b\n");
        for path in ["ab/b/q", "a/b", "q/cd/e", "x/y/z", "x/1/2/y/3", "c/d", "b", "d/e/f"] {
            for p in &i.patterns {
                let slow = p.matches(path) || path.match_indices('/').any(|(k, _)| p.matches(&path[..k]));
                assert_eq!(p.matches_or_parent(path), slow, "{} on {path}", p.text);
            }
        }
    }

    #[test]
    fn ten_thousand_paths_are_cheap() {
        let i = ig("**/*.log\nnode_modules\n!node_modules/keep\n*/tmp*\nbuild/**\n.git\n[Tt]humbs.db\n");
        let start = std::time::Instant::now();
        let mut excluded = 0;
        for n in 0..10_000 {
            let path = format!("src/module{}/sub{}/file{n}.{}", n % 97, n % 13, if n % 5 == 0 { "log" } else { "rs" });
            excluded += usize::from(i.matches(&path, false));
        }
        assert_eq!(excluded, 2_000);
        // Generous for a debug build on a loaded machine; typically a few milliseconds.
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
    }

    #[test]
    fn skipping_directories() {
        let i = ig("node_modules\n");
        assert!(i.can_skip_dir("node_modules"));
        assert!(!i.can_skip_dir("src"));
        let i = ig("node_modules\n!node_modules/keep\n");
        assert!(!i.can_skip_dir("node_modules"));
        assert!(!i.matches("node_modules/keep/x", false));
        assert!(i.matches("node_modules/other", false));
        let i = ig("!node_modules/keep\nnode_modules\n");
        assert!(i.can_skip_dir("node_modules"), "an earlier exception loses");
        let i = ig("*\n!**/*.go\n");
        assert!(!i.can_skip_dir("src"), "a wildcard exception may match inside");
        assert!(!i.matches("src/a/main.go", false));
        assert!(i.matches("src/a/main.c", false));
        let i = ig("build\n!build*/keep\n");
        assert!(!i.can_skip_dir("build"));
        let i = ig("build\n!other/keep\n!x*/y\n");
        assert!(i.can_skip_dir("build"));
        let i = ig("a\n!a/b/c\n");
        assert!(!i.can_skip_dir("a/b"));
        assert!(i.can_skip_dir("a/x"));
        assert!(!ig("").can_skip_dir("a"));
    }

    #[test]
    fn candidates_and_loading() {
        let c = ignore_file_candidates(Path::new("/ctx"), Path::new("/ctx/build/app.Dockerfile"));
        assert_eq!(
            c,
            vec![PathBuf::from("/ctx/build/app.Dockerfile.dockerignore"), PathBuf::from("/ctx/.dockerignore")]
        );

        let dir = std::env::temp_dir().join(format!("berth-build-ignore-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let setup = || -> std::io::Result<()> {
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("Dockerfile"), "FROM x")?;
            fs::write(dir.join(".dockerignore"), "a\n")?;
            Ok(())
        };
        let result = (|| {
            setup().map_err(|e| e.to_string())?;
            let df = dir.join("Dockerfile");
            let (path, i) = load_ignore_file(&dir, &df).map_err(|e| e.to_string())?.ok_or("none")?;
            if path != dir.join(".dockerignore") || !i.matches("a", false) {
                return Err("wrong file".to_string());
            }
            fs::write(dir.join("Dockerfile.dockerignore"), "b\n").map_err(|e| e.to_string())?;
            let (path, i) = load_ignore_file(&dir, &df).map_err(|e| e.to_string())?.ok_or("none")?;
            if path != dir.join("Dockerfile.dockerignore") || !i.matches("b", false) || i.matches("a", false) {
                return Err("wrong precedence".to_string());
            }
            fs::remove_file(dir.join("Dockerfile.dockerignore")).map_err(|e| e.to_string())?;
            fs::remove_file(dir.join(".dockerignore")).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink("/etc/passwd", dir.join(".dockerignore")).map_err(|e| e.to_string())?;
            if load_ignore_file(&dir, &df).is_ok() {
                return Err("followed a symlink".to_string());
            }
            fs::remove_file(dir.join(".dockerignore")).map_err(|e| e.to_string())?;
            match load_ignore_file(&dir, &df) {
                Ok(None) => Ok(()),
                _ => Err("expected no file".to_string()),
            }
        })();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(result, Ok(()));
    }
}
