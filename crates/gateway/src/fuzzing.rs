//! The entry of the `gateway_request` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a
//! bounded number of iterations by this crate's tests: the body of a JSON gateway request, cut into
//! top-level JSON values and decoded into the route's request message as the handler does.
//!
//! Besides not panicking (the JSON scanner and the decoder are Hearth's own, after Go's
//! `encoding/json` and golang/protobuf's `jsonpb`): the values found do not depend on how the body
//! arrives in chunks, each is exactly one valid JSON value, and a decoded request survives the
//! protobuf encoding the gRPC call gives it, and Hearth's own JSON encoding, unchanged.

use std::sync::{Arc, OnceLock};

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::jsonpb::json::{check_valid, Split, ValueSplitter};
use crate::jsonpb::{decode, encode, Schema};
use crate::{methods, Method};

struct Fixture {
    schema: Schema,
    methods: Vec<Arc<Method>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pool = DescriptorPool::decode(api::FILE_DESCRIPTOR_SET).expect("Hearth's descriptors");
        Fixture {
            schema: Schema::new(&pool),
            methods: methods(&pool).expect("every route has its method"),
        }
    })
}

/// The values of `body` (or the error that ends them), given in reads of `chunk` bytes.
fn values(body: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, String>> {
    let mut out = Vec::new();
    let (mut buf, mut rest) = (Vec::new(), body);
    let mut splitter = ValueSplitter::default();
    loop {
        match splitter.next(&buf, rest.is_empty()) {
            Split::Value { start, end } => {
                out.push(Ok(buf[start..end].to_vec()));
                buf.drain(..end);
            }
            Split::Eof => return out,
            Split::Error(e) => {
                out.push(Err(e));
                return out;
            }
            Split::More => {
                assert!(!rest.is_empty(), "more input asked for after the end");
                let n = chunk.min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

/// The fuzz entry: the first byte picks the route, the rest is the request body.
pub fn fuzz_gateway_request(data: &[u8]) {
    let Some((&b, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let input = &f.methods[usize::from(b) % f.methods.len()].input;
    let whole = values(body, usize::MAX);
    assert_eq!(
        values(body, 1 + usize::from(b) % 7),
        whole,
        "the values depend on how the body arrived"
    );
    for v in whole.iter().flatten() {
        check_valid(v).expect("a value the splitter found is valid JSON");
        let Ok(m) = decode(&f.schema, input, v) else {
            continue;
        };
        // Compared by encoding: a `DynamicMessage` remembers a field set to its default, which
        // no encoding carries.
        let bytes = m.encode_to_vec();
        let wire = DynamicMessage::decode(input.clone(), bytes.as_slice())
            .expect("a decoded request encodes");
        assert_eq!(
            wire.encode_to_vec(),
            bytes,
            "the protobuf encoding changed a request"
        );
        let mut json = Vec::new();
        encode(&f.schema, &m, &mut json);
        check_valid(&json).expect("Hearth writes valid JSON");
        let again = decode(&f.schema, input, &json).unwrap_or_else(|e| {
            panic!(
                "Hearth cannot read what it wrote, {}: {e}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(
            again.encode_to_vec(),
            bytes,
            "the JSON encoding changed a request: {}",
            String::from_utf8_lossy(&json)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    fn route(path: &str) -> u8 {
        ROUTES.iter().position(|(p, _, _)| *p == path).unwrap() as u8
    }

    fn seeds() -> Vec<Vec<u8>> {
        let bodies: [(&str, &str); 9] = [
            ("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","revision":3,"sort_order":"DESCEND","serializable":true}"#),
            ("/v3/kv/put", r#"{"key":"YQ==","value":"Yg==","lease":"7587861231285","prev_kv":true}"#),
            ("/v3/kv/deleterange", r#"{"key":"AA==","range_end":"AA==","prev_kv":false}"#),
            ("/v3/kv/txn", r#"{"compare":[{"result":"EQUAL","target":"VALUE","key":"YQ==","value":"Yg=="},{"target":"MOD","mod_revision":"5"}],"success":[{"request_put":{"key":"YQ==","value":"Yw=="}}],"failure":[{"request_range":{"key":"YQ=="}}]}"#),
            ("/v3/watch", "{\"create_request\":{\"key\":\"YQ==\",\"start_revision\":2,\"filters\":[\"NOPUT\"],\"prev_kv\":true}}\n{\"cancel_request\":{\"watch_id\":\"1\"}} {\"progress_request\":{}}"),
            ("/v3/lease/grant", r#"{"TTL":60,"ID":0}"#),
            ("/v3/lease/keepalive", r#"{"ID":"7587861231285"} {"ID":-1}"#),
            ("/v3/auth/authenticate", r#"{"name":"root","password":"p\u00e4ss\n"}"#),
            ("/v3/kv/range", r#"null"#),
        ];
        bodies
            .iter()
            .map(|(p, b)| {
                let mut v = vec![route(p)];
                v.extend_from_slice(b.as_bytes());
                v
            })
            .collect()
    }

    #[test]
    fn seeds_decode() {
        let f = fixture();
        for s in seeds() {
            let input = &f.methods[usize::from(s[0]) % f.methods.len()].input;
            for v in values(&s[1..], usize::MAX) {
                let v = v.unwrap();
                decode(&f.schema, input, &v).unwrap_or_else(|e| {
                    panic!("{}: {e}", String::from_utf8_lossy(&v));
                });
            }
            fuzz_gateway_request(&s);
        }
    }

    #[test]
    fn bounded_fuzz_of_gateway_requests() {
        fuzzcorpus::run(0x6a73_6f6e, &seeds(), 3000, fuzz_gateway_request);
    }
}
