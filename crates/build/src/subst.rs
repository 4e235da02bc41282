//! Variable substitution as BuildKit's shell lexer does it, and which instruction expands what.
//!
//! # Forms
//!
//! `$v` and `${v}` (unset: empty), `${v:-w}` / `${v-w}` (default when unset or empty / unset),
//! `${v:+w}` / `${v+w}` (alternative), `${v:?msg}` / `${v?msg}` (error), `${v#p}` / `${v##p}`
//! (remove the shortest / longest prefix matching `p`), `${v%p}` / `${v%%p}` (suffix),
//! `${v/p/r}` / `${v//p/r}` (replace the first / every match). Patterns know `*` and `?`, and
//! `\*`, `\?`, `\\`, `\}`, `\/` as literals. `$1`, `$@`, `$$` are looked up as variables of
//! those names (so they are empty); a `$` before anything else stays a `$`.
//!
//! # Quotes and escapes
//!
//! Single quotes keep everything literally (no expansion). Inside double quotes the escape
//! character escapes only `"`, `$` and itself; outside quotes it escapes any character and is
//! dropped (`\$v` is a literal `$v`). Quotes are removed: `WORKDIR "/a b"` is `/a b`.
//! The escape character is the Dockerfile's (`# escape=`); heredoc bodies always use `\`.
//!
//! # Which instruction expands what ([`expand_command`])
//!
//! | Instruction | Expanded (with the stage's ENV and ARG values) |
//! |---|---|
//! | ENV, LABEL | keys and values ([`Lexer::word`]) |
//! | ADD, COPY | sources, destination, `--chown`, `--chmod`, ADD's `--checksum`, bodies of heredocs whose delimiter is unquoted ([`Lexer::heredoc`]) |
//! | EXPOSE | each word, then split again on whitespace ([`Lexer::words`]) |
//! | VOLUME, WORKDIR, USER, STOPSIGNAL | the argument(s) ([`Lexer::word`]) |
//! | RUN | every `--mount` value but `from` |
//! | FROM | image and `--platform`, with the global ARGs only ([`crate::stages::Stages::plan`]) |
//! | ARG | the default, only when no `--build-arg` gives a value; never the name (the engine's call) |
//! | not at all | RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK commands, MAINTAINER, ONBUILD (expanded when the trigger runs), `COPY --from`, `--exclude`, `--network` |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use crate::dockerfile::{Command, Heredoc, KeyValue};

/// A source of variable values.
pub trait Vars {
    fn var(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Vars for HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Vars for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// Ordered pairs, as an image's environment: the last definition of a name wins.
impl Vars for [(String, String)] {
    fn var(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Vars for Vec<(String, String)> {
    fn var(&self, name: &str) -> Option<&str> {
        self.as_slice().var(name)
    }
}

/// No variable is set.
pub struct NoVars;

impl Vars for NoVars {
    fn var(&self, _: &str) -> Option<&str> {
        None
    }
}

/// A substitution that failed: bad syntax, or `${v?msg}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    /// The text being expanded.
    pub text: String,
    pub message: String,
}

impl fmt::Display for SubstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to process {:?}: {}", self.text, self.message)
    }
}

impl std::error::Error for SubstError {}

/// Nested `${...}` and quotes deeper than this are refused: the recursion is bounded whatever
/// the input (BuildKit has no limit; no real Dockerfile comes close).
const MAX_DEPTH: usize = 64;

/// The shell-like lexer, for one escape character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output (used to find heredoc delimiters).
    raw_quotes: bool,
    /// Keep escape characters in the output.
    raw_escapes: bool,
    /// Quotes are ordinary characters (heredoc bodies).
    skip_quotes: bool,
    /// Leave unset variables as written.
    skip_unset: bool,
}

impl Lexer {
    /// A lexer for a Dockerfile's escape character (`\` unless `# escape=` says otherwise).
    pub fn new(escape: char) -> Lexer {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_quotes: false, skip_unset: false }
    }

    /// The lexer that finds heredoc delimiters on an instruction line: quotes and escapes kept,
    /// unset variables left alone.
    pub(crate) fn heredoc_line() -> Lexer {
        Lexer { escape: '\\', raw_quotes: true, raw_escapes: true, skip_quotes: false, skip_unset: true }
    }

    /// The lexer for a heredoc delimiter word, with or without its quotes.
    pub(crate) fn heredoc_name(raw_quotes: bool) -> Lexer {
        Lexer { escape: '\\', raw_quotes, raw_escapes: false, skip_quotes: false, skip_unset: true }
    }

    /// One word, as ENV, LABEL, WORKDIR, USER, VOLUME, COPY and ADD expand their arguments:
    /// quotes removed, whitespace kept.
    pub fn word(&self, text: &str, vars: &dyn Vars) -> Result<String, SubstError> {
        self.process(text, vars).map(|(word, _, _)| word)
    }

    /// Like [`Lexer::word`], with the names that were looked up but not set (for warnings
    /// such as an undeclared ARG used in FROM).
    pub fn word_unset(&self, text: &str, vars: &dyn Vars) -> Result<(String, BTreeSet<String>), SubstError> {
        self.process(text, vars).map(|(word, _, unset)| (word, unset))
    }

    /// Expands, then splits into words on unquoted whitespace (EXPOSE). Whitespace that came
    /// from a variable's value also splits; an empty result is no word.
    pub fn words(&self, text: &str, vars: &dyn Vars) -> Result<Vec<String>, SubstError> {
        self.process(text, vars).map(|(_, words, _)| words)
    }

    /// A COPY/ADD heredoc body whose delimiter was not quoted: variables expanded, `\`
    /// escapes any character (and is dropped), quotes are ordinary characters.
    pub fn heredoc(text: &str, vars: &dyn Vars) -> Result<String, SubstError> {
        let lexer = Lexer { skip_quotes: true, ..Lexer::new('\\') };
        lexer.word(text, vars)
    }

    fn process(&self, text: &str, vars: &dyn Vars) -> Result<(String, Vec<String>, BTreeSet<String>), SubstError> {
        let mut sh = Shell {
            lx: *self,
            chars: text.chars().collect(),
            pos: 0,
            vars,
            raw_escapes: self.raw_escapes,
            unset: BTreeSet::new(),
            depth: 0,
        };
        match sh.stop_on(None, self.raw_escapes) {
            Ok((word, words)) => Ok((word, words, sh.unset)),
            Err(message) => Err(SubstError { text: text.to_string(), message }),
        }
    }
}

/// The words being split while a text is processed (BuildKit's `wordsStruct`).
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Shell<'a> {
    lx: Lexer,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Vars,
    raw_escapes: bool,
    unset: BTreeSet<String>,
    depth: usize,
}

type Res<T> = Result<T, String>;

impl Shell<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get(&mut self, name: &str) -> Option<String> {
        match self.vars.var(name) {
            Some(v) => Some(v.to_string()),
            None => {
                self.unset.insert(name.to_string());
                None
            }
        }
    }

    /// Reads up to `stop` (consumed) or the end when `stop` is `None`.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Res<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Res<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            let quote = !self.lx.skip_quotes && (ch == '\'' || ch == '"');
            if ch == '$' || quote {
                let tmp = match ch {
                    '$' => self.dollar()?,
                    '\'' => self.single_quote()?,
                    _ => self.double_quote()?,
                };
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            self.pos += 1;
            let mut ch = ch;
            if ch == self.lx.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(s) = stop {
            return Err(format!("unexpected end of statement while looking for matching {s}"));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Res<String> {
        self.pos += 1;
        let mut r = String::new();
        if self.lx.raw_quotes {
            r.push('\'');
        }
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.lx.raw_quotes {
                        r.push('\'');
                    }
                    return Ok(r);
                }
                Some(c) => r.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Res<String> {
        self.pos += 1;
        let mut r = String::new();
        if self.lx.raw_quotes {
            r.push('"');
        }
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.pos += 1;
                    if self.lx.raw_quotes {
                        r.push('"');
                    }
                    return Ok(r);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    r.push_str(&v);
                }
                Some(c) => {
                    self.pos += 1;
                    let mut c = c;
                    if c == self.lx.escape {
                        // BuildKit writes a raw escape here and, when it escapes nothing,
                        // once more below: kept as is, it only matters for patterns.
                        if self.raw_escapes {
                            r.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lx.escape => {
                                c = n;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    r.push(c);
                }
            }
        }
    }

    fn dollar(&mut self) -> Res<String> {
        self.depth += 1;
        let r = if self.depth > MAX_DEPTH { Err("too many nested substitutions".into()) } else { self.dollar_inner() };
        self.depth -= 1;
        r
    }

    /// An unset variable: empty, or as written when unset ones are skipped.
    fn unset_as_written(&self, written: String) -> String {
        if self.lx.skip_unset { written } else { String::new() }
    }

    fn dollar_inner(&mut self) -> Res<String> {
        self.pos += 1; // the '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get(&name) {
                Some(v) => v,
                None => self.unset_as_written(format!("${name}")),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else { return Err("syntax error: missing '}'".into()) };
        match ch {
            '}' => Ok(match self.get(&name) {
                Some(v) => v,
                None => self.unset_as_written(format!("${{{name}}}")),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut chs = ch.to_string();
                let null_is_unset = ch == ':';
                let op = if null_is_unset { self.next() } else { Some(ch) };
                chs.extend(op.filter(|_| null_is_unset));
                let raw = matches!(op, Some('#' | '%'));
                if op.is_none() {
                    return Err("syntax error: missing '}'".into());
                }
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = self.operand('}', raw, "syntax error: missing '}'")?;
                let value = self.get(&name);
                if value.is_none() && self.lx.skip_unset {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value.as_deref().is_none_or(|v| null_is_unset && v.is_empty());
                match op {
                    Some('-') => Ok(if empty { word } else { value.unwrap_or_default() }),
                    Some('+') => Ok(if empty { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() { "is not allowed to be unset" } else { &word }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() { "is not allowed to be empty" } else { &word }
                        )),
                        Some(v) => Ok(v),
                    },
                    Some(op @ ('#' | '%')) => {
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word.clone()),
                        };
                        let toks = pattern_tokens(&pattern).map_err(|e| invalid_pattern(&pattern, &e))?;
                        let value = value.unwrap_or_default();
                        Ok(if op == '#' {
                            trim_prefix(&toks, &value, greedy)
                        } else {
                            trim_suffix(&toks, &value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.operand('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.operand('}', true, "syntax error: missing '}'")?;
                let value = self.get(&name);
                if value.is_none() && self.lx.skip_unset {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let toks = pattern_tokens(&pattern).map_err(|e| invalid_pattern(&pattern, &e))?;
                Ok(replace(&toks, &value, &replacement, all))
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// The word of a `${v<op>word}` form, up to `stop`.
    fn operand(&mut self, stop: char, raw: bool, missing: &str) -> Res<String> {
        match self.stop_on(Some(stop), raw) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(missing.to_string()),
            Err(e) => Err(e),
        }
    }

    /// A variable name: letters, digits and `_`; or digits only; or one special parameter.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

fn invalid_pattern(pattern: &str, err: &str) -> String {
    format!("invalid pattern ({pattern}) in substitution: {err}")
}

/// A `${v#p}` / `${v/p/r}` pattern: literal characters, `?` and `*` (neither matches a newline,
/// as in BuildKit's regular expressions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PTok {
    Lit(char),
    Any,
    Star,
}

fn pattern_tokens(pattern: &str) -> Result<Vec<PTok>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        toks.push(match c {
            '*' => PTok::Star,
            '?' => PTok::Any,
            '\\' => match chars.get(i) {
                // `\}` and `\/` only protect the character from ending the ${} form.
                Some('}' | '/') => continue,
                Some(&n @ ('*' | '?' | '\\')) => {
                    i += 1;
                    PTok::Lit(n)
                }
                Some(n) => return Err(format!("invalid escape '\\{n}'")),
                None => return Err("invalid escape '\\'".into()),
            },
            c => PTok::Lit(c),
        });
    }
    Ok(toks)
}

/// The lengths of the prefixes of `text` that `toks` matches, ascending (an NFA run: linear in
/// the text for each pattern position, whatever the pattern).
fn match_ends(toks: &[PTok], text: &[char]) -> Vec<usize> {
    let n = toks.len();
    let closure = |s: &mut Vec<bool>| {
        for k in 0..n {
            if s[k] && toks[k] == PTok::Star {
                s[k + 1] = true;
            }
        }
    };
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    closure(&mut cur);
    let mut ends = Vec::new();
    if cur[n] {
        ends.push(0);
    }
    let mut next = vec![false; n + 1];
    for (i, &c) in text.iter().enumerate() {
        next.iter_mut().for_each(|b| *b = false);
        for k in 0..n {
            if !cur[k] {
                continue;
            }
            match toks[k] {
                PTok::Lit(x) if x == c => next[k + 1] = true,
                PTok::Any if c != '\n' => next[k + 1] = true,
                PTok::Star if c != '\n' => next[k] = true,
                _ => {}
            }
        }
        closure(&mut next);
        if !next.contains(&true) {
            break;
        }
        if next[n] {
            ends.push(i + 1);
        }
        std::mem::swap(&mut cur, &mut next);
    }
    ends
}

fn trim_prefix(toks: &[PTok], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let ends = match_ends(toks, &chars);
    let cut = if greedy { ends.last() } else { ends.first() };
    match cut {
        Some(&cut) => chars[cut..].iter().collect(),
        None => value.to_string(),
    }
}

/// The shortest/longest matching suffix is the prefix of the reversed text matched by the
/// reversed pattern.
fn trim_suffix(toks: &[PTok], value: &str, greedy: bool) -> String {
    let rev_toks: Vec<PTok> = toks.iter().rev().copied().collect();
    let rev_value: String = value.chars().rev().collect();
    trim_prefix(&rev_toks, &rev_value, greedy).chars().rev().collect()
}

/// Replaces the leftmost-longest match (or every match, as Go's `ReplaceAllString` walks
/// them: an empty match right after a match is skipped). The replacement is literal.
fn replace(toks: &[PTok], value: &str, replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let find =
        |from: usize| (from..=chars.len()).find_map(|s| match_ends(toks, &chars[s..]).last().map(|&len| (s, s + len)));
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= chars.len() {
        let Some((start, end)) = find(search) else { break };
        out.extend(&chars[last_end..start]);
        if end > last_end || start == 0 {
            out.push_str(replacement);
        }
        last_end = end;
        if !all {
            break;
        }
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.extend(&chars[last_end.min(chars.len())..]);
    out
}

/// A copy of `cmd` with the parts the instruction expands expanded (see the module's table).
/// Instructions that expand nothing come back unchanged; ARG and FROM are the caller's (their
/// rules depend on build arguments and global scope).
pub fn expand_command(cmd: &Command, lexer: &Lexer, vars: &dyn Vars) -> Result<Command, SubstError> {
    let word = |s: &str| lexer.word(s, vars);
    let opt = |s: &Option<String>| s.as_deref().map(word).transpose();
    let all = |v: &[String]| v.iter().map(|s| word(s)).collect::<Result<Vec<_>, _>>();
    let kvs = |v: &[KeyValue]| {
        v.iter()
            .map(|kv| Ok(KeyValue { key: word(&kv.key)?, value: word(&kv.value)? }))
            .collect::<Result<Vec<_>, SubstError>>()
    };
    let docs = |v: &[Heredoc]| {
        v.iter()
            .map(|h| {
                if !h.expand {
                    return Ok(h.clone());
                }
                let content = Lexer::heredoc(&h.body(), vars)?;
                Ok(Heredoc { content, chomp: false, ..h.clone() })
            })
            .collect::<Result<Vec<_>, SubstError>>()
    };
    Ok(match cmd {
        Command::Env(v) => Command::Env(kvs(v)?),
        Command::Label(v) => Command::Label(kvs(v)?),
        Command::Add(a) => {
            let mut a = a.clone();
            a.sources = all(&a.sources)?;
            a.dest = word(&a.dest)?;
            a.chown = opt(&a.chown)?;
            a.chmod = opt(&a.chmod)?;
            a.checksum = opt(&a.checksum)?;
            a.heredocs = docs(&a.heredocs)?;
            Command::Add(a)
        }
        Command::Copy(c) => {
            let mut c = c.clone();
            c.sources = all(&c.sources)?;
            c.dest = word(&c.dest)?;
            c.chown = opt(&c.chown)?;
            c.chmod = opt(&c.chmod)?;
            c.heredocs = docs(&c.heredocs)?;
            Command::Copy(c)
        }
        Command::Expose(ports) => {
            let mut out = Vec::new();
            for p in ports {
                out.extend(lexer.words(p, vars)?);
            }
            Command::Expose(out)
        }
        Command::Volume(v) => Command::Volume(all(v)?),
        Command::Workdir(p) => Command::Workdir(word(p)?),
        Command::User(u) => Command::User(word(u)?),
        Command::StopSignal(s) => Command::StopSignal(word(s)?),
        Command::Run(r) => {
            let mut r = r.clone();
            for m in &mut r.mounts {
                let expand = |v: &str| word(v).map_err(|e| e.to_string());
                *m = m.expand(&expand).map_err(|message| SubstError { text: m.spec.clone(), message })?;
            }
            Command::Run(r)
        }
        other => other.clone(),
    })
}

/// A platform as build arguments spell it: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The machine berth runs on (normalized as containerd does: arm64 has no variant, 32-bit
    /// arm is v7).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform { os: std::env::consts::OS.to_string(), arch: arch.to_string(), variant: variant.map(str::to_string) }
    }

    /// Parses `os/arch[/variant]` (or a bare architecture, on linux), normalizing the usual
    /// aliases (`x86_64`, `aarch64`, `arm64/v8`, `armhf`...).
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<String> = text.split('/').map(str::to_ascii_lowercase).collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux".to_string(), arch.clone(), None),
            [os, arch] => (os.clone(), arch.clone(), None),
            [os, arch, variant] => (os.clone(), arch.clone(), Some(variant.clone())),
            _ => return Err(format!("invalid platform {text:?}")),
        };
        if os.is_empty() || arch.is_empty() || variant.as_deref() == Some("") {
            return Err(format!("invalid platform {text:?}"));
        }
        let (arch, variant) = match (arch.as_str(), variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", None) => ("amd64", None),
            ("aarch64" | "arm64", None | Some("v8")) => ("arm64", None),
            ("armhf", None) | ("arm", None) => ("arm", Some("v7".to_string())),
            ("armel", None) => ("arm", Some("v6".to_string())),
            ("i386" | "i686" | "386", None) => ("386", None),
            (a, v) => (a, v.map(str::to_string)),
        };
        Ok(Platform { os, arch: arch.to_string(), variant })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// The automatic platform arguments: `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`
/// for the machine that builds, `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`
/// for the image's platform (`--platform`, else the build platform). They are in the global
/// scope (FROM sees them); a stage sees one after `ARG NAME` without a default. A
/// `--build-arg` of the same name overrides each.
pub fn platform_args(build: &Platform, target: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        args.insert(format!("{prefix}PLATFORM"), p.to_string());
        args.insert(format!("{prefix}OS"), p.os.clone());
        args.insert(format!("{prefix}ARCH"), p.arch.clone());
        args.insert(format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default());
    }
    args
}

/// The proxy build arguments: usable in RUN without an ARG, kept out of the cache key and, unless
/// declared with ARG, out of the image's history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// The proxy values a build passes to every RUN: those given with `--build-arg` (there are no
/// defaults from the host's environment, as with Docker).
pub fn proxy_args(build_args: &BTreeMap<String, String>) -> Vec<(String, String)> {
    PROXY_ARGS.iter().filter_map(|k| build_args.get(*k).map(|v| (k.to_string(), v.clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("A", "alpha"),
            ("E", ""),
            ("P", "/usr/local/bin/app.tar.gz"),
            ("S", "a b  c"),
            ("Q", "it's"),
            ("N", "line1\nline2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn w(text: &str) -> String {
        Lexer::new('\\').word(text, &env()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match Lexer::new('\\').word(text, &env()) {
            Ok(v) => panic!("{text} expanded to {v:?}"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(w("$A"), "alpha");
        assert_eq!(w("${A}"), "alpha");
        assert_eq!(w("x${A}y$A.z"), "xalphayalpha.z");
        assert_eq!(w("$UNSET"), "");
        assert_eq!(w("a$"), "a$");
        assert_eq!(w("$ x"), "$ x");
        assert_eq!(w("$1$@$$"), "");
        assert_eq!(w("$12ab"), "ab");
        assert_eq!(w("$A_B"), "");
        assert_eq!(w("${A}_B"), "alpha_B");
        assert_eq!(w("$é"), "");
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(w("${A:-x}"), "alpha");
        assert_eq!(w("${E:-x}"), "x");
        assert_eq!(w("${E-x}"), "");
        assert_eq!(w("${U-x}"), "x");
        assert_eq!(w("${U:-x y}"), "x y");
        assert_eq!(w("${U:-$A}"), "alpha");
        assert_eq!(w("${U:-${V:-deep}}"), "deep");
        assert_eq!(w("${A:+set}"), "set");
        assert_eq!(w("${E:+set}"), "");
        assert_eq!(w("${E+set}"), "set");
        assert_eq!(w("${U+set}"), "");
        assert_eq!(w(r#"${U:-"q}"}"#), "q}");
        assert_eq!(w(r"${U:-a\}b}"), "a}b");
        assert_eq!(w("${A?}"), "alpha");
        assert_eq!(err("${U?}"), "U: is not allowed to be unset");
        assert_eq!(err("${U?must be set}"), "U: must be set");
        assert_eq!(err("${E:?}"), "E: is not allowed to be empty");
        assert_eq!(w("${E?}"), "");
    }

    #[test]
    fn prefix_suffix_and_replace() {
        assert_eq!(w("${P#*/}"), "usr/local/bin/app.tar.gz");
        assert_eq!(w("${P##*/}"), "app.tar.gz");
        assert_eq!(w("${P%.*}"), "/usr/local/bin/app.tar");
        assert_eq!(w("${P%%.*}"), "/usr/local/bin/app");
        assert_eq!(w("${P#/usr}"), "/local/bin/app.tar.gz");
        assert_eq!(w("${P#nomatch}"), "/usr/local/bin/app.tar.gz");
        assert_eq!(w("${P%.t?r.gz}"), "/usr/local/bin/app");
        assert_eq!(w("${A/l/L}"), "aLpha");
        assert_eq!(w("${A//a/A}"), "AlphA");
        assert_eq!(w("${P//\\//:}"), ":usr:local:bin:app.tar.gz");
        assert_eq!(w("${A/l*/}"), "a");
        assert_eq!(w("${A//x/y}"), "alpha");
        assert_eq!(w("${A/#/x}"), "alpha");
        assert_eq!(w("${U/a/b}"), "");
        assert_eq!(w(r"${A#\*}"), "alpha");
        assert_eq!(w("${N#*1}"), "\nline2");
        assert_eq!(w("${N##*e}"), "1\nline2", "* does not cross a newline");
        assert_eq!(err(r"${A#\a}"), r"invalid pattern (\a) in substitution: invalid escape '\a'");
    }

    #[test]
    fn replace_all_walks_like_go() {
        let toks = pattern_tokens("").unwrap_or_default();
        assert_eq!(replace(&toks, "abc", "-", true), "-a-b-c-");
        let toks = pattern_tokens("b*").unwrap_or_default();
        assert_eq!(replace(&toks, "abcb", "X", true), "aX");
        let toks = pattern_tokens("?").unwrap_or_default();
        assert_eq!(replace(&toks, "ab", "X", true), "XX");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "alpha");
        assert_eq!(w(r"\$A"), "$A");
        assert_eq!(w(r#""\$A""#), "$A");
        assert_eq!(w(r"a\nb"), "anb");
        assert_eq!(w(r#""a\nb""#), r"a\nb");
        assert_eq!(w(r#""a\"b""#), "a\"b");
        assert_eq!(w(r#""a\\b""#), r"a\b");
        assert_eq!(w(r#"'a\'"#), r"a\");
        assert_eq!(w("\"it's\""), "it's");
        assert_eq!(w("a\\"), "a");
        assert_eq!(w("/a b"), "/a b");
        assert_eq!(w("\"/a b\""), "/a b");
        assert_eq!(w("$Q"), "it's");
        let tick = Lexer::new('`');
        assert_eq!(tick.word(r"\$A", &env()).ok(), Some(r"\alpha".to_string()));
        assert_eq!(tick.word("`$A", &env()).ok(), Some("$A".to_string()));
        assert_eq!(err("'abc"), "unexpected end of statement while looking for matching single-quote");
        assert_eq!(err("\"abc"), "unexpected end of statement while looking for matching double-quote");
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("${}"), "syntax error: bad substitution");
        assert_eq!(err("${:a}"), "syntax error: bad substitution");
        assert_eq!(err("${"), "syntax error: missing '}'");
        assert_eq!(err("${A"), "syntax error: missing '}'");
        assert_eq!(err("${A:-x"), "syntax error: missing '}'");
        assert_eq!(err("${A/x"), "syntax error: missing '/' in ${}");
        assert_eq!(err("${A/x/y"), "syntax error: missing '}'");
        assert_eq!(err("${A:=x}"), "unsupported modifier (:=) in substitution");
        assert_eq!(err("${A^}"), "unsupported modifier (^) in substitution");
        assert_eq!(err("${A:#x}"), "unsupported modifier (:#) in substitution");
        let deep = format!("{}x{}", "${U:-".repeat(1000), "}".repeat(1000));
        assert_eq!(err(&deep), "too many nested substitutions");
        let e = Lexer::new('\\').word("${}", &NoVars).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("failed to process \"${}\": syntax error: bad substitution"));
    }

    #[test]
    fn every_mount_value_but_from_is_expanded() {
        let df = crate::Dockerfile::parse(
            "FROM x\nRUN --mount=type=cache,target=$T,uid=$U,mode=$M,sharing=$S,id=c-$U true\n\
             RUN --mount=type=tmpfs,target=/t,size=$Z true",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let run = |i: usize, vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            match expand_command(&df.instructions[i].command, &Lexer::new('\\'), &vars) {
                Ok(Command::Run(r)) => Ok(r.mounts[0].clone()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let m = run(1, &[("T", "/c"), ("U", "1000"), ("M", "0700"), ("S", "locked")]).unwrap();
        assert_eq!((m.target.as_deref(), m.uid, m.mode), (Some("/c"), Some(1000), Some(0o700)));
        assert_eq!((m.sharing, m.id.as_deref()), (Some(crate::dockerfile::Sharing::Locked), Some("c-1000")));
        let e = run(1, &[("T", "/c"), ("U", "abc"), ("M", "0700"), ("S", "shared")]).unwrap_err();
        assert!(e.contains("invalid value abc for uid"), "{e}");
        assert_eq!(run(2, &[("Z", "64m")]).unwrap().size, Some(64 << 20));
    }

    #[test]
    fn words_split_after_expansion() {
        let lx = Lexer::new('\\');
        let e = env();
        assert_eq!(lx.words("80 $S", &e).ok(), Some(vec!["80".into(), "a".into(), "b".into(), "c".into()]));
        assert_eq!(lx.words("\"$S\" x", &e).ok(), Some(vec!["a b  c".into(), "x".into()]));
        assert_eq!(lx.words("a\\ b", &e).ok(), Some(vec!["a b".into()]));
        assert_eq!(lx.words("\"\" $E", &e).ok(), Some(vec![]));
    }

    #[test]
    fn unset_names_are_reported() {
        let (v, unset) = Lexer::new('\\').word_unset("$A:${B}:${C:-x}", &env()).unwrap_or_default();
        assert_eq!(v, "alpha::x");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), vec!["B".to_string(), "C".to_string()]);
    }

    #[test]
    fn heredoc_bodies() {
        let e = env();
        assert_eq!(
            Lexer::heredoc("echo \"$A\" '$A' \\$A a\\nb\n", &e).ok(),
            Some("echo \"alpha\" 'alpha' $A anb\n".into())
        );
    }

    #[test]
    fn pair_lists_last_wins() {
        let v = vec![("A".to_string(), "1".to_string()), ("A".to_string(), "2".to_string())];
        assert_eq!(Lexer::new('\\').word("$A", &v).ok(), Some("2".into()));
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), "linux/arm64");
        assert_eq!(Platform::parse("linux/arm").map(|p| p.to_string()).ok(), Some("linux/arm/v7".into()));
        assert_eq!(Platform::parse("x86_64").map(|p| p.to_string()).ok(), Some("linux/amd64".into()));
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("linux/").is_err());
        let args = platform_args(&Platform::parse("linux/amd64").unwrap_or_else(|e| panic!("{e}")), &p);
        assert_eq!(args.get("TARGETPLATFORM").map(String::as_str), Some("linux/arm64"));
        assert_eq!(args.get("TARGETVARIANT").map(String::as_str), Some(""));
        assert_eq!(args.get("BUILDARCH").map(String::as_str), Some("amd64"));
        assert_eq!(args.len(), 8);
        let host = Platform::host();
        assert!(!host.arch.is_empty() && host.os == "linux");
        let mut ba = BTreeMap::new();
        ba.insert("no_proxy".to_string(), "x".to_string());
        ba.insert("FOO".to_string(), "y".to_string());
        assert_eq!(proxy_args(&ba), vec![("no_proxy".to_string(), "x".to_string())]);
        assert!(is_proxy_arg("HTTPS_PROXY") && !is_proxy_arg("Https_Proxy"));
    }
}
