//! The part of Go's `encoding/json` that etcd's gateway exposes to its clients: which bytes are JSON,
//! where a value ends in a stream of them, how strings are unquoted and quoted, and the exact text of
//! every syntax error (`invalid character 'x' looking for beginning of value`, `unexpected EOF`, ...).
//!
//! etcd's gateway decodes request bodies with Go's `json.Decoder` and answers a malformed body with
//! the decoder's error text, so matching etcd byte for byte means matching Go's scanner, not a
//! general-purpose JSON parser. The scanner here is a byte-at-a-time state machine with an explicit
//! stack (no recursion, so no input can exhaust the thread's stack) that stops at Go's nesting
//! limit. It is resumable: a stream body is fed chunk by chunk and each byte is looked at once.
//!
//! Everything after scanning works on input the scanner accepted, so the helpers that walk a value
//! (`members`, `elements`, `skip`) may assume well-formed JSON and never fail.

use std::fmt::Write as _;

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

/// What a container on the scanner's stack expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a value (leading whitespace allowed).
    BeginValue,
    /// Just after `[`: a value or `]`.
    BeginValueOrEmpty,
    /// Just after `{`: a key or `}`.
    BeginKeyOrEmpty,
    /// Just after `,` in an object: a key.
    BeginKey,
    InString,
    InStringEsc,
    /// Inside `\u`, with this many hex digits still to come.
    InStringEscU(u8),
    /// After `-`.
    Neg,
    /// After a leading `0`.
    Zero,
    /// In the integer digits after a leading `1`-`9`.
    Int,
    /// After `.`.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After `e` or `E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
    /// Inside `true`, `false` or `null`: the literal and how many bytes of it were seen.
    Literal(&'static [u8], u8),
    /// After a complete value inside a container, or at the top level.
    EndValue,
    /// The top-level value is complete.
    Done,
}

/// What one byte did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    /// The top-level value ended with this byte (objects, arrays, strings, literals), so it is part
    /// of the value.
    EndIncluding,
    /// The top-level value (a number) ended before this byte, which is not part of it.
    EndBefore,
    Error(String),
}

/// Go's scanner as a resumable state machine over one top-level value.
#[derive(Clone, Debug)]
pub(crate) struct Scanner {
    stack: Vec<Ctx>,
    state: State,
    /// Whether a non-space byte was seen (decides `EOF` versus `unexpected EOF`).
    started: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            stack: Vec::new(),
            state: State::BeginValue,
            started: false,
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl Scanner {
    fn error(c: u8, context: &str) -> Step {
        Step::Error(format!("invalid character {} {context}", quote_char(c)))
    }

    fn push(&mut self, c: u8, ctx: Ctx, next: State) -> Step {
        self.stack.push(ctx);
        if self.stack.len() > MAX_DEPTH {
            return Scanner::error(c, "exceeded max depth");
        }
        self.state = next;
        Step::Continue
    }

    /// The first byte of a value.
    fn begin_value(&mut self, c: u8) -> Step {
        self.started = true;
        match c {
            b'{' => self.push(c, Ctx::ObjectKey, State::BeginKeyOrEmpty),
            b'[' => self.push(c, Ctx::ArrayValue, State::BeginValueOrEmpty),
            b'"' => {
                self.state = State::InString;
                Step::Continue
            }
            b'-' => {
                self.state = State::Neg;
                Step::Continue
            }
            b'0' => {
                self.state = State::Zero;
                Step::Continue
            }
            b'1'..=b'9' => {
                self.state = State::Int;
                Step::Continue
            }
            b't' => {
                self.state = State::Literal(b"true", 1);
                Step::Continue
            }
            b'f' => {
                self.state = State::Literal(b"false", 1);
                Step::Continue
            }
            b'n' => {
                self.state = State::Literal(b"null", 1);
                Step::Continue
            }
            _ => Scanner::error(c, "looking for beginning of value"),
        }
    }

    /// A value just completed; `c` was its last byte (a string's quote, a literal's last letter,
    /// a container's bracket).
    fn value_complete_including(&mut self) -> Step {
        if self.stack.is_empty() {
            self.state = State::Done;
            Step::EndIncluding
        } else {
            self.state = State::EndValue;
            Step::Continue
        }
    }

    /// `c` follows a complete value (a number ends only here).
    fn end_value(&mut self, c: u8) -> Step {
        let Some(&top) = self.stack.last() else {
            self.state = State::Done;
            return Step::EndBefore;
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Step::Continue;
        }
        match top {
            Ctx::ObjectKey => {
                if c == b':' {
                    *self.stack.last_mut().expect("non-empty") = Ctx::ObjectValue;
                    self.state = State::BeginValue;
                    Step::Continue
                } else {
                    Scanner::error(c, "after object key")
                }
            }
            Ctx::ObjectValue => match c {
                b',' => {
                    *self.stack.last_mut().expect("non-empty") = Ctx::ObjectKey;
                    self.state = State::BeginKey;
                    Step::Continue
                }
                b'}' => {
                    self.stack.pop();
                    self.value_complete_including()
                }
                _ => Scanner::error(c, "after object key:value pair"),
            },
            Ctx::ArrayValue => match c {
                b',' => {
                    self.state = State::BeginValue;
                    Step::Continue
                }
                b']' => {
                    self.stack.pop();
                    self.value_complete_including()
                }
                _ => Scanner::error(c, "after array element"),
            },
        }
    }

    /// Feeds one byte.
    pub(crate) fn step(&mut self, c: u8) -> Step {
        match self.state {
            State::BeginValue => {
                if is_space(c) {
                    return Step::Continue;
                }
                self.begin_value(c)
            }
            State::BeginValueOrEmpty => {
                if is_space(c) {
                    return Step::Continue;
                }
                if c == b']' {
                    self.stack.pop();
                    return self.value_complete_including();
                }
                self.begin_value(c)
            }
            State::BeginKeyOrEmpty | State::BeginKey => {
                if is_space(c) {
                    return Step::Continue;
                }
                if c == b'}' && self.state == State::BeginKeyOrEmpty {
                    self.stack.pop();
                    return self.value_complete_including();
                }
                if c == b'"' {
                    self.state = State::InString;
                    return Step::Continue;
                }
                Scanner::error(c, "looking for beginning of object key string")
            }
            State::InString => match c {
                b'"' => self.value_complete_including(),
                b'\\' => {
                    self.state = State::InStringEsc;
                    Step::Continue
                }
                0..0x20 => Scanner::error(c, "in string literal"),
                _ => Step::Continue,
            },
            State::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString;
                    Step::Continue
                }
                b'u' => {
                    self.state = State::InStringEscU(4);
                    Step::Continue
                }
                _ => Scanner::error(c, "in string escape code"),
            },
            State::InStringEscU(left) => {
                if !c.is_ascii_hexdigit() {
                    return Scanner::error(c, "in \\u hexadecimal character escape");
                }
                self.state = if left == 1 {
                    State::InString
                } else {
                    State::InStringEscU(left - 1)
                };
                Step::Continue
            }
            State::Neg => match c {
                b'0' => {
                    self.state = State::Zero;
                    Step::Continue
                }
                b'1'..=b'9' => {
                    self.state = State::Int;
                    Step::Continue
                }
                _ => Scanner::error(c, "in numeric literal"),
            },
            State::Int if c.is_ascii_digit() => Step::Continue,
            State::Zero | State::Int => match c {
                b'.' => {
                    self.state = State::Dot;
                    Step::Continue
                }
                b'e' | b'E' => {
                    self.state = State::Exp;
                    Step::Continue
                }
                _ => self.end_value(c),
            },
            State::Dot => {
                if c.is_ascii_digit() {
                    self.state = State::Frac;
                    Step::Continue
                } else {
                    Scanner::error(c, "after decimal point in numeric literal")
                }
            }
            State::Frac => match c {
                b'0'..=b'9' => Step::Continue,
                b'e' | b'E' => {
                    self.state = State::Exp;
                    Step::Continue
                }
                _ => self.end_value(c),
            },
            State::Exp => match c {
                b'+' | b'-' => {
                    self.state = State::ExpSign;
                    Step::Continue
                }
                b'0'..=b'9' => {
                    self.state = State::ExpDigits;
                    Step::Continue
                }
                _ => Scanner::error(c, "in exponent of numeric literal"),
            },
            State::ExpSign => {
                if c.is_ascii_digit() {
                    self.state = State::ExpDigits;
                    Step::Continue
                } else {
                    Scanner::error(c, "in exponent of numeric literal")
                }
            }
            State::ExpDigits => {
                if c.is_ascii_digit() {
                    Step::Continue
                } else {
                    self.end_value(c)
                }
            }
            State::Literal(lit, seen) => {
                let want = lit[seen as usize];
                if c != want {
                    let name = std::str::from_utf8(lit).unwrap_or("literal");
                    return Scanner::error(
                        c,
                        &format!("in literal {name} (expecting {})", quote_char(want)),
                    );
                }
                if seen as usize + 1 == lit.len() {
                    self.value_complete_including()
                } else {
                    self.state = State::Literal(lit, seen + 1);
                    Step::Continue
                }
            }
            State::EndValue => self.end_value(c),
            // Callers stop feeding at the end of the value; a byte after it is Go's complaint
            // about trailing data.
            State::Done => {
                if is_space(c) {
                    Step::Continue
                } else {
                    Scanner::error(c, "after top-level value")
                }
            }
        }
    }

    /// Whether the input seen so far, followed by the end of input, forms a complete value: true
    /// when the value is done or is a number that may end here.
    fn complete_at_eof(&self) -> bool {
        match self.state {
            State::Done => true,
            State::Zero | State::Int | State::Frac | State::ExpDigits => self.stack.is_empty(),
            _ => false,
        }
    }

    /// Go's `scanner.eof` in `checkValid`: the end of input is a space that must end the value;
    /// when it cannot, the space's own complaint (if any) or `unexpected end of JSON input`.
    fn eof_error(&mut self) -> Option<String> {
        if self.complete_at_eof() {
            return None;
        }
        match self.step(b' ') {
            Step::Error(e) => Some(e),
            _ => Some("unexpected end of JSON input".to_string()),
        }
    }
}

/// Go's `checkValid`, the first thing `json.Unmarshal` does: the whole input must be exactly one
/// value, surrounded by whitespace only.
pub(crate) fn check_valid(data: &[u8]) -> Result<(), String> {
    let mut s = Scanner::default();
    let mut i = 0;
    while i < data.len() {
        match s.step(data[i]) {
            Step::Continue | Step::EndIncluding => i += 1,
            // A number ended before this byte: look at it again as trailing data.
            Step::EndBefore => {}
            Step::Error(e) => return Err(e),
        }
    }
    match s.eof_error() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// What [`ValueSplitter::next`] found in the buffered input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// A complete value at `buf[start..end]`; the caller drops `buf[..end]` before the next call.
    Value { start: usize, end: usize },
    /// Only whitespace and the input has ended (Go's `io.EOF`).
    Eof,
    /// More input is needed.
    More,
    /// Go's `json.Decoder` error text.
    Error(String),
}

/// Cuts a stream of bytes into top-level JSON values as Go's `json.Decoder.Decode` does, one
/// `Decode` per value: leading whitespace skipped, syntax errors reported as they are met, an input
/// that ends inside a value is `unexpected EOF`, and nothing after a value is looked at until the
/// next call. Each byte is scanned once, however the input is chunked.
#[derive(Debug, Default)]
pub(crate) struct ValueSplitter {
    scanner: Scanner,
    /// How many bytes of the buffer the scanner has consumed.
    pos: usize,
    /// Where the current value starts in the buffer (after leading whitespace).
    start: Option<usize>,
}

impl ValueSplitter {
    /// Scans `buf` from where the last call stopped. `eof` says no more bytes will follow.
    pub(crate) fn next(&mut self, buf: &[u8], eof: bool) -> Split {
        while self.pos < buf.len() {
            let c = buf[self.pos];
            if self.start.is_none() && !is_space(c) {
                self.start = Some(self.pos);
            }
            match self.scanner.step(c) {
                Step::Continue => self.pos += 1,
                Step::EndIncluding => return self.finish(self.pos + 1),
                Step::EndBefore => return self.finish(self.pos),
                Step::Error(e) => return Split::Error(e),
            }
        }
        if !eof {
            return Split::More;
        }
        if !self.scanner.started {
            return Split::Eof;
        }
        if self.scanner.complete_at_eof() {
            return self.finish(self.pos);
        }
        Split::Error("unexpected EOF".to_string())
    }

    fn finish(&mut self, end: usize) -> Split {
        let start = self.start.unwrap_or(end);
        *self = ValueSplitter::default();
        Split::Value { start, end }
    }
}

/// The end of the value starting at `data[i]` (whitespace before it allowed), for input the scanner
/// accepted. Iterative, so depth costs no stack.
pub(crate) fn skip(data: &[u8], mut i: usize) -> usize {
    while i < data.len() && is_space(data[i]) {
        i += 1;
    }
    let mut s = Scanner::default();
    while i < data.len() {
        match s.step(data[i]) {
            Step::Continue => i += 1,
            Step::EndIncluding => return i + 1,
            Step::EndBefore | Step::Error(_) => return i,
        }
    }
    i
}

fn skip_space(data: &[u8], mut i: usize) -> usize {
    while i < data.len() && is_space(data[i]) {
        i += 1;
    }
    i
}

/// The JSON type of a well-formed value, in the words Go's `UnmarshalTypeError` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub(crate) fn of(value: &[u8]) -> Kind {
        match value.iter().find(|c| !is_space(**c)) {
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'"') => Kind::String,
            Some(b'[') => Kind::Array,
            Some(b'{') => Kind::Object,
            _ => Kind::Number,
        }
    }

    /// Go's word for this kind in `json: cannot unmarshal <word> into ...`.
    pub(crate) fn go_word(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }
}

/// The members of a well-formed object, keys unquoted, values as raw bytes, in input order
/// (duplicates kept; Go's map keeps the last).
pub(crate) fn members(obj: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut i = skip_space(obj, 0);
    if obj.get(i) != Some(&b'{') {
        return out;
    }
    i = skip_space(obj, i + 1);
    if obj.get(i) == Some(&b'}') {
        return out;
    }
    while i < obj.len() {
        let key_end = skip(obj, i);
        let key = unquote(&obj[i..key_end]);
        i = skip_space(obj, key_end);
        // The colon.
        i = skip_space(obj, i + 1);
        let value_end = skip(obj, i);
        out.push((key, &obj[i..value_end]));
        i = skip_space(obj, value_end);
        if obj.get(i) != Some(&b',') {
            break;
        }
        i = skip_space(obj, i + 1);
    }
    out
}

/// The elements of a well-formed array as raw bytes.
pub(crate) fn elements(arr: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = skip_space(arr, 0);
    if arr.get(i) != Some(&b'[') {
        return out;
    }
    i = skip_space(arr, i + 1);
    if arr.get(i) == Some(&b']') {
        return out;
    }
    while i < arr.len() {
        let end = skip(arr, i);
        out.push(&arr[i..end]);
        i = skip_space(arr, end);
        if arr.get(i) != Some(&b',') {
            break;
        }
        i = skip_space(arr, i + 1);
    }
    out
}

/// The four hex digits of a `\u` escape.
fn hex4(b: &[u8]) -> Option<u32> {
    let digits = b.get(..4)?;
    let s = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Decodes one UTF-8 sequence as Go's `utf8.DecodeRune` does: an invalid or incomplete sequence is
/// one byte long and decodes to U+FFFD.
pub(crate) fn decode_rune(b: &[u8]) -> (char, usize) {
    let len = match b.first() {
        None => return (char::REPLACEMENT_CHARACTER, 0),
        Some(0..0x80) => 1,
        Some(0xC2..=0xDF) => 2,
        Some(0xE0..=0xEF) => 3,
        Some(0xF0..=0xF4) => 4,
        Some(_) => return (char::REPLACEMENT_CHARACTER, 1),
    };
    match b.get(..len).map(std::str::from_utf8) {
        Some(Ok(s)) => (s.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER), len),
        _ => (char::REPLACEMENT_CHARACTER, 1),
    }
}

/// Go's `unquote` of a well-formed JSON string literal (quotes included): escapes decoded, a
/// surrogate pair joined, a lone surrogate and every invalid UTF-8 byte replaced by U+FFFD.
pub(crate) fn unquote(lit: &[u8]) -> String {
    let inner = lit
        .strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .unwrap_or(lit);
    if !inner.contains(&b'\\') {
        if let Ok(s) = std::str::from_utf8(inner) {
            return s.to_string();
        }
    }
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c == b'\\' {
            let Some(&e) = inner.get(i + 1) else { break };
            i += 2;
            match e {
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let Some(r) = hex4(&inner[i..]) else { break };
                    i += 4;
                    if (0xD800..0xE000).contains(&r) {
                        // A surrogate: joined with a following `\u` low surrogate, else U+FFFD.
                        if inner.get(i) == Some(&b'\\') && inner.get(i + 1) == Some(&b'u') {
                            if let Some(r2) = hex4(&inner[i + 2..]) {
                                if (0xD800..0xDC00).contains(&r) && (0xDC00..0xE000).contains(&r2) {
                                    let joined = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
                                    out.push(
                                        char::from_u32(joined)
                                            .unwrap_or(char::REPLACEMENT_CHARACTER),
                                    );
                                    i += 6;
                                    continue;
                                }
                            }
                        }
                        out.push(char::REPLACEMENT_CHARACTER);
                    } else {
                        out.push(char::from_u32(r).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                }
                other => out.push(other as char),
            }
            continue;
        }
        let (ch, n) = decode_rune(&inner[i..]);
        out.push(ch);
        i += n.max(1);
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string the way Go's `json.Marshal` writes it: HTML-safe (`<`, `>`, `&`
/// escaped), `\n`, `\r`, `\t` by name, other control bytes as `\u00XX`, U+2028 and U+2029 escaped.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            let safe = b >= 0x20 && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&');
            if safe {
                i += 1;
                continue;
            }
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            match b {
                b'"' | b'\\' => out.push(b),
                b'\n' => out.push(b'n'),
                b'\r' => out.push(b'r'),
                b'\t' => out.push(b't'),
                _ => {
                    out.extend_from_slice(b"u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 0xF) as usize]);
                }
            }
            i += 1;
            start = i;
            continue;
        }
        let (ch, n) = decode_rune(&bytes[i..]);
        if ch == '\u{2028}' || ch == '\u{2029}' {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\\u202");
            out.push(HEX[(ch as u32 & 0xF) as usize]);
            i += n;
            start = i;
            continue;
        }
        i += n.max(1);
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Go's `unicode.IsPrint` for the characters that can appear here: letters, marks, numbers,
/// punctuation, symbols and the ASCII space. Rust has no general-category table in std; controls,
/// the Unicode spaces and the format characters etcd's errors could meet are the non-printables.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{AD}'
                | '\u{600}'..='\u{605}'
                | '\u{61C}'
                | '\u{6DD}'
                | '\u{70F}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E000}'..='\u{F8FF}'
                | '\u{FFFE}'
                | '\u{FFFF}'
        ))
}

/// Appends `c` escaped as Go's `strconv.Quote` escapes it (without the quotes).
fn quote_rune(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_print(c) => out.push(c),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Go's `strconv.Quote` of raw bytes (what `%q` prints for a `[]byte`): invalid UTF-8 bytes as `\xHH`.
pub(crate) fn go_quote(b: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < b.len() {
        let (ch, n) = decode_rune(&b[i..]);
        if ch == char::REPLACEMENT_CHARACTER && n == 1 && b[i] >= 0x80 {
            let _ = write!(out, "\\x{:02x}", b[i]);
        } else {
            quote_rune(&mut out, ch);
        }
        i += n.max(1);
    }
    out.push('"');
    out
}

/// Go's `quoteChar`: how a byte is shown in a syntax error (the byte taken as a code point).
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        _ => {
            let mut s = String::from("'");
            quote_rune(&mut s, c as char);
            s.push('\'');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8]) -> Vec<Result<String, String>> {
        let mut sp = ValueSplitter::default();
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        loop {
            match sp.next(&buf, true) {
                Split::Value { start, end } => {
                    out.push(Ok(String::from_utf8_lossy(&buf[start..end]).into_owned()));
                    buf.drain(..end);
                }
                Split::Eof => return out,
                Split::More => unreachable!("eof given"),
                Split::Error(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn values_are_cut_where_go_decoder_cuts_them() {
        assert_eq!(
            split_all(br#" {"a":1} [2,3]"x" 12 true"#),
            vec![
                Ok(r#"{"a":1}"#.into()),
                Ok("[2,3]".into()),
                Ok(r#""x""#.into()),
                Ok("12".into()),
                Ok("true".into()),
            ]
        );
        assert_eq!(split_all(b"   \n"), vec![]);
        assert_eq!(split_all(br#"{"a":"#), vec![Err("unexpected EOF".into())]);
        assert_eq!(split_all(b"1."), vec![Err("unexpected EOF".into())]);
    }

    #[test]
    fn chunked_input_is_scanned_once_and_gives_the_same_values() {
        let input = br#"{"create_request":{"key":"Zm9v"}} {"progress_request":{}}"#;
        let mut sp = ValueSplitter::default();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in input.iter() {
            buf.push(b);
            while let Split::Value { start, end } = sp.next(&buf, false) {
                got.push(String::from_utf8_lossy(&buf[start..end]).into_owned());
                buf.drain(..end);
            }
        }
        assert!(matches!(sp.next(&buf, true), Split::Eof));
        assert_eq!(
            got,
            vec![
                r#"{"create_request":{"key":"Zm9v"}}"#.to_string(),
                r#"{"progress_request":{}}"#.to_string()
            ]
        );
    }

    #[test]
    fn syntax_errors_have_go_text() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"{bad",
                "invalid character 'b' looking for beginning of object key string",
            ),
            (b"x", "invalid character 'x' looking for beginning of value"),
            (br#"{"a" 1}"#, "invalid character '1' after object key"),
            (
                br#"{"a":1 "b"}"#,
                "invalid character '\"' after object key:value pair",
            ),
            (b"[1 2]", "invalid character '2' after array element"),
            (b"\"a\x01\"", "invalid character '\\x01' in string literal"),
            (br#""\q""#, "invalid character 'q' in string escape code"),
            (
                br#""\u12x4""#,
                "invalid character 'x' in \\u hexadecimal character escape",
            ),
            (b"-x", "invalid character 'x' in numeric literal"),
            (
                b"1.x",
                "invalid character 'x' after decimal point in numeric literal",
            ),
            (
                b"1ex",
                "invalid character 'x' in exponent of numeric literal",
            ),
            (
                b"tx",
                "invalid character 'x' in literal true (expecting 'r')",
            ),
            (
                b"nul!",
                "invalid character '!' in literal null (expecting 'l')",
            ),
            (
                b"{'a':1}",
                "invalid character '\\'' looking for beginning of object key string",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                split_all(input),
                vec![Err(want.to_string())],
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let deep = vec![b'['; MAX_DEPTH + 1];
        assert_eq!(
            split_all(&deep),
            vec![Err("invalid character '[' exceeded max depth".into())]
        );
    }

    #[test]
    fn check_valid_reports_like_json_unmarshal() {
        assert_eq!(check_valid(b" 5 "), Ok(()));
        assert_eq!(check_valid(b""), Err("unexpected end of JSON input".into()));
        assert_eq!(
            check_valid(b"  "),
            Err("unexpected end of JSON input".into())
        );
        assert_eq!(
            check_valid(b"5x"),
            Err("invalid character 'x' after top-level value".into())
        );
        assert_eq!(
            check_valid(b"1."),
            Err("invalid character ' ' after decimal point in numeric literal".into())
        );
        assert_eq!(
            check_valid(b"tru"),
            Err("invalid character ' ' in literal true (expecting 'e')".into())
        );
        assert_eq!(
            check_valid(b"{"),
            Err("unexpected end of JSON input".into())
        );
        assert_eq!(
            check_valid(b"{} {}"),
            Err("invalid character '{' after top-level value".into())
        );
    }

    #[test]
    fn members_and_elements_walk_well_formed_values() {
        let obj = br#" { "a" : [1, {"x":"}"}] , "b\u0063":null,"a":2 } "#;
        let m = members(obj);
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["a", "bc", "a"]);
        assert_eq!(m[0].1, br#"[1, {"x":"}"}]"#);
        assert_eq!(m[2].1, b"2");
        assert_eq!(elements(m[0].1), vec![&b"1"[..], &br#"{"x":"}"}"#[..]]);
        assert!(members(b"{}").is_empty());
        assert!(elements(b"[ ]").is_empty());
    }

    #[test]
    fn unquote_follows_go() {
        assert_eq!(unquote(br#""abc""#), "abc");
        assert_eq!(unquote(br#""a\"\\\/\b\f\n\r\t""#), "a\"\\/\u{8}\u{c}\n\r\t");
        assert_eq!(unquote(br#""\u00e9\ud83d\ude00""#), "é😀");
        // A lone surrogate is U+FFFD; the escape after it is decoded on its own.
        assert_eq!(unquote(br#""\ud83dx\u0041""#), "\u{FFFD}xA");
        // Each byte of an invalid sequence is one U+FFFD.
        assert_eq!(unquote(b"\"\xe2\x82x\""), "\u{FFFD}\u{FFFD}x");
    }

    #[test]
    fn strings_are_written_as_go_writes_them() {
        let mut out = Vec::new();
        write_string(&mut out, "a<b>&\"\\\n\r\t\u{1}\u{8}\u{7f}é\u{2028}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\r\\t\\u0001\\u0008\u{7f}é\\u2028\""
        );
    }

    #[test]
    fn quoting_follows_strconv() {
        assert_eq!(go_quote(b"NOPE"), r#""NOPE""#);
        assert_eq!(
            go_quote(b"a\"\\\n\x01\xff\xc3\xa9"),
            r#""a\"\\\n\x01\xffé""#
        );
        assert_eq!(quote_char(0xa0), "'\\u00a0'");
        assert_eq!(quote_char(0xe9), "'é'");
    }
}
