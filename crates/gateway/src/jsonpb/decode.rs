//! JSON to message, as golang/protobuf 1.3's `jsonpb.Unmarshaler` (with unknown fields allowed)
//! reads etcd's gogo structs: each field's raw JSON is handed to Go's `json.Unmarshal` for the
//! field's Go type, so the leniency and every error text are `encoding/json`'s.

use bytes::Bytes;
use prost_reflect::{DynamicMessage, EnumDescriptor, Kind, MessageDescriptor, Value};

use super::json::{self, check_valid, elements, go_quote, members, unquote};
use super::{base64, go_enum_name, FieldPlan, Schema, MAX_MESSAGE_DEPTH};

/// Decodes a request from one top-level JSON value the scanner accepted.
pub(crate) fn decode(
    schema: &Schema,
    desc: &MessageDescriptor,
    raw: &[u8],
) -> Result<DynamicMessage, String> {
    decode_message(schema, desc, raw, 0)
}

fn decode_message(
    schema: &Schema,
    desc: &MessageDescriptor,
    raw: &[u8],
    depth: usize,
) -> Result<DynamicMessage, String> {
    if depth > MAX_MESSAGE_DEPTH {
        return Err("exceeded max depth".to_string());
    }
    let mut msg = DynamicMessage::new(desc.clone());
    // jsonpb first unmarshals the object into `map[string]json.RawMessage`.
    let fields = match json::Kind::of(raw) {
        json::Kind::Object => members(raw),
        json::Kind::Null => return Ok(msg),
        k => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type map[string]json.RawMessage",
                k.go_word()
            ))
        }
    };
    let plan = schema.plan(desc);
    for f in &plan.regular {
        if let Some(raw) = consume(&fields, f) {
            if let Some(v) = decode_field(schema, f, raw, depth)? {
                msg.set_field(&f.fd, v);
            }
        }
    }
    for f in &plan.oneof_members {
        if let Some(raw) = consume(&fields, f) {
            // jsonpb sets the oneof's wrapper before decoding into it: a `null` scalar member still
            // selects that member (with its zero value); a `null` message member selects nothing.
            match decode_field(schema, f, raw, depth)? {
                Some(v) => msg.set_field(&f.fd, v),
                None if !matches!(f.fd.kind(), Kind::Message(_)) => {
                    msg.set_field(&f.fd, f.fd.kind().default_value())
                }
                None => {}
            }
        }
    }
    Ok(msg)
}

/// The raw value given for a field: the last one under its `.proto` name or its JSON name, the
/// JSON name preferred when both are present.
fn consume<'a>(fields: &[(String, &'a [u8])], f: &FieldPlan) -> Option<&'a [u8]> {
    let last = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    };
    last(&f.camel).or_else(|| last(&f.orig))
}

/// One field's value, or None to leave it unset.
fn decode_field(
    schema: &Schema,
    f: &FieldPlan,
    raw: &[u8],
    depth: usize,
) -> Result<Option<Value>, String> {
    let kind = f.fd.kind();
    if !f.fd.is_list() {
        return decode_singular(schema, &kind, raw, depth);
    }
    // jsonpb's enum-name shortcut runs before it looks at the repeated field as a slice.
    if let (Kind::Enum(e), Some(name)) = (&kind, quoted_inner(raw)) {
        return Err(match e.get_value_by_name(&String::from_utf8_lossy(name)) {
            None => unknown_enum(e, name),
            Some(_) => format!("invalid target \"slice\" for enum {}", go_enum_name(e)),
        });
    }
    let items = match json::Kind::of(raw) {
        json::Kind::Array => elements(raw),
        json::Kind::Null => return Ok(None),
        k => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type []json.RawMessage",
                k.go_word()
            ))
        }
    };
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        // A `null` element is the element type's zero value (an empty message for messages,
        // which is how a nil element in a Go slice is encoded).
        let v =
            decode_singular(schema, &kind, item, depth)?.unwrap_or_else(|| kind.default_value());
        values.push(v);
    }
    Ok(Some(Value::List(values)))
}

/// The bytes between the quotes of a JSON string, unescaped (jsonpb's `trimQuote`), if `raw` is one.
fn quoted_inner(raw: &[u8]) -> Option<&[u8]> {
    if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
        Some(&raw[1..raw.len() - 1])
    } else {
        None
    }
}

fn unknown_enum(e: &EnumDescriptor, name: &[u8]) -> String {
    format!(
        "unknown value {} for enum {}",
        go_quote(name),
        go_enum_name(e)
    )
}

fn decode_singular(
    schema: &Schema,
    kind: &Kind,
    raw: &[u8],
    depth: usize,
) -> Result<Option<Value>, String> {
    // Numbers may come quoted: jsonpb strips the quotes and unmarshals what was inside.
    let unquoted_number = |raw: &'_ [u8]| -> Vec<u8> { quoted_inner(raw).unwrap_or(raw).to_vec() };
    let v = match kind {
        Kind::Message(m) => {
            if raw == b"null" {
                return Ok(None);
            }
            Value::Message(decode_message(schema, m, raw, depth + 1)?)
        }
        Kind::Enum(e) => {
            if let Some(name) = quoted_inner(raw) {
                // Matched on the raw bytes between the quotes: an escaped name is no name.
                let Some(v) = e.get_value_by_name(&String::from_utf8_lossy(name)) else {
                    return Err(unknown_enum(e, name));
                };
                Value::EnumNumber(v.number())
            } else {
                let name = go_enum_name(e);
                match unmarshal(raw, GoType::Int(32, &name))? {
                    None => return Ok(None),
                    Some(Scalar::Int(n)) => Value::EnumNumber(n as i32),
                    Some(_) => return Ok(None),
                }
            }
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            match unmarshal(&unquoted_number(raw), GoType::Int(64, "int64"))? {
                Some(Scalar::Int(n)) => Value::I64(n),
                _ => return Ok(None),
            }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            match unmarshal(&unquoted_number(raw), GoType::Int(32, "int32"))? {
                Some(Scalar::Int(n)) => Value::I32(n as i32),
                _ => return Ok(None),
            }
        }
        Kind::Uint64 | Kind::Fixed64 => {
            match unmarshal(&unquoted_number(raw), GoType::Uint(64, "uint64"))? {
                Some(Scalar::Uint(n)) => Value::U64(n),
                _ => return Ok(None),
            }
        }
        Kind::Uint32 | Kind::Fixed32 => {
            match unmarshal(&unquoted_number(raw), GoType::Uint(32, "uint32"))? {
                Some(Scalar::Uint(n)) => Value::U32(n as u32),
                _ => return Ok(None),
            }
        }
        Kind::Float | Kind::Double => {
            let bits = if matches!(kind, Kind::Float) { 32 } else { 64 };
            let special = match raw {
                b"\"NaN\"" => Some(f64::NAN),
                b"\"Infinity\"" => Some(f64::INFINITY),
                b"\"-Infinity\"" => Some(f64::NEG_INFINITY),
                _ => None,
            };
            let x = match special {
                Some(x) => x,
                None => match unmarshal(&unquoted_number(raw), GoType::Float(bits))? {
                    Some(Scalar::Float(x)) => x,
                    _ => return Ok(None),
                },
            };
            if bits == 32 {
                Value::F32(x as f32)
            } else {
                Value::F64(x)
            }
        }
        Kind::Bool => match unmarshal(raw, GoType::Bool)? {
            Some(Scalar::Bool(b)) => Value::Bool(b),
            _ => return Ok(None),
        },
        Kind::String => match unmarshal(raw, GoType::String)? {
            Some(Scalar::String(s)) => Value::String(s),
            _ => return Ok(None),
        },
        Kind::Bytes => match unmarshal(raw, GoType::Bytes)? {
            Some(Scalar::Bytes(b)) => Value::Bytes(Bytes::from(b)),
            _ => return Ok(None),
        },
    };
    Ok(Some(v))
}

/// A Go target type of `json.Unmarshal`, named as Go names it in errors.
#[derive(Clone, Copy, Debug)]
enum GoType<'a> {
    /// Bit size and Go type name (an enum is an `int32` with its own name).
    Int(u32, &'a str),
    Uint(u32, &'a str),
    Float(u32),
    Bool,
    String,
    /// `[]byte`.
    Bytes,
}

impl GoType<'_> {
    fn name(&self) -> &str {
        match self {
            GoType::Int(_, n) | GoType::Uint(_, n) => n,
            GoType::Float(32) => "float32",
            GoType::Float(_) => "float64",
            GoType::Bool => "bool",
            GoType::String => "string",
            GoType::Bytes => "[]uint8",
        }
    }
}

#[derive(Debug, PartialEq)]
enum Scalar {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
}

fn type_error(what: &str, ty: GoType<'_>) -> String {
    format!(
        "json: cannot unmarshal {what} into Go value of type {}",
        ty.name()
    )
}

/// Go's `json.Unmarshal(data, &target)` for a scalar target: None for `null` (the target keeps its
/// zero value).
fn unmarshal(data: &[u8], ty: GoType<'_>) -> Result<Option<Scalar>, String> {
    check_valid(data)?;
    let start = data
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(0);
    let v = &data[start..json::skip(data, start)];
    match json::Kind::of(v) {
        json::Kind::Null => Ok(None),
        json::Kind::Bool => match ty {
            GoType::Bool => Ok(Some(Scalar::Bool(v[0] == b't'))),
            _ => Err(type_error("bool", ty)),
        },
        json::Kind::Number => {
            let s = std::str::from_utf8(v).unwrap_or("");
            let bad = || type_error(&format!("number {s}"), ty);
            match ty {
                GoType::Int(bits, _) => {
                    let n: i64 = s.parse().map_err(|_| bad())?;
                    if bits < 64 && (n < -(1i64 << (bits - 1)) || n >= (1i64 << (bits - 1))) {
                        return Err(bad());
                    }
                    Ok(Some(Scalar::Int(n)))
                }
                GoType::Uint(bits, _) => {
                    let n: u64 = s.parse().map_err(|_| bad())?;
                    if bits < 64 && n >= (1u64 << bits) {
                        return Err(bad());
                    }
                    Ok(Some(Scalar::Uint(n)))
                }
                GoType::Float(bits) => {
                    let x: f64 = s.parse().map_err(|_| bad())?;
                    if !x.is_finite() || (bits == 32 && (x as f32).is_infinite()) {
                        return Err(bad());
                    }
                    Ok(Some(Scalar::Float(x)))
                }
                _ => Err(type_error("number", ty)),
            }
        }
        json::Kind::String => match ty {
            GoType::String => Ok(Some(Scalar::String(unquote(v)))),
            GoType::Bytes => base64::decode(unquote(v).as_bytes())
                .map(|b| Some(Scalar::Bytes(b)))
                .map_err(|at| format!("illegal base64 data at input byte {at}")),
            _ => Err(type_error("string", ty)),
        },
        json::Kind::Array => match ty {
            // Go fills a []byte from an array of numbers too.
            GoType::Bytes => {
                let mut out = Vec::new();
                for item in elements(v) {
                    match unmarshal(item, GoType::Uint(8, "uint8"))? {
                        Some(Scalar::Uint(n)) => out.push(n as u8),
                        _ => out.push(0),
                    }
                }
                Ok(Some(Scalar::Bytes(out)))
            }
            _ => Err(type_error("array", ty)),
        },
        json::Kind::Object => Err(type_error("object", ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_unmarshal_as_go_does() {
        let i64t = GoType::Int(64, "int64");
        assert_eq!(unmarshal(b"5", i64t), Ok(Some(Scalar::Int(5))));
        assert_eq!(unmarshal(b" -0 ", i64t), Ok(Some(Scalar::Int(0))));
        assert_eq!(unmarshal(b"null", i64t), Ok(None));
        assert_eq!(
            unmarshal(b"1.5", i64t),
            Err("json: cannot unmarshal number 1.5 into Go value of type int64".into())
        );
        assert_eq!(
            unmarshal(b"1e3", i64t),
            Err("json: cannot unmarshal number 1e3 into Go value of type int64".into())
        );
        assert_eq!(
            unmarshal(b"9223372036854775808", i64t),
            Err(
                "json: cannot unmarshal number 9223372036854775808 into Go value of type int64"
                    .into()
            )
        );
        assert_eq!(
            unmarshal(b"2147483648", GoType::Int(32, "int32")),
            Err("json: cannot unmarshal number 2147483648 into Go value of type int32".into())
        );
        assert_eq!(
            unmarshal(b"-1", GoType::Uint(64, "uint64")),
            Err("json: cannot unmarshal number -1 into Go value of type uint64".into())
        );
        assert_eq!(
            unmarshal(b"true", i64t),
            Err("json: cannot unmarshal bool into Go value of type int64".into())
        );
        assert_eq!(
            unmarshal(b"", i64t),
            Err("unexpected end of JSON input".into())
        );
        assert_eq!(
            unmarshal(b"x", i64t),
            Err("invalid character 'x' looking for beginning of value".into())
        );
        assert_eq!(
            unmarshal(b"\"true\"", GoType::Bool),
            Err("json: cannot unmarshal string into Go value of type bool".into())
        );
        assert_eq!(
            unmarshal(b"5", GoType::Bytes),
            Err("json: cannot unmarshal number into Go value of type []uint8".into())
        );
        assert_eq!(
            unmarshal(b"[102,111,111]", GoType::Bytes),
            Ok(Some(Scalar::Bytes(b"foo".to_vec())))
        );
        assert_eq!(
            unmarshal(b"[256]", GoType::Bytes),
            Err("json: cannot unmarshal number 256 into Go value of type uint8".into())
        );
        assert_eq!(
            unmarshal(b"\"Zm9v!\"", GoType::Bytes),
            Err("illegal base64 data at input byte 4".into())
        );
        assert_eq!(
            unmarshal(b"{}", GoType::String),
            Err("json: cannot unmarshal object into Go value of type string".into())
        );
    }
}
