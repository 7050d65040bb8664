//! Message to JSON, as golang/protobuf 1.3's `jsonpb.Marshaler{OrigName: true}` writes a gogo
//! struct that was decoded from the wire. A field is written when the Go struct holds more than
//! its zero value: a non-zero scalar, a non-empty string, bytes or list, a present message, a set
//! oneof member (even when its value is zero).

use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use super::{base64, is_64_bit, json, Schema, Slot};

pub(crate) use json::write_string;

/// Appends the JSON of `msg`.
pub(crate) fn encode(schema: &Schema, msg: &DynamicMessage, out: &mut Vec<u8>) {
    let plan = schema.plan(&msg.descriptor());
    out.push(b'{');
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(out, name);
        out.push(b':');
    };
    for slot in &plan.slots {
        match slot {
            Slot::Field(f) => {
                if !msg.has_field(&f.fd) {
                    continue;
                }
                let value = msg.get_field(&f.fd);
                let kind = f.fd.kind();
                if let Value::List(items) = value.as_ref() {
                    if items.is_empty() {
                        continue;
                    }
                    key(out, &f.orig);
                    out.push(b'[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_value(schema, &kind, v, out);
                    }
                    out.push(b']');
                } else {
                    // Without presence, `has_field` already means "not the zero value".
                    key(out, &f.orig);
                    write_value(schema, &kind, &value, out);
                }
            }
            Slot::Oneof(members) => {
                if let Some(f) = members.iter().find(|f| msg.has_field(&f.fd)) {
                    key(out, &f.orig);
                    write_value(schema, &f.fd.kind(), &msg.get_field(&f.fd), out);
                }
            }
        }
    }
    out.push(b'}');
}

fn write_value(schema: &Schema, kind: &Kind, v: &Value, out: &mut Vec<u8>) {
    let quoted = is_64_bit(kind);
    let mut number = |s: String| {
        if quoted {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(s.as_bytes());
        }
    };
    match v {
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I32(n) => number(n.to_string()),
        Value::I64(n) => number(n.to_string()),
        Value::U32(n) => number(n.to_string()),
        Value::U64(n) => number(n.to_string()),
        Value::F32(x) => write_float(f64::from(*x), out),
        Value::F64(x) => write_float(*x, out),
        Value::String(s) => write_string(out, s),
        Value::Bytes(b) => {
            out.push(b'"');
            base64::encode(out, b);
            out.push(b'"');
        }
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(ev) => write_string(out, ev.name()),
                // An unknown value is written as its number, unquoted.
                None => out.extend_from_slice(n.to_string().as_bytes()),
            },
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        Value::Message(m) => encode(schema, m, out),
        // Lists are written by the caller; maps do not occur in etcd's protos.
        Value::List(_) | Value::Map(_) => out.extend_from_slice(b"null"),
    }
}

/// jsonpb's non-finite floats are strings; finite ones go through `encoding/json` (no etcd message
/// has a float field, so Rust's shortest round-trip form stands in for Go's).
fn write_float(x: f64, out: &mut Vec<u8>) {
    if x.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        out.extend_from_slice(x.to_string().as_bytes());
    }
}
