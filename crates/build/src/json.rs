//! The exec form of RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, COPY, ADD and VOLUME, read the
//! way BuildKit reads it: Go's `json.Decoder` decoding one value into `[]interface{}`.
//!
//! What that means, edge case by edge case:
//! - the text must start with `[`; only the first JSON value is read, whatever follows it is
//!   ignored (`CMD ["a"] junk` is the exec form `["a"]`);
//! - any syntax error (bad escape, raw control character, trailing comma, unterminated value,
//!   nesting deeper than 10000) or a number too large for a float64 anywhere in the value means
//!   "not JSON": the instruction falls back to its shell form;
//! - a valid array holding anything but strings at its top level is a hard error;
//! - strings decode Go's way: `\uD800` without its low half becomes U+FFFD.

/// How the arguments of an instruction read as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExecForm {
    /// A JSON array of strings (possibly empty).
    Strings(Vec<String>),
    /// Valid JSON, an array, but holding something else than strings.
    NotStringArray,
    /// Not JSON at all: the caller uses the shell form.
    Invalid,
}

/// BuildKit's message for [`ExecForm::NotStringArray`].
pub(crate) const NOT_STRING_ARRAY: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// Go's `maxNestingDepth` in encoding/json.
const MAX_DEPTH: usize = 10_000;

pub(crate) fn exec_form(text: &str) -> ExecForm {
    let text = text.trim_start_matches(char::is_whitespace);
    if !text.starts_with('[') {
        return ExecForm::Invalid;
    }
    let mut p = Reader { s: text.as_bytes(), pos: 1, overflow: false };
    match p.top_array() {
        Some(_) if p.overflow => ExecForm::Invalid,
        Some(Some(strings)) => ExecForm::Strings(strings),
        Some(None) => ExecForm::NotStringArray,
        None => ExecForm::Invalid,
    }
}

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
    /// A number overflowed a float64: Go reports it once the value is decoded.
    overflow: bool,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// The top-level array after its `[`: `Some(Some(strings))`, `Some(None)` when valid but
    /// not all strings, `None` on a syntax error.
    fn top_array(&mut self) -> Option<Option<Vec<String>>> {
        let mut strings = Vec::new();
        let mut all_strings = true;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(Some(strings));
        }
        loop {
            self.ws();
            if self.peek() == Some(b'"') {
                strings.push(self.string()?);
            } else {
                all_strings = false;
                self.skip_value()?;
            }
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(all_strings.then_some(strings));
                }
                _ => return None,
            }
        }
    }

    /// Skips one value (at depth 2 or more) without recursion: a hostile `[[[[...` must not
    /// exhaust the stack.
    fn skip_value(&mut self) -> Option<()> {
        // Open containers, innermost last; the top-level array is depth 1.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // A value is expected here.
            self.ws();
            match self.peek()? {
                open @ (b'[' | b'{') => {
                    self.pos += 1;
                    if stack.len() + 2 > MAX_DEPTH {
                        return None;
                    }
                    self.ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.eat(close).is_none() {
                        stack.push(open);
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: close what ends here, or move to the next element.
            loop {
                let Some(&open) = stack.last() else { return Some(()) };
                self.ws();
                match (open, self.peek()?) {
                    (_, b',') => {
                        self.pos += 1;
                        if open == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    (b'[', b']') | (b'{', b'}') => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Option<()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s.get(self.pos..self.pos + word.len())? == word {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // Go decodes every number into a float64 and fails on overflow (not on underflow).
        let text = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
        if text.parse::<f64>().map_or(true, f64::is_infinite) {
            self.overflow = true;
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.pos..self.pos + 4)?;
        let text = std::str::from_utf8(h).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(text, 16).ok()
    }

    /// A string at `"`, decoded.
    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                0..=0x1f => return None,
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(b),
            }
        }
    }

    /// After `\u`: one code point, pairing surrogates as Go does.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xd800..0xdc00).contains(&first) {
            // A high surrogate takes the next \uDC00-\uDFFF with it; anything else stays
            // for the next round and this one becomes U+FFFD.
            if self.s.get(self.pos..self.pos + 2) == Some(b"\\u") {
                let save = self.pos;
                self.pos += 2;
                if let Some(second) = self.hex4().filter(|s| (0xdc00..0xe000).contains(s)) {
                    let c = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                    return Some(char::from_u32(c).unwrap_or('\u{fffd}'));
                }
                self.pos = save;
            }
            return Some('\u{fffd}');
        }
        Some(char::from_u32(first).unwrap_or('\u{fffd}'))
    }
}

#[cfg(test)]
mod tests {
    use super::ExecForm::*;
    use super::*;

    fn s(v: &[&str]) -> ExecForm {
        Strings(v.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(exec_form(r#"["a", "b c"]"#), s(&["a", "b c"]));
        assert_eq!(exec_form("[]"), s(&[]));
        assert_eq!(exec_form("  [ ]  "), s(&[]));
        assert_eq!(exec_form(r#"["\"q\"", "\\", "\/", "\t\n", "\u00e9"]"#), s(&["\"q\"", "\\", "/", "\t\n", "é"]));
        assert_eq!(exec_form(r#"["\ud83d\ude00"]"#), s(&["😀"]));
        assert_eq!(exec_form(r#"["\ud800"]"#), s(&["\u{fffd}"]));
        assert_eq!(exec_form(r#"["\ud800\u0041"]"#), s(&["\u{fffd}A"]));
        assert_eq!(exec_form(r#"["\udc00x"]"#), s(&["\u{fffd}x"]));
        assert_eq!(exec_form(r#"["a\u0000b"]"#), s(&["a\0b"]));
    }

    #[test]
    fn trailing_text_is_ignored_like_a_decoder() {
        assert_eq!(exec_form(r#"["echo", "hi"] # comment"#), s(&["echo", "hi"]));
        assert_eq!(exec_form(r#"["a"]]"#), s(&["a"]));
    }

    #[test]
    fn invalid_json_falls_back() {
        for bad in [
            "echo hi",
            "['a', 'b']",
            r#"["a",]"#,
            r#"["a" "b"]"#,
            r#"["c:\x"]"#,
            "[",
            r#"["a"#,
            "[\"a\tb\"]",
            r#"[1e999]"#,
            r#"["a", {"k": [1e400]}]"#,
            r#"[01]"#,
            r#"[1.]"#,
            r#"[tru]"#,
            r#"[{"a" 1}]"#,
            r#"[{1: 2}]"#,
            "",
        ] {
            assert_eq!(exec_form(bad), Invalid, "{bad}");
        }
    }

    #[test]
    fn non_string_arrays_are_errors() {
        for v in
            [r#"[1]"#, r#"["a", 1]"#, "[null]", "[true, false]", r#"[{"a": [1, {"b": null}]}]"#, "[[]]", "[1e-999]"]
        {
            assert_eq!(exec_form(v), NotStringArray, "{v}");
        }
    }

    #[test]
    fn depth_limit_without_recursion() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(exec_form(&deep), Invalid);
        // Go allows 10000 levels, the top array included.
        let ok = format!("[{}{}]", "[".repeat(9_999), "]".repeat(9_999));
        assert_eq!(exec_form(&ok), NotStringArray);
        let too_deep = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(exec_form(&too_deep), Invalid);
    }
}
