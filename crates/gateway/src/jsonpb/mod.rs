//! The JSON mapping of etcd's gateway, driven by the protos: every message is read and written by
//! walking its descriptor (prost-reflect over Hearth's compiled `.proto` files), so no message has
//! hand-written JSON code.
//!
//! etcd 3.4's gateway is grpc-gateway v1 with its default marshaler, `JSONPb{OrigName: true}`, i.e.
//! golang/protobuf 1.3's `jsonpb` over etcd's gogo-generated structs. What that means, and what this
//! module reproduces:
//! - **Output** (`encode`): fields in `.proto` declaration order (the Go struct's order; a oneof
//!   where its first member is declared), under their `.proto` names (`range_end`, `dbSize`, `ID`);
//!   fields holding their type's zero value left out, except a set oneof member; 64-bit integers as
//!   strings, 32-bit ones as numbers; enums by name (by number when unknown); bytes as padded
//!   standard base64; strings escaped as Go escapes them (`<` as `\u003c`). No whitespace.
//! - **Input** (`decode`): either the `.proto` name or the camel-case JSON name (the latter wins when
//!   both are given); unknown fields ignored; `null` leaves a field unset; integers as numbers or
//!   strings; enums by name or number; bytes as Go's strict padded base64, or as an array of byte
//!   values. Every rejection carries the text Go's `encoding/json` or `jsonpb` would produce, because
//!   etcd puts that text in its error body.
//!
//! A decoded request is a `DynamicMessage` that the in-process gRPC call encodes to protobuf bytes;
//! the services then decode it with their own types, as they would any gRPC request.

mod base64;
mod decode;
mod encode;
pub(crate) mod json;

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, OneofDescriptor,
};

pub(crate) use decode::decode;
pub(crate) use encode::{encode, write_string};

/// How deep messages may nest in a request (a txn inside a txn inside ...): prost's decoding
/// recursion limit, which every service applies to what it receives anyway. It also bounds the
/// recursion of `decode`.
const MAX_MESSAGE_DEPTH: usize = 100;

/// One field, with the names it answers to in JSON.
#[derive(Clone, Debug)]
struct FieldPlan {
    fd: FieldDescriptor,
    /// The `.proto` name (what etcd writes).
    orig: String,
    /// protoc's lowerCamelCase JSON name (also accepted on input).
    camel: String,
}

/// An entry of a message's output, in Go struct order.
#[derive(Clone, Debug)]
enum Slot {
    Field(FieldPlan),
    /// A oneof: whichever member is set is written here.
    Oneof(Vec<FieldPlan>),
}

/// A message's fields arranged as jsonpb visits them.
#[derive(Debug)]
struct MessagePlan {
    /// Fields outside any oneof, in declaration order: decoded first, in this order (the first
    /// failing field is the one reported).
    regular: Vec<FieldPlan>,
    /// Oneof members, decoded after the regular fields.
    oneof_members: Vec<FieldPlan>,
    /// Output order.
    slots: Vec<Slot>,
}

/// Every message of the descriptor pool, planned once.
#[derive(Debug)]
pub(crate) struct Schema {
    plans: HashMap<String, Arc<MessagePlan>>,
}

impl Schema {
    pub(crate) fn new(pool: &DescriptorPool) -> Schema {
        let plans = pool
            .all_messages()
            .map(|m| (m.full_name().to_string(), Arc::new(plan(&m))))
            .collect();
        Schema { plans }
    }

    fn plan(&self, desc: &MessageDescriptor) -> Arc<MessagePlan> {
        match self.plans.get(desc.full_name()) {
            Some(p) => p.clone(),
            // Only messages of the same pool are ever asked for; planning a stranger is still right.
            None => Arc::new(plan(desc)),
        }
    }
}

fn plan(desc: &MessageDescriptor) -> MessagePlan {
    // `MessageDescriptor::fields` is in number order; Go's struct (and so jsonpb) follows the
    // declaration order of the `.proto` file.
    let declared: Vec<FieldDescriptor> = desc
        .descriptor_proto()
        .field
        .iter()
        .filter_map(|f| desc.get_field(f.number.and_then(|n| u32::try_from(n).ok())?))
        .collect();
    let field_plan = |fd: &FieldDescriptor| FieldPlan {
        fd: fd.clone(),
        orig: fd.name().to_string(),
        camel: fd.json_name().to_string(),
    };
    let mut regular = Vec::new();
    let mut oneof_members = Vec::new();
    let mut slots = Vec::new();
    let mut placed: Vec<OneofDescriptor> = Vec::new();
    for fd in &declared {
        match fd.containing_oneof() {
            None => {
                regular.push(field_plan(fd));
                slots.push(Slot::Field(field_plan(fd)));
            }
            Some(oneof) => {
                oneof_members.push(field_plan(fd));
                if !placed.iter().any(|o| o.name() == oneof.name()) {
                    let members = declared
                        .iter()
                        .filter(|f| {
                            f.containing_oneof()
                                .is_some_and(|o| o.name() == oneof.name())
                        })
                        .map(field_plan)
                        .collect();
                    slots.push(Slot::Oneof(members));
                    placed.push(oneof);
                }
            }
        }
    }
    MessagePlan {
        regular,
        oneof_members,
        slots,
    }
}

/// The Go type name of an enum as gogo registers it (`etcdserverpb.RangeRequest_SortOrder`), which
/// jsonpb names in its errors.
fn go_enum_name(e: &EnumDescriptor) -> String {
    let pkg = e.parent_file().package_name().to_string();
    let full = e.full_name();
    let local = full
        .strip_prefix(pkg.as_str())
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(full);
    if pkg.is_empty() {
        local.replace('.', "_")
    } else {
        format!("{pkg}.{}", local.replace('.', "_"))
    }
}

/// Whether a field kind is written as a JSON string although it is a number (Go quotes 64-bit
/// integers).
fn is_64_bit(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64
    )
}

#[cfg(test)]
mod tests;
