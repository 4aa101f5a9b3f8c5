//! containerd's filter language for list calls.
//!
//! A filter string is a comma-separated AND of selectors: `field==value`, `field!=value`,
//! `field~=regex`, or a bare `field` (present). Field paths are dotted, and any part may be
//! double-quoted (`labels."com.example.a"==x`). Values are bare (up to the next comma) or quoted
//! with `"` (with escapes), or with `/` or `|` (handy for regexes: only the delimiter is escaped).
//! A list of filter strings is an OR; an empty list matches everything.

use regex::{Regex, RegexBuilder};

use crate::error::{Error, Result};

/// Something that can be filtered: returns the value at a field path, or `None` when absent.
pub trait Adaptor {
    fn field(&self, path: &[String]) -> Option<String>;
}

/// A parsed filter: an OR of ANDs of selectors.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Empty means "match everything".
    any_of: Vec<Vec<Selector>>,
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

/// Longest regex program we compile from a client's filter (bounds memory, not time: the
/// regex crate is linear-time already).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses a list of filter strings (OR of each). Syntax errors are InvalidArgument.
pub fn parse(filters: &[String]) -> Result<Filter> {
    let any_of = filters
        .iter()
        .map(|f| parse_one(f))
        .collect::<Result<Vec<_>>>()?;
    Ok(Filter { any_of })
}

impl Filter {
    /// A filter that matches everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    pub fn matches(&self, obj: &impl Adaptor) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|sels| sels.iter().all(|s| s.matches(obj)))
    }
}

impl Selector {
    // Same semantics as containerd: a missing field reads as "" for `!=` and `~=`.
    fn matches(&self, obj: &impl Adaptor) -> bool {
        let value = obj.field(&self.path);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(v) => value.as_deref() == Some(v.as_str()),
            Op::NotEqual(v) => value.as_deref().unwrap_or("") != v,
            Op::Matches(re) => re.is_match(value.as_deref().unwrap_or("")),
        }
    }
}

fn parse_one(input: &str) -> Result<Vec<Selector>> {
    let mut p = Parser { input, pos: 0 };
    let mut selectors = Vec::new();
    p.skip_ws();
    if p.at_end() {
        // An empty filter string constrains nothing.
        return Ok(selectors);
    }
    loop {
        selectors.push(p.selector()?);
        p.skip_ws();
        match p.next_char() {
            None => break,
            Some(',') => {}
            Some(c) => return Err(p.error(&format!("unexpected {c:?}"))),
        }
    }
    Ok(selectors)
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> Error {
        Error::InvalidArgument(format!(
            "filters: {what} at position {} in {:?}",
            self.pos, self.input
        ))
    }

    fn selector(&mut self) -> Result<Selector> {
        self.skip_ws();
        let path = self.field_path()?;
        self.skip_ws();
        let rest = &self.input[self.pos..];
        let op = if rest.starts_with("==") {
            Some("==")
        } else if rest.starts_with("!=") {
            Some("!=")
        } else if rest.starts_with("~=") {
            Some("~=")
        } else {
            None
        };
        let Some(op) = op else {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        };
        self.pos += 2;
        self.skip_ws();
        let value = self.value()?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(
                RegexBuilder::new(&value)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| self.error(&format!("invalid regex {value:?}: {e}")))?,
            ),
        };
        Ok(Selector { path, op })
    }

    fn field_path(&mut self) -> Result<Vec<String>> {
        let mut path = vec![self.field_part()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field_part()?);
        }
        Ok(path)
    }

    fn field_part(&mut self) -> Result<String> {
        if self.peek() == Some('"') {
            self.pos += 1;
            return self.quoted('"');
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected field name"));
        }
        Ok(self.input[start..self.pos].to_string())
    }

    fn value(&mut self) -> Result<String> {
        match self.peek() {
            Some(q @ ('"' | '/' | '|')) => {
                self.pos += 1;
                self.quoted(q)
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != ',') {
                    self.next_char();
                }
                let v = self.input[start..self.pos].trim_end();
                if v.is_empty() {
                    return Err(self.error("expected value"));
                }
                if v.contains('"') {
                    return Err(self.error("unexpected quote in bare value"));
                }
                Ok(v.to_string())
            }
        }
    }

    /// Reads up to the closing `quote` (the opening one is consumed already).
    fn quoted(&mut self, quote: char) -> Result<String> {
        let mut out = String::new();
        loop {
            let Some(c) = self.next_char() else {
                return Err(self.error("unterminated quoted string"));
            };
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.next_char() else {
                return Err(self.error("unterminated escape"));
            };
            if quote != '"' {
                // Regex-style quoting: only the delimiter is escaped, the rest is the regex's.
                if e != quote {
                    out.push('\\');
                }
                out.push(e);
                continue;
            }
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '0' => out.push('\0'),
                '\\' | '"' | '\'' | '/' => out.push(e),
                'x' => out.push(self.hex_escape(2)?),
                'u' => out.push(self.hex_escape(4)?),
                'U' => out.push(self.hex_escape(8)?),
                // Unknown escapes are kept verbatim so regexes like "\d" still work.
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex_escape(&mut self, digits: usize) -> Result<char> {
        let end = self.pos + digits;
        let hex = self
            .input
            .get(self.pos..end)
            .ok_or_else(|| self.error("short escape"))?;
        let code = u32::from_str_radix(hex, 16).map_err(|_| self.error("bad hex escape"))?;
        self.pos = end;
        char::from_u32(code).ok_or_else(|| self.error("escape is not a valid character"))
    }
}

/// Helper for adaptors: looks up `labels.<k>` (a key with dots may come as several parts, which
/// are re-joined like containerd does).
pub fn label_field(
    labels: &std::collections::HashMap<String, String>,
    rest: &[String],
) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    labels.get(&rest.join(".")).cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ErrorKind;

    struct Obj {
        name: String,
        labels: HashMap<String, String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") if path.len() == 1 => Some(self.name.clone()),
                Some("labels") => label_field(&self.labels, &path[1..]),
                _ => None,
            }
        }
    }

    fn obj(name: &str, labels: &[(&str, &str)]) -> Obj {
        Obj {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn f(fs: &[&str]) -> Filter {
        parse(&fs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parse")
    }

    #[test]
    fn empty_matches_all() {
        let o = obj("a", &[]);
        assert!(f(&[]).matches(&o));
        assert!(f(&[""]).matches(&o));
        assert!(Filter::all().matches(&o));
    }

    #[test]
    fn equality_and_inequality() {
        let o = obj("docker.io/library/alpine:latest", &[("a", "1")]);
        assert!(f(&["name==docker.io/library/alpine:latest"]).matches(&o));
        assert!(!f(&["name==alpine"]).matches(&o));
        assert!(f(&["name!=alpine"]).matches(&o));
        assert!(!f(&["name!=docker.io/library/alpine:latest"]).matches(&o));
        // A missing field is "" for != (containerd's semantics).
        assert!(f(&["labels.missing!=x"]).matches(&o));
        assert!(!f(&["labels.missing==x"]).matches(&o));
    }

    #[test]
    fn presence() {
        let o = obj("a", &[("present", "")]);
        assert!(f(&["labels.present"]).matches(&o));
        assert!(!f(&["labels.absent"]).matches(&o));
        assert!(f(&["name"]).matches(&o));
    }

    #[test]
    fn quoted_label_keys_and_values() {
        let o = obj("a", &[("com.example.a", "x y,z"), ("k", "quo\"te")]);
        assert!(f(&[r#"labels."com.example.a"=="x y,z""#]).matches(&o));
        // Unquoted dotted keys are re-joined with dots.
        assert!(f(&[r#"labels.com.example.a=="x y,z""#]).matches(&o));
        assert!(f(&[r#"labels.k=="quo\"te""#]).matches(&o));
        assert!(!f(&[r#"labels."com.example.a"==x"#]).matches(&o));
    }

    #[test]
    fn regex_match() {
        let o = obj("docker.io/library/busybox:1.36", &[]);
        assert!(f(&["name~=busybox"]).matches(&o));
        assert!(f(&["name~=^docker\\.io/"]).matches(&o));
        assert!(f(&["name~=/:[0-9.]+$/"]).matches(&o));
        assert!(f(&["name~=|library/bu|"]).matches(&o));
        assert!(f(&[r#"name~="\d+\.\d+""#]).matches(&o));
        assert!(!f(&["name~=^alpine"]).matches(&o));
    }

    #[test]
    fn and_within_string_or_across() {
        let a = obj("a", &[("x", "1"), ("y", "2")]);
        let b = obj("b", &[("x", "1")]);
        let and = f(&["labels.x==1,labels.y==2"]);
        assert!(and.matches(&a));
        assert!(!and.matches(&b));
        let or = f(&["name==b", "labels.y==2"]);
        assert!(or.matches(&a));
        assert!(or.matches(&b));
        let neither = f(&["name==c", "labels.y==3"]);
        assert!(!neither.matches(&a));
        // Whitespace around tokens is ignored.
        assert!(f(&[" name == a , labels.x==1 "]).matches(&a));
    }

    #[test]
    fn syntax_errors_are_invalid_argument() {
        for bad in [
            "==x",
            "name==",
            "name==\"open",
            "labels.\"open",
            "name==a,",
            "name~=(",
            "name==a b\"",
            ".name",
            "name.",
            "name=x",
            "na me",
        ] {
            let err = parse(&[bad.to_string()]).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
