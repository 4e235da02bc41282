//! The Dockerfile parser, written from the Dockerfile reference and BuildKit's behaviour.
//!
//! Lines: parser directives at the top (`# syntax=`, `# escape=`, `# check=`), comments (a
//! line whose first non-blank character is `#`), continuations with the escape character
//! (comment and blank lines inside a continuation are skipped, the latter with a warning),
//! heredocs on RUN, COPY and ADD (and ONBUILD wrapping them). Every instruction becomes a
//! [`Command`]; arguments stay as written (variables are expanded at build time by
//! [`crate::subst`], since their values depend on the build).
//!
//! Errors read `Dockerfile:LINE: INSTRUCTION: message`.

use std::fmt;

use serde::Serialize;

use crate::json::{ExecForm, NOT_STRING_ARRAY, exec_form};
use crate::subst::{Lexer, NoVars};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
    pub warnings: Vec<Warning>,
}

/// The parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Directives {
    /// `\` unless `# escape=` chose `` ` ``.
    pub escape: char,
    /// `# syntax=`: noted (with a warning), never used: berth parses the file itself.
    pub syntax: Option<String>,
    /// `# check=`.
    pub check: Option<Check>,
}

/// `# check=skip=<rules|all>;error=<bool>;experimental=<rules|all>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Check {
    pub skip: Vec<String>,
    /// Warnings are to fail the build.
    pub error: bool,
    pub experimental: Vec<String>,
}

/// Something accepted but worth telling the user: a lint check's finding (`Rule: message`,
/// BuildKit's rule names, which `# check=skip=` names) or a note (no rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

impl Warning {
    /// The check rule, when the warning is a check's finding.
    pub fn rule(&self) -> Option<&str> {
        let (rule, _) = self.message.split_once(": ")?;
        let ok = rule.starts_with(|c: char| c.is_ascii_uppercase()) && rule.chars().all(|c| c.is_ascii_alphanumeric());
        ok.then_some(rule)
    }
}

impl Check {
    /// `skip=` names the warning's rule (or `all`).
    pub fn skips(&self, w: &Warning) -> bool {
        w.rule().is_some_and(|r| self.skip.iter().any(|s| s == "all" || s.eq_ignore_ascii_case(r)))
    }
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instruction {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// Its last line, heredoc bodies included.
    pub end_line: usize,
    /// The logical line: continuations joined, comments dropped, trimmed.
    pub original: String,
    pub command: Command,
}

/// Every instruction, with its arguments as written (not expanded).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    From(FromArgs),
    Run(RunArgs),
    Cmd(CommandLine),
    Label(Vec<KeyValue>),
    Maintainer(String),
    /// Sorted, as BuildKit sorts them.
    Expose(Vec<String>),
    Env(Vec<KeyValue>),
    Add(AddArgs),
    Copy(CopyArgs),
    Entrypoint(CommandLine),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDecl>),
    Onbuild(OnBuildArgs),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// Always JSON.
    Shell(Vec<String>),
}

impl Command {
    /// The instruction's name, upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Label(_) => "LABEL",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Expose(_) => "EXPOSE",
            Command::Env(_) => "ENV",
            Command::Add(_) => "ADD",
            Command::Copy(_) => "COPY",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Volume(_) => "VOLUME",
            Command::User(_) => "USER",
            Command::Workdir(_) => "WORKDIR",
            Command::Arg(_) => "ARG",
            Command::Onbuild(_) => "ONBUILD",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Shell(_) => "SHELL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FromArgs {
    pub image: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
}

/// The shell form (run through SHELL, `/bin/sh -c` by default) or the exec form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandLine {
    /// The text, as written; empty when the instruction had no argument.
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunArgs {
    pub command: CommandLine,
    /// Heredocs of the line, in order (the engine decides how they run, as BuildKit does).
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub security: Security,
}

/// A here-document: `<<NAME`, `<<-NAME`, `<<"NAME"`, `2<<NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    pub name: String,
    /// The body as read, each line with its line ending.
    pub content: String,
    /// No part of the delimiter was quoted: COPY/ADD expand variables in the body.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body's lines (see [`Heredoc::body`]).
    pub chomp: bool,
    /// A file descriptor written before `<<`.
    pub fd: Option<u32>,
}

impl Heredoc {
    /// The body with `<<-`'s leading tabs stripped.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
    }
}

/// A `RUN --mount=...`. Text values are as written: the engine expands `source`, `target`,
/// `id` and `env` ([`crate::subst::expand_command`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub readonly: bool,
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    pub required: bool,
    /// secret: the environment variable to put it in.
    pub env: Option<String>,
    /// The `--mount` value as written: parsed again once its variables are expanded.
    #[serde(skip)]
    pub spec: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Sandbox,
    Insecure,
}

/// An ENV or LABEL pair, as written (quotes and variables still in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One `name[=default]` of an ARG, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddArgs {
    /// Paths, URLs, git references (not the heredocs).
    pub sources: Vec<String>,
    /// Heredocs used as sources: files named after their delimiter.
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub checksum: Option<String>,
    pub link: bool,
    pub keep_git_dir: bool,
    /// `--unpack`: `None` is the default (local archives unpacked, URLs not).
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyArgs {
    pub sources: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    /// A stage name, a stage index or an image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnBuildArgs {
    /// The trigger as stored in the image's `OnBuild` (heredoc bodies appended).
    pub expression: String,
    /// The trigger, parsed.
    pub command: Box<Command>,
}

/// Docker's healthcheck config; durations in nanoseconds, 0 when not given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", text]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// A Dockerfile that cannot be built, with the line to blame (0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file's name in messages: "Dockerfile" unless the caller sets it.
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> ParseError {
        ParseError { file: "Dockerfile".into(), line, message: message.into() }
    }

    /// The same error, naming the file as the user gave it (`-f`).
    pub fn with_file(mut self, file: impl Into<String>) -> ParseError {
        self.file = file.into();
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

impl Dockerfile {
    /// Parses a Dockerfile's text.
    pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
        if text.is_empty() {
            return Err(ParseError::new(0, "the Dockerfile cannot be empty"));
        }
        let mut p = Parser {
            lines: Lines { rest: text, number: 0 },
            escape: '\\',
            directives_done: false,
            seen: Vec::new(),
            syntax: None,
            check: None,
            instructions: Vec::new(),
            warnings: Vec::new(),
        };
        p.run()?;
        if p.instructions.is_empty() {
            return Err(ParseError::new(0, "file with no instructions"));
        }
        let directives = Directives { escape: p.escape, syntax: p.syntax, check: p.check };
        Ok(Dockerfile { directives, instructions: p.instructions, warnings: p.warnings })
    }

    /// Parses one ONBUILD trigger from an image's config, as a child build runs it.
    pub fn parse_trigger(expression: &str) -> Result<Instruction, ParseError> {
        let mut df = Dockerfile::parse(expression)?;
        match (df.instructions.len(), df.instructions.pop()) {
            (1, Some(i)) => Ok(i),
            _ => Err(ParseError::new(0, format!("ONBUILD trigger {expression:?} is not one instruction"))),
        }
    }
}

/// Physical lines, each with its line ending.
struct Lines<'a> {
    rest: &'a str,
    number: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.number += 1;
        if self.number == 1 {
            return Some(line.strip_prefix('\u{feff}').unwrap_or(line));
        }
        Some(line)
    }
}

struct Parser<'a> {
    lines: Lines<'a>,
    escape: char,
    directives_done: bool,
    seen: Vec<String>,
    syntax: Option<String>,
    check: Option<Check>,
    instructions: Vec<Instruction>,
    warnings: Vec<Warning>,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    trim_newline(s).trim_start().starts_with('#')
}

/// Go's regexp `\s`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// The separator BuildKit splits instructions and word lists on: `[\t\v\f\r ]+`.
fn is_word_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn split_words(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(is_word_sep).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

impl Parser<'_> {
    fn run(&mut self) -> Result<(), ParseError> {
        while let Some(raw) = self.lines.next() {
            let start = self.lines.number;
            let token = trim_newline(raw).trim_start();
            self.directive(token, start)?;
            let token = if token.starts_with('#') { "" } else { token };
            let (first, mut end_of_line) = self.trim_continuation(token);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut line = first.to_string();
            let mut empty_continuation = false;
            while !end_of_line {
                let Some(raw) = self.lines.next() else { break };
                let t = trim_newline(raw);
                if is_comment(t) {
                    continue;
                }
                if t.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, eol) = self.trim_continuation(t);
                line.push_str(part);
                end_of_line = eol;
            }
            if empty_continuation {
                let line_no = self.lines.number;
                self.warn(line_no, format!("NoEmptyContinuation: Empty continuation line found in: {line}"));
            }
            let instruction = self.instruction(&line, start)?;
            self.instructions.push(instruction);
        }
        Ok(())
    }

    fn warn(&mut self, line: usize, message: String) {
        self.warnings.push(Warning { line, message });
    }

    /// The escape character at the end of a line (before blanks) continues it, unless it is
    /// itself escaped.
    fn trim_continuation<'s>(&self, s: &'s str) -> (&'s str, bool) {
        let t = s.trim_end_matches([' ', '\t']);
        match t.strip_suffix(self.escape) {
            Some(before) if before.is_empty() || !before.ends_with(self.escape) => (before, false),
            _ => (s, true),
        }
    }

    /// `#key=value` lines before anything else.
    fn directive(&mut self, token: &str, line: usize) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((key, value)) = token.strip_prefix('#').and_then(|body| match_directive(body.trim_start())) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(ParseError::new(line, format!("only one {key} parser directive can be used")));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        let msg = format!("invalid escape token '{value}' does not match ` or \\");
                        return Err(ParseError::new(line, msg));
                    }
                }
            }
            "syntax" => {
                self.syntax = Some(value.to_string());
                let msg = format!("# syntax={value} noted but not used: berth parses Dockerfiles itself");
                self.warn(line, msg);
            }
            _ => self.check = Some(parse_check(value).map_err(|m| ParseError::new(line, m))?),
        }
        Ok(())
    }

    fn instruction(&mut self, line: &str, start: usize) -> Result<Instruction, ParseError> {
        let (name, flags, rest) = split_command(line);
        let lname = name.to_lowercase();
        let at = |message: String| ParseError::new(start, message);
        let prefixed = |message: String| ParseError::new(start, format!("{}: {message}", name.to_uppercase()));
        if !INSTRUCTIONS.contains(&lname.as_str()) {
            return Err(at(format!("unknown instruction: {name}")));
        }
        let mut heredocs = Vec::new();
        if takes_heredocs(&lname, &rest).map_err(prefixed)? {
            for mut doc in heredocs_from_line(line).map_err(prefixed)? {
                self.read_heredoc(&mut doc).map_err(prefixed)?;
                heredocs.push(doc);
            }
        }
        let mut ctx = Ctx { escape: self.escape, line, warnings: Vec::new() };
        let command = parse_command(&lname, &flags, &rest, heredocs, &mut ctx).map_err(prefixed)?;
        for w in ctx.warnings {
            self.warn(start, w);
        }
        let original = line.trim().to_string();
        Ok(Instruction { line: start, end_line: self.lines.number, original, command })
    }

    fn read_heredoc(&mut self, doc: &mut Heredoc) -> Result<(), String> {
        while let Some(raw) = self.lines.next() {
            let mut t = trim_newline(raw);
            if doc.chomp {
                t = t.trim_start_matches('\t');
            }
            if t == doc.name {
                return Ok(());
            }
            doc.content.push_str(raw);
        }
        Err(format!("unterminated heredoc <<{}", doc.name))
    }
}

const INSTRUCTIONS: [&str; 18] = [
    "from",
    "run",
    "cmd",
    "label",
    "maintainer",
    "expose",
    "env",
    "add",
    "copy",
    "entrypoint",
    "volume",
    "user",
    "workdir",
    "arg",
    "onbuild",
    "stopsignal",
    "healthcheck",
    "shell",
];

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` on what follows `#`.
fn match_directive(body: &str) -> Option<(&str, &str)> {
    let name_end = body.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(body.len());
    let name = &body[..name_end];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let rest = body[name_end..].trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let value = rest.trim_matches(is_re_space);
    if !value.is_empty() {
        return Some((name, value));
    }
    // Only blanks: the lazy group still takes one character, the last.
    let last = rest.char_indices().last().map_or(0, |(i, _)| i);
    Some((name, &rest[last..]))
}

fn parse_check(value: &str) -> Result<Check, String> {
    let mut check = Check::default();
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid check option {part:?}");
        let (k, v) = part.split_once('=').ok_or_else(bad)?;
        let list = || v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        match k.trim() {
            "skip" => check.skip = list(),
            "experimental" => check.experimental = list(),
            "error" => check.error = parse_bool(v.trim()).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(check)
}

/// Instruction name, the `--flag` words at the start of its arguments, and the rest.
fn split_command(line: &str) -> (&str, Vec<String>, String) {
    let t = line.trim();
    match t.find(is_word_sep) {
        None => (t, Vec::new(), String::new()),
        Some(i) => {
            let (flags, rest) = extract_flags(t[i..].trim_start_matches(is_word_sep));
            (&t[..i], flags, rest.trim().to_string())
        }
    }
}

/// The leading `--name[=value]` words (quotes and `\` escapes allowed in them); `--` alone ends
/// them.
fn extract_flags(line: &str) -> (Vec<String>, &str) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let (mut words, mut word, mut phase, mut blank_ok) = (Vec::new(), String::new(), Phase::Spaces, false);
    let mut i = 0;
    loop {
        let Some(&(at, ch)) = chars.get(i) else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return (words, "");
        };
        i += 1;
        match phase {
            Phase::Spaces if ch.is_whitespace() => {}
            Phase::Spaces => {
                if ch != '-' || chars.get(i).map(|c| c.1) != Some('-') {
                    return (words, &line[at..]);
                }
                phase = Phase::Word;
                word.push(ch);
            }
            Phase::Word if ch.is_whitespace() => {
                if word == "--" {
                    return (words, &line[at..]);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                phase = Phase::Spaces;
            }
            Phase::Word if ch == '\'' || ch == '"' => {
                blank_ok = true;
                phase = Phase::Quote(ch);
            }
            Phase::Quote(q) if ch == q => phase = Phase::Word,
            Phase::Word | Phase::Quote(_) => {
                if ch == '\\' {
                    match chars.get(i) {
                        Some(&(_, next)) => {
                            i += 1;
                            word.push(next);
                        }
                        // A `\` at the very end is dropped.
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
}

/// Whether the line's heredocs are read: RUN, COPY, ADD (or ONBUILD of one) in shell form.
fn takes_heredocs(lname: &str, rest: &str) -> Result<bool, String> {
    let shell_form = |rest: &str| match exec_form(rest) {
        ExecForm::Strings(_) => Ok(false),
        ExecForm::NotStringArray => Err(NOT_STRING_ARRAY.to_string()),
        ExecForm::Invalid => Ok(true),
    };
    match lname {
        "run" | "copy" | "add" => shell_form(rest),
        "onbuild" => {
            let (sub, _, sub_rest) = split_command(rest);
            match sub.to_lowercase().as_str() {
                "run" | "copy" | "add" => shell_form(&sub_rest),
                _ => Ok(false),
            }
        }
        _ => Ok(false),
    }
}

/// The heredocs a line opens, in order: the words (quotes kept) that read `[N]<<[-]NAME`.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    // A line the lexer cannot read (an open quote) opens no heredoc, as in BuildKit.
    let Ok(words) = Lexer::heredoc_line().words(line, &NoVars) else { return Ok(Vec::new()) };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = heredoc_word(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// `^(\d*)<<(-?)\s*([^<]*)$`, the delimiter being one shell word; quoting any part of it turns
/// expansion off.
fn heredoc_word(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len());
    let Some(rest) = word[digits..].strip_prefix("<<") else { return Ok(None) };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let lex = |raw: bool| Lexer::heredoc_name(raw).words(rest, &NoVars).map_err(|e| e.to_string());
    let plain = lex(false)?;
    let [name] = plain.as_slice() else { return Ok(None) };
    let raw = lex(true)?;
    let [raw] = raw.as_slice() else {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {rest}"));
    };
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw),
        chomp,
        fd: if digits > 0 { word[..digits].parse().ok() } else { None },
    }))
}

struct Ctx<'a> {
    escape: char,
    /// The whole logical line (for ONBUILD's expression).
    line: &'a str,
    warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Strs,
}

/// Parsed `--flags` of one instruction.
struct Flags(Vec<(&'static str, Vec<String>)>);

impl Flags {
    fn parse(words: &[String], spec: &[(&'static str, Kind)]) -> Result<Flags, String> {
        let mut out: Vec<(&'static str, Vec<String>)> = Vec::new();
        for w in words {
            let Some(arg) = w.strip_prefix("--") else { return Err(format!("arg should start with -- : {w}")) };
            if arg.is_empty() {
                break;
            }
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some(&(key, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown flag: --{name}"));
            };
            let missing = || format!("missing a value on flag: --{name}");
            let value = match (kind, value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) => match v.to_lowercase().as_str() {
                    "" => return Err(missing()),
                    b @ ("true" | "false") => b.to_string(),
                    _ => return Err(format!("expecting boolean value for flag --{name}, not: {v}")),
                },
                (_, None) => return Err(missing()),
                (_, Some(v)) => v.to_string(),
            };
            match out.iter_mut().find(|(n, _)| *n == key) {
                Some(_) if kind != Kind::Strs => return Err(format!("duplicate flag specified: --{name}")),
                Some((_, values)) => values.push(value),
                None => out.push((key, vec![value])),
            }
        }
        Ok(Flags(out))
    }

    fn values(&self, name: &str) -> &[String] {
        self.0.iter().find(|(n, _)| *n == name).map_or(&[], |(_, v)| v.as_slice())
    }

    /// A string flag; given empty, it is as if not given (as in BuildKit).
    fn string(&self, name: &str) -> Option<String> {
        self.values(name).first().filter(|v| !v.is_empty()).cloned()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.values(name).first().map(|v| v == "true")
    }

    fn none(words: &[String]) -> Result<(), String> {
        Flags::parse(words, &[]).map(|_| ())
    }
}

fn shell_or_exec(rest: &str) -> Result<CommandLine, String> {
    if rest.is_empty() {
        return Ok(CommandLine::Shell(String::new()));
    }
    match exec_form(rest) {
        ExecForm::Strings(v) => Ok(CommandLine::Exec(v)),
        ExecForm::NotStringArray => Err(NOT_STRING_ARRAY.into()),
        ExecForm::Invalid => Ok(CommandLine::Shell(rest.to_string())),
    }
}

/// COPY, ADD and VOLUME: a JSON array, else words split on blanks (so paths with spaces need
/// JSON). The flag tells whether it was JSON.
fn word_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match exec_form(rest) {
        ExecForm::Strings(v) => Ok((v, true)),
        ExecForm::NotStringArray => Err(NOT_STRING_ARRAY.into()),
        ExecForm::Invalid => Ok((split_words(rest), false)),
    }
}

fn exactly_one(rest: &str, flags: &[String]) -> Result<String, String> {
    if rest.is_empty() {
        return Err("requires exactly one argument".into());
    }
    Flags::none(flags)?;
    Ok(rest.to_string())
}

fn parse_command(
    lname: &str,
    flags: &[String],
    rest: &str,
    heredocs: Vec<Heredoc>,
    ctx: &mut Ctx,
) -> Result<Command, String> {
    Ok(match lname {
        "from" => {
            let args = split_words(rest);
            let name = match args.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(format!(
                            "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                        ));
                    }
                    Some(lower)
                }
                _ => return Err("requires either one or three arguments".into()),
            };
            let f = Flags::parse(flags, &[("platform", Kind::Str)])?;
            Command::From(FromArgs { image: args[0].clone(), name, platform: f.string("platform") })
        }
        "run" => {
            let spec = [("mount", Kind::Strs), ("network", Kind::Str), ("security", Kind::Str)];
            let f = Flags::parse(flags, &spec)?;
            let command = shell_or_exec(rest)?;
            let mounts = f.values("mount").iter().map(|m| Mount::parse(m)).collect::<Result<Vec<_>, _>>()?;
            let network = match f.values("network").first().map_or("default", String::as_str) {
                "default" => Network::Default,
                "none" => Network::None,
                "host" => Network::Host,
                other => return Err(format!("unsupported network mode {other:?}")),
            };
            let security = match f.values("security").first().map_or("sandbox", String::as_str) {
                "sandbox" => Security::Sandbox,
                "insecure" => Security::Insecure,
                other => return Err(format!("security {other:?} is not valid")),
            };
            Command::Run(RunArgs { command, heredocs, mounts, network, security })
        }
        "cmd" | "entrypoint" => {
            Flags::none(flags)?;
            let line = shell_or_exec(rest)?;
            if lname == "cmd" { Command::Cmd(line) } else { Command::Entrypoint(line) }
        }
        "shell" => {
            Flags::none(flags)?;
            match exec_form(rest) {
                _ if rest.is_empty() => return Err("requires at least one argument".into()),
                ExecForm::Strings(v) if v.is_empty() => return Err("requires at least one argument".into()),
                ExecForm::Strings(v) => Command::Shell(v),
                ExecForm::NotStringArray => return Err(NOT_STRING_ARRAY.into()),
                ExecForm::Invalid => return Err("requires the arguments to be in JSON form".into()),
            }
        }
        "env" | "label" => {
            let (pairs, legacy) = parse_name_val(rest, ctx.escape)?;
            Flags::none(flags)?;
            if pairs.is_empty() {
                return Err("requires at least one argument".into());
            }
            if pairs.iter().any(|kv| kv.key.is_empty()) {
                return Err("names can not be blank".into());
            }
            let upper = lname.to_uppercase();
            if legacy {
                ctx.warnings.push(format!(
                    "LegacyKeyValueFormat: \"{upper} key=value\" should be used instead of legacy \"{upper} key value\" format"
                ));
            }
            if lname == "env" { Command::Env(pairs) } else { Command::Label(pairs) }
        }
        "maintainer" => {
            let m = exactly_one(rest, flags)?;
            ctx.warnings
                .push("MaintainerDeprecated: the MAINTAINER instruction is deprecated, use a label instead".into());
            Command::Maintainer(m)
        }
        "expose" => {
            let mut ports = split_words(rest);
            if ports.is_empty() {
                return Err("requires at least one argument".into());
            }
            Flags::none(flags)?;
            ports.sort();
            Command::Expose(ports)
        }
        "add" | "copy" => parse_add_copy(lname, flags, rest, heredocs)?,
        "volume" => {
            let (paths, _) = word_list(rest)?;
            if paths.is_empty() {
                return Err("requires at least one argument".into());
            }
            Flags::none(flags)?;
            let paths: Vec<String> = paths.iter().map(|p| p.trim().to_string()).collect();
            if paths.iter().any(String::is_empty) {
                return Err("a volume can not be an empty string".into());
            }
            Command::Volume(paths)
        }
        "user" => Command::User(exactly_one(rest, flags)?),
        "workdir" => Command::Workdir(exactly_one(rest, flags)?),
        "stopsignal" => Command::StopSignal(exactly_one(rest, flags)?),
        "arg" => {
            let words = parse_words(rest, ctx.escape);
            if words.is_empty() {
                return Err("requires at least one argument".into());
            }
            Flags::none(flags)?;
            let decls = words
                .into_iter()
                .map(|w| match w.split_once('=') {
                    Some(("", _)) => Err("names can not be blank".to_string()),
                    Some((name, default)) => Ok(ArgDecl { name: name.into(), default: Some(default.into()) }),
                    None => Ok(ArgDecl { name: w, default: None }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Command::Arg(decls)
        }
        "onbuild" => parse_onbuild(flags, rest, heredocs, ctx)?,
        "healthcheck" => parse_healthcheck(flags, rest)?,
        _ => return Err("unknown instruction".into()),
    })
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_add_copy(lname: &str, flags: &[String], rest: &str, heredocs: Vec<Heredoc>) -> Result<Command, String> {
    let (mut args, json) = word_list(rest)?;
    if args.len() < 2 {
        return Err(
            "requires at least two arguments, but only one was provided. Destination could not be determined".into()
        );
    }
    let is_copy = lname == "copy";
    let spec: &[(&'static str, Kind)] = if is_copy {
        &[
            ("from", Kind::Str),
            ("chown", Kind::Str),
            ("chmod", Kind::Str),
            ("link", Kind::Bool),
            ("parents", Kind::Bool),
            ("exclude", Kind::Strs),
        ]
    } else {
        &[
            ("chown", Kind::Str),
            ("chmod", Kind::Str),
            ("link", Kind::Bool),
            ("keep-git-dir", Kind::Bool),
            ("checksum", Kind::Str),
            ("unpack", Kind::Bool),
            ("exclude", Kind::Strs),
        ]
    };
    let f = Flags::parse(flags, spec)?;
    let dest = args.pop().unwrap_or_default();
    if !json && heredoc_word(&dest)?.is_some() {
        return Err("cannot accept a heredoc as a destination".into());
    }
    let mut sources = Vec::new();
    let mut docs = Vec::new();
    for src in args {
        match if json { None } else { heredoc_word(&src)? } {
            Some(word) => match heredocs.iter().find(|h| h.name == word.name) {
                Some(doc) => docs.push(doc.clone()),
                // A heredoc word the line lexer did not see (odd quoting): empty, as BuildKit.
                None => docs.push(word),
            },
            None => sources.push(src),
        }
    }
    let exclude = f.values("exclude").to_vec();
    let (chown, chmod, link) = (f.string("chown"), f.string("chmod"), f.bool("link").unwrap_or(false));
    Ok(if is_copy {
        let parents = f.bool("parents").unwrap_or(false);
        Command::Copy(CopyArgs {
            sources,
            heredocs: docs,
            dest,
            from: f.string("from"),
            chown,
            chmod,
            link,
            parents,
            exclude,
        })
    } else {
        Command::Add(AddArgs {
            sources,
            heredocs: docs,
            dest,
            chown,
            chmod,
            checksum: f.string("checksum"),
            link,
            keep_git_dir: f.bool("keep-git-dir").unwrap_or(false),
            unpack: f.bool("unpack"),
            exclude,
        })
    })
}

fn parse_onbuild(flags: &[String], rest: &str, heredocs: Vec<Heredoc>, ctx: &mut Ctx) -> Result<Command, String> {
    if rest.is_empty() {
        return Err("requires at least one argument".into());
    }
    Flags::none(flags)?;
    let (sub, sub_flags, sub_rest) = split_command(rest);
    let sub_lname = sub.to_lowercase();
    let upper = sub.to_uppercase();
    match sub_lname.as_str() {
        "onbuild" => return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "maintainer" | "from" => return Err(format!("{upper} isn't allowed as an ONBUILD trigger")),
        l if !INSTRUCTIONS.contains(&l) => return Err(format!("unknown instruction: {sub}")),
        _ => {}
    }
    // The trigger as stored: the line without `ONBUILD` (`(?i)^\s*ONBUILD\s*`), heredocs after.
    let line = ctx.line.trim_start_matches(is_re_space);
    let mut expression = line.get(7..).unwrap_or("").trim_start_matches(is_re_space).to_string();
    for doc in &heredocs {
        expression.push('\n');
        expression.push_str(&doc.content);
        expression.push_str(&doc.name);
    }
    let mut inner = Ctx { escape: ctx.escape, line: rest, warnings: Vec::new() };
    let command =
        parse_command(&sub_lname, &sub_flags, &sub_rest, heredocs, &mut inner).map_err(|e| format!("{upper}: {e}"))?;
    Ok(Command::Onbuild(OnBuildArgs { expression, command: Box::new(command) }))
}

fn parse_healthcheck(flags: &[String], rest: &str) -> Result<Command, String> {
    let Some(typ_end) = (!rest.is_empty()).then(|| rest.find(char::is_whitespace).unwrap_or(rest.len())) else {
        return Err("requires at least one argument".into());
    };
    let typ = rest[..typ_end].to_uppercase();
    let args_text = rest[typ_end..].trim_start();
    let none =
        Healthcheck { test: Vec::new(), interval: 0, timeout: 0, start_period: 0, start_interval: 0, retries: 0 };
    if typ == "NONE" {
        // Flags are not even read after NONE (BuildKit ignores them too).
        let empty = args_text.is_empty() || exec_form(args_text) == ExecForm::Strings(Vec::new());
        if !empty {
            return Err("NONE takes no arguments".into());
        }
        return Ok(Command::Healthcheck(Healthcheck { test: vec!["NONE".into()], ..none }));
    }
    let spec = [
        ("interval", Kind::Str),
        ("timeout", Kind::Str),
        ("start-period", Kind::Str),
        ("start-interval", Kind::Str),
        ("retries", Kind::Str),
    ];
    let f = Flags::parse(flags, &spec)?;
    if typ != "CMD" {
        return Err(format!("unknown type {typ:?} (try CMD)"));
    }
    let test = match shell_or_exec(args_text)? {
        CommandLine::Shell(s) if s.is_empty() => return Err("missing command after CMD".into()),
        CommandLine::Exec(v) if v.is_empty() => return Err("missing command after CMD".into()),
        CommandLine::Shell(s) => vec!["CMD-SHELL".to_string(), s],
        CommandLine::Exec(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
    };
    let interval = |name: &str| -> Result<u64, String> {
        let Some(v) = f.string(name) else { return Ok(0) };
        let d = parse_duration(&v).map_err(|e| format!("--{name}: {e}"))?;
        match d {
            0 => Ok(0),
            d if d < 1_000_000 => Err(format!("--{name} cannot be less than 1ms")),
            d => Ok(d as u64),
        }
    };
    let retries = match f.string("retries") {
        None => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(r) if r < 0 => return Err(format!("--retries cannot be negative ({r})")),
            Ok(r) => u32::try_from(r).ok().filter(|r| *r <= i32::MAX as u32),
            Err(_) => None,
        }
        .ok_or_else(|| format!("invalid value for --retries: {v}"))?,
    };
    Ok(Command::Healthcheck(Healthcheck {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_end = after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {s:?}")),
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
        let mut part = int.checked_mul(scale).ok_or_else(bad)?;
        if !frac.is_empty() {
            // Enough digits for a nanosecond; more cannot change the result.
            let digits = &frac[..frac.len().min(20)];
            let f: u128 = digits.parse().map_err(|_| bad())?;
            part += f * scale / 10u128.pow(digits.len() as u32);
        }
        total = total.checked_add(part).filter(|t| *t <= 1 << 63).ok_or_else(bad)?;
        rest = after;
    }
    if neg { Ok(-(total as i128) as i64) } else { i64::try_from(total).map_err(|_| bad()) }
}

/// ENV and LABEL: `k=v ...` (quote-aware words), or the legacy `k rest of line`. The flag tells
/// which.
fn parse_name_val(rest: &str, escape: char) -> Result<(Vec<KeyValue>, bool), String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok((Vec::new(), false)) };
    if !first.contains('=') {
        let Some(i) = rest.find(is_word_sep) else { return Err("must have two arguments".into()) };
        let value = rest[i..].trim_start_matches(is_word_sep);
        return Ok((vec![KeyValue { key: rest[..i].to_string(), value: value.to_string() }], true));
    }
    let pairs = words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok(KeyValue { key: k.into(), value: v.into() }),
            None => Err(format!("syntax error - can't find = in {w:?}. Must be of the form: name=value")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((pairs, false))
}

/// Words separated by blanks, quotes and escapes kept (removed later, by expansion).
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let (mut words, mut word, mut blank_ok) = (Vec::new(), String::new(), false);
    // None: between words; Some(None): in a word; Some(Some(q)): inside quote q.
    let mut state: Option<Option<char>> = None;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match state {
            None if ch.is_whitespace() => continue,
            None => state = Some(None),
            Some(_) => {}
        }
        match state {
            Some(None) if ch.is_whitespace() => {
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                state = None;
                continue;
            }
            Some(None) if ch == '\'' || ch == '"' => {
                blank_ok = true;
                state = Some(Some(ch));
            }
            Some(Some(q)) if ch == q => state = Some(None),
            _ => {}
        }
        let quoted_single = state == Some(Some('\''));
        if ch == escape && !quoted_single {
            // An escape at the very end is dropped; otherwise it stays with what it escapes.
            let Some(&next) = chars.get(i) else {
                state = Some(None);
                continue;
            };
            word.push(ch);
            word.push(next);
            i += 1;
            continue;
        }
        word.push(ch);
    }
    if state.is_some() && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_uint(v: &str, radix: u32) -> Option<u32> {
    if v.is_empty() || !v.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(v, radix).ok()
}

/// go-units' `RAMInBytes`: `<number>[ ][kmgtp][i][b]`, binary multiples.
fn parse_ram(v: &str) -> Option<u64> {
    let num_end = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
    let (num, unit) = v.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut u = unit.as_str();
    let mult: f64 = match u.chars().next() {
        Some(c @ ('k' | 'm' | 'g' | 't' | 'p')) => {
            u = &u[1..];
            1024f64.powi(1 + "kmgtp".find(c).unwrap_or(0) as i32)
        }
        _ => 1.0,
    };
    let u = u.strip_prefix('i').unwrap_or(u);
    let u = u.strip_prefix('b').unwrap_or(u);
    if !u.is_empty() {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    Some((n * mult) as u64)
}

/// Go's `encoding/csv` for one record: `,`-separated, `"..."` fields with `""` for a quote.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Err("failed to parse csv mounts: EOF".into());
    }
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("failed to parse csv mounts: extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("failed to parse csv mounts: extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("failed to parse csv mounts: bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// What expands a `--mount` value's variables.
pub type Expander<'a> = &'a dyn Fn(&str) -> Result<String, String>;

impl Mount {
    /// One `--mount` value: `type=cache,target=/root/.cache,...` (BuildKit's rules and
    /// messages). A number or keyword option with a variable is checked once expanded
    /// ([`Mount::expand`]); `from` takes no variables.
    pub fn parse(spec: &str) -> Result<Mount, String> {
        Mount::parse_with(spec, None)
    }

    /// The mount with every value but `from` expanded by `word`, then checked.
    pub fn expand(&self, word: Expander) -> Result<Mount, String> {
        Mount::parse_with(&self.spec, Some(word))
    }

    fn parse_with(spec: &str, word: Option<Expander>) -> Result<Mount, String> {
        let mut m = Mount {
            spec: spec.to_string(),
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            readonly: false,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
        };
        let mut ro_auto = true;
        for field in csv_fields(spec)? {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_lowercase(), Some(v.to_string())),
                None => (field.to_lowercase(), None),
            };
            let unexpected =
                |key: &str, m: &Mount| format!("unexpected key '{key}' for mount type '{}'", m.kind.as_str());
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => m.readonly = true,
                    "readwrite" | "rw" => m.readonly = false,
                    "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => m.required = true,
                    "required" => return Err(unexpected(&key, &m)),
                    _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
                }
                if key != "required" {
                    ro_auto = false;
                }
                continue;
            };
            let typed = matches!(
                key.as_str(),
                "type"
                    | "readonly"
                    | "ro"
                    | "readwrite"
                    | "rw"
                    | "required"
                    | "size"
                    | "sharing"
                    | "mode"
                    | "uid"
                    | "gid"
            );
            let value = match word {
                _ if key == "from" => {
                    if value.find('$').is_some_and(|i| i + 1 != value.len()) {
                        return Err("'from' doesn't support variable expansion, define alias stage instead".into());
                    }
                    value
                }
                Some(word) => word(&value)?,
                // Checked once expanded.
                None if typed && value.contains('$') => continue,
                None => value,
            };
            let invalid = || format!("invalid value for {key}: {value}");
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => return Err(format!("unsupported mount type {value:?}")),
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.readonly = parse_bool(&value).ok_or_else(invalid)?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !parse_bool(&value).ok_or_else(invalid)?;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = parse_bool(&value).ok_or_else(invalid)?;
                }
                "size" if m.kind == MountType::Tmpfs => m.size = Some(parse_ram(&value).ok_or_else(invalid)?),
                "required" | "size" => return Err(unexpected(&key, &m)),
                "id" => m.id = Some(value),
                "sharing" => {
                    if m.kind != MountType::Cache {
                        return Err(format!("invalid cache sharing set for {} mount", m.kind.as_str()));
                    }
                    m.sharing = Some(match value.to_lowercase().as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => return Err(format!("unsupported sharing value {value:?}")),
                    });
                }
                "mode" => {
                    m.mode = Some(parse_uint(&value, 8).ok_or_else(|| format!("invalid value {value} for mode"))?)
                }
                "uid" => m.uid = Some(parse_uint(&value, 10).ok_or_else(|| format!("invalid value {value} for uid"))?),
                "gid" => m.gid = Some(parse_uint(&value, 10).ok_or_else(|| format!("invalid value {value} for gid"))?),
                "env" => m.env = Some(value),
                _ => return Err(format!("unexpected key '{key}' in '{field}'")),
            }
        }
        let kind = m.kind.as_str();
        if !matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
            for (name, set) in [("mode", m.mode.is_some()), ("uid", m.uid.is_some()), ("gid", m.gid.is_some())] {
                if set {
                    return Err(format!("{name} not allowed for \"{kind}\" type mounts"));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.kind == MountType::Secret {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.sharing.is_some() {
                return Err("secret mount should not define sharing".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err("one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Dockerfile {
        Dockerfile::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> String {
        match Dockerfile::parse(text) {
            Ok(df) => panic!("{text:?} parsed: {df:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn one(text: &str) -> Command {
        let mut df = parse(text);
        assert_eq!(df.instructions.len(), 1, "{text:?}");
        df.instructions.remove(0).command
    }

    fn shell(s: &str) -> CommandLine {
        CommandLine::Shell(s.into())
    }

    fn exec(v: &[&str]) -> CommandLine {
        CommandLine::Exec(v.iter().map(|s| s.to_string()).collect())
    }

    fn run_line(text: &str) -> CommandLine {
        match one(text) {
            Command::Run(r) => r.command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn continuations_and_comments() {
        assert_eq!(run_line("RUN a \\\n  b"), shell("a   b"));
        assert_eq!(run_line("RUN echo c\\\n# c\nd"), shell("echo cd"));
        assert_eq!(run_line("RUN a\\  \t\nb"), shell("ab"));
        assert_eq!(run_line("RUN a\\\\\n"), shell("a\\\\"), "an escaped escape does not continue");
        assert_eq!(run_line("RUN a \\"), shell("a"), "continuation at the end of the file");
        let df = parse("RUN a \\\n\n  b");
        assert_eq!(df.warnings.len(), 1);
        assert_eq!(df.instructions[0].end_line, 3);
        assert_eq!(run_line("  RUN x # not a comment"), shell("x # not a comment"));
        assert_eq!(parse("# c\n\n   # c2\nRUN x\r\n").instructions[0].line, 4);
        assert_eq!(run_line("\u{feff}RUN x"), shell("x"));
    }

    #[test]
    fn directives() {
        let df = parse("# escape=`\nRUN a `\n b\nCOPY a\\b c\\");
        assert_eq!(df.directives.escape, '`');
        assert_eq!(
            df.instructions[0].command,
            Command::Run(RunArgs {
                command: shell("a  b"),
                heredocs: vec![],
                mounts: vec![],
                network: Network::Default,
                security: Security::Sandbox
            })
        );
        let df = parse("  #  ESCAPE =  `  \n# Syntax=docker/dockerfile:1\n#check=skip=A,B;error=true\nRUN x");
        assert_eq!(df.directives.escape, '`');
        assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        let check = df.directives.check.unwrap_or_default();
        assert_eq!((check.skip, check.error), (vec!["A".to_string(), "B".to_string()], true));
        // After a comment, a blank line or an unknown directive: just a comment.
        assert_eq!(parse("# hello\n# escape=`\nRUN x").directives.escape, '\\');
        assert_eq!(parse("\n# escape=`\nRUN x").directives.escape, '\\');
        assert_eq!(parse("# foo=bar\n# escape=`\nRUN x").directives.escape, '\\');
        assert_eq!(parse("RUN x\n# escape=`\n").directives.escape, '\\');
        assert_eq!(err("# escape=`\n# escape=\\\nRUN x"), "Dockerfile:2: only one escape parser directive can be used");
        assert_eq!(err("# escape=x\nRUN x"), "Dockerfile:1: invalid escape token 'x' does not match ` or \\");
        assert_eq!(err("# check=foo\nRUN x"), "Dockerfile:1: invalid check option \"foo\"");
        assert_eq!(match_directive("a= \t"), Some(("a", "\t")));
    }

    #[test]
    fn heredocs() {
        let df = parse("RUN <<EOF\necho $HOME\n  EOF\nEOF\nRUN x");
        let Command::Run(r) = &df.instructions[0].command else { panic!() };
        assert_eq!(r.command, shell("<<EOF"));
        assert_eq!(r.heredocs[0].content, "echo $HOME\n  EOF\n");
        assert!(r.heredocs[0].expand && !r.heredocs[0].chomp);
        assert_eq!((df.instructions[0].end_line, df.instructions[1].line), (4, 5));

        let Command::Run(r) = one("RUN <<-\"EOF\" 3<<'X' cat\n\t\ta\n\tEOF\nb\nX\n") else { panic!() };
        assert_eq!(r.heredocs.len(), 2);
        assert!(r.heredocs[0].chomp && !r.heredocs[0].expand);
        assert_eq!(r.heredocs[0].body(), "a\n");
        assert_eq!((r.heredocs[1].name.as_str(), r.heredocs[1].fd, r.heredocs[1].expand), ("X", Some(3), false));

        // Not heredocs: quoted, glued to a word, JSON form, other instructions.
        assert_eq!(run_line("RUN echo '<<EOF'"), shell("echo '<<EOF'"));
        assert_eq!(parse("RUN cat<<EOF\nRUN x").instructions.len(), 2);
        assert_eq!(run_line("RUN [\"cat\", \"<<EOF\"]"), exec(&["cat", "<<EOF"]));
        assert_eq!(parse("CMD cat <<EOF\nRUN x").instructions.len(), 2);
        assert_eq!(run_line("RUN echo \"<<EOF"), shell("echo \"<<EOF"), "an open quote hides heredocs");

        assert_eq!(err("FROM a\nRUN <<EOF\nx\n"), "Dockerfile:2: RUN: unterminated heredoc <<EOF");
        let Command::Copy(c) = one("COPY <<A <<\"B\" /dst/\na $x\nA\nb\nB") else { panic!() };
        assert_eq!((c.heredocs.len(), c.sources.len(), c.dest.as_str()), (2, 0, "/dst/"));
        assert!(c.heredocs[0].expand && !c.heredocs[1].expand);
        assert_eq!(err("COPY a <<EOF\nx\nEOF"), "Dockerfile:1: COPY: cannot accept a heredoc as a destination");
        let df = parse("ONBUILD RUN <<EOF\nls\nEOF\n");
        let Command::Onbuild(o) = &df.instructions[0].command else { panic!() };
        assert_eq!(o.expression, "RUN <<EOF\nls\nEOF");
        let trigger = Dockerfile::parse_trigger(&o.expression).map(|i| i.command);
        assert_eq!(trigger.as_ref(), Ok(o.command.as_ref()));
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(one("CMD [\"a\", \"b\"]"), Command::Cmd(exec(&["a", "b"])));
        assert_eq!(one("CMD []"), Command::Cmd(exec(&[])));
        assert_eq!(one("CMD"), Command::Cmd(shell("")));
        assert_eq!(one("ENTRYPOINT ['a']"), Command::Entrypoint(shell("['a']")));
        assert_eq!(one("CMD [\"a\"] # x"), Command::Cmd(exec(&["a"])));
        assert_eq!(err("CMD [1]"), format!("Dockerfile:1: CMD: {NOT_STRING_ARRAY}"));
        assert_eq!(one("SHELL [\"bash\", \"-c\"]"), Command::Shell(vec!["bash".into(), "-c".into()]));
        assert_eq!(err("SHELL bash -c"), "Dockerfile:1: SHELL: requires the arguments to be in JSON form");
        assert_eq!(err("SHELL []"), "Dockerfile:1: SHELL: requires at least one argument");
        assert_eq!(one("VOLUME [\"/a b\", \"/c\"]"), Command::Volume(vec!["/a b".into(), "/c".into()]));
        assert_eq!(one("VOLUME /a  /b"), Command::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(err("VOLUME [\" \"]"), "Dockerfile:1: VOLUME: a volume can not be an empty string");
    }

    #[test]
    fn flags() {
        let Command::Copy(c) = one("COPY --from=build --chown=\"a b\" --link --exclude=*.md --exclude=x a b /d/")
        else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.chown.as_deref(), Some("a b"));
        assert!(c.link && !c.parents);
        assert_eq!(c.exclude, vec!["*.md".to_string(), "x".to_string()]);
        assert_eq!(c.sources, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(err("COPY --chown a b"), "Dockerfile:1: COPY: missing a value on flag: --chown");
        assert_eq!(err("COPY --link=yes a b"), "Dockerfile:1: COPY: expecting boolean value for flag --link, not: yes");
        assert_eq!(err("COPY --from=a --from=b a b"), "Dockerfile:1: COPY: duplicate flag specified: --from");
        assert_eq!(err("ADD --from=a a b"), "Dockerfile:1: ADD: unknown flag: --from");
        assert_eq!(err("ENV --x=1 a=b"), "Dockerfile:1: ENV: unknown flag: --x");
        assert_eq!(run_line("RUN -- --x"), shell("--x"));
        assert_eq!(run_line("RUN --network=none -x"), shell("-x"));
        assert_eq!(extract_flags(r#"--a="x y" --b=\" c"#), (vec!["--a=x y".to_string(), "--b=\"".to_string()], "c"));
    }

    #[test]
    fn mounts() {
        let m = |s: &str| Mount::parse(s);
        let c =
            m("type=cache,target=/root/.cache,id=x,sharing=locked,mode=0755,uid=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.kind, c.readonly, c.mode, c.sharing),
            (MountType::Cache, false, Some(0o755), Some(Sharing::Locked))
        );
        let b = m("target=/src,from=build,source=/out,rw").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.kind, b.readonly, b.from.as_deref()), (MountType::Bind, false, Some("build")));
        assert!(m("target=/x").is_ok_and(|b| b.readonly));
        assert_eq!(m("type=tmpfs,target=/t,size=64m").map(|t| t.size), Ok(Some(64 << 20)));
        let s = m("type=secret,id=tok,env=TOKEN,required").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.required && s.readonly);
        assert_eq!(m("\"type=secret\",\"id=a,b\"").map(|s| s.id), Ok(Some("a,b".to_string())));
        assert_eq!(m("type=nfs"), Err("unsupported mount type \"nfs\"".into()));
        assert_eq!(m("type=bind,mode=0700"), Err("mode not allowed for \"bind\" type mounts".into()));
        assert_eq!(m("required"), Err("unexpected key 'required' for mount type 'bind'".into()));
        assert_eq!(m("target"), Err("invalid field 'target' must be a key=value pair".into()));
        assert_eq!(m("type=secret,from=x,id=a"), Err("secret mount should not have a from".into()));
        assert_eq!(m("type=secret"), Err("one of source, target required".into()));
        assert_eq!(m("from=$X"), Err("'from' doesn't support variable expansion, define alias stage instead".into()));
        assert_eq!(m("a\"b"), Err("failed to parse csv mounts: bare \" in non-quoted-field".into()));
        assert_eq!(m(""), Err("failed to parse csv mounts: EOF".into()));
        assert_eq!(m("type=cache,sharing=x"), Err("unsupported sharing value \"x\"".into()));
        assert_eq!(m("foo=bar"), Err("unexpected key 'foo' in 'foo=bar'".into()));
        assert_eq!(err("RUN --network=bridge x"), "Dockerfile:1: RUN: unsupported network mode \"bridge\"");
    }

    #[test]
    fn env_label_arg() {
        let kv = |k: &str, v: &str| KeyValue { key: k.into(), value: v.into() };
        assert_eq!(
            one("ENV a=b c=\"d e\" f=g\\ h"),
            Command::Env(vec![kv("a", "b"), kv("c", "\"d e\""), kv("f", "g\\ h")])
        );
        assert_eq!(one("ENV key  value with  spaces"), Command::Env(vec![kv("key", "value with  spaces")]));
        assert_eq!(one("LABEL \"a b\"=c"), Command::Label(vec![kv("\"a b\"", "c")]));
        assert_eq!(one("ENV a="), Command::Env(vec![kv("a", "")]));
        assert_eq!(err("ENV a"), "Dockerfile:1: ENV: must have two arguments");
        assert_eq!(
            err("ENV a=b c"),
            "Dockerfile:1: ENV: syntax error - can't find = in \"c\". Must be of the form: name=value"
        );
        assert_eq!(err("ENV =x"), "Dockerfile:1: ENV: names can not be blank");
        let arg = |n: &str, d: Option<&str>| ArgDecl { name: n.into(), default: d.map(str::to_string) };
        assert_eq!(
            one("ARG a b=1 c=\"x y\" d="),
            Command::Arg(vec![arg("a", None), arg("b", Some("1")), arg("c", Some("\"x y\"")), arg("d", Some(""))])
        );
        assert_eq!(err("ARG"), "Dockerfile:1: ARG: requires at least one argument");
        assert_eq!(parse_words("a 'b c' \"d\\\"e\" f\\ g h\\", '\\'), vec!["a", "'b c'", "\"d\\\"e\"", "f\\ g", "h"]);
    }

    #[test]
    fn from_and_misc() {
        let Command::From(f) = one("FROM --platform=$BUILDPLATFORM golang:1.22 As Build") else { panic!() };
        assert_eq!(
            (f.image.as_str(), f.name.as_deref(), f.platform.as_deref()),
            ("golang:1.22", Some("build"), Some("$BUILDPLATFORM"))
        );
        assert_eq!(err("FROM a b"), "Dockerfile:1: FROM: requires either one or three arguments");
        assert_eq!(
            err("FROM a AS 1x"),
            "Dockerfile:1: FROM: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
        );
        assert_eq!(one("EXPOSE 80/udp 443 8080"), Command::Expose(vec!["443".into(), "80/udp".into(), "8080".into()]));
        assert_eq!(one("WORKDIR /a b"), Command::Workdir("/a b".into()));
        assert_eq!(err("USER"), "Dockerfile:1: USER: requires exactly one argument");
        assert_eq!(err("FOO bar"), "Dockerfile:1: unknown instruction: FOO");
        assert_eq!(err("\n\n# only comments\n"), "Dockerfile: file with no instructions");
        assert_eq!(err(""), "Dockerfile: the Dockerfile cannot be empty");
        assert_eq!(one("run x").name(), "RUN");
    }

    #[test]
    fn onbuild() {
        let Command::Onbuild(o) = one("onbuild  COPY --chown=1 . /app") else { panic!() };
        assert_eq!(o.expression, "COPY --chown=1 . /app");
        assert!(matches!(*o.command, Command::Copy(_)));
        assert_eq!(
            err("ONBUILD ONBUILD RUN x"),
            "Dockerfile:1: ONBUILD: chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(err("ONBUILD from x"), "Dockerfile:1: ONBUILD: FROM isn't allowed as an ONBUILD trigger");
        assert_eq!(err("ONBUILD RUN --bad x"), "Dockerfile:1: ONBUILD: RUN: unknown flag: --bad");
        assert_eq!(err("ONBUILD"), "Dockerfile:1: ONBUILD: requires at least one argument");
    }

    #[test]
    fn healthcheck() {
        let Command::Healthcheck(h) = one("HEALTHCHECK --interval=1m30s --timeout=.5s --retries=3 CMD curl -f x")
        else {
            panic!()
        };
        assert_eq!(h.test, vec!["CMD-SHELL".to_string(), "curl -f x".to_string()]);
        assert_eq!((h.interval, h.timeout, h.retries), (90_000_000_000, 500_000_000, 3));
        let Command::Healthcheck(h) = one("HEALTHCHECK cmd [\"true\"]") else { panic!() };
        assert_eq!(h.test, vec!["CMD".to_string(), "true".to_string()]);
        let Command::Healthcheck(h) = one("HEALTHCHECK --interval=bogus NONE") else { panic!() };
        assert_eq!(h.test, vec!["NONE".to_string()]);
        assert_eq!(err("HEALTHCHECK NONE x"), "Dockerfile:1: HEALTHCHECK: NONE takes no arguments");
        assert_eq!(err("HEALTHCHECK CMD"), "Dockerfile:1: HEALTHCHECK: missing command after CMD");
        assert_eq!(err("HEALTHCHECK RUN x"), "Dockerfile:1: HEALTHCHECK: unknown type \"RUN\" (try CMD)");
        assert_eq!(
            err("HEALTHCHECK --interval=1us CMD x"),
            "Dockerfile:1: HEALTHCHECK: --interval cannot be less than 1ms"
        );
        assert_eq!(
            err("HEALTHCHECK --retries=-1 CMD x"),
            "Dockerfile:1: HEALTHCHECK: --retries cannot be negative (-1)"
        );
        assert_eq!(
            err("HEALTHCHECK --timeout=5 CMD x"),
            "Dockerfile:1: HEALTHCHECK: --timeout: missing unit in duration \"5\""
        );
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_duration("-1.5ms"), Ok(-1_500_000));
        assert_eq!(parse_duration("300µs"), Ok(300_000));
        assert_eq!(parse_duration("2562047h47m16.854775807s"), Ok(i64::MAX));
        assert!(parse_duration("2562048h").is_err());
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram("1024"), Some(1024));
        assert_eq!(parse_ram("1k"), Some(1024));
        assert_eq!(parse_ram("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_ram("2mb"), Some(2 << 20));
        assert_eq!(parse_ram("x"), None);
        assert_eq!(parse_ram("1.2.3"), None);
        assert_eq!(parse_ram("1q"), None);
    }
}
