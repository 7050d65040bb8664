//! The two JSON records etcd keeps in its backend, written exactly as Go's `encoding/json`
//! writes them (field order, `omitempty`, HTML-safe string escapes): a member in the `members`
//! bucket and the Raft configuration under `meta/confState`. Hearth stores both as protobuf;
//! a snapshot for etcd carries etcd's form.

use api::membershippb;

/// Go's `json.Marshal` of a string (with its default HTML escaping).
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn strings(out: &mut String, v: &[String]) {
    out.push('[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, s);
    }
    out.push(']');
}

fn numbers(out: &mut String, v: &[u64]) {
    out.push('[');
    for (i, n) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&n.to_string());
    }
    out.push(']');
}

/// etcd's `membership.Member` as JSON: `id`, `peerURLs` (null when empty, no `omitempty`),
/// `isLearner`, `name` and `clientURLs` only when set.
pub(crate) fn member(m: &membershippb::Member) -> String {
    let raft = m.raft_attributes.clone().unwrap_or_default();
    let attrs = m.member_attributes.clone().unwrap_or_default();
    let mut out = format!("{{\"id\":{},\"peerURLs\":", m.id);
    if raft.peer_urls.is_empty() {
        out.push_str("null");
    } else {
        strings(&mut out, &raft.peer_urls);
    }
    if raft.is_learner {
        out.push_str(",\"isLearner\":true");
    }
    if !attrs.name.is_empty() {
        out.push_str(",\"name\":");
        string(&mut out, &attrs.name);
    }
    if !attrs.client_urls.is_empty() {
        out.push_str(",\"clientURLs\":");
        strings(&mut out, &attrs.client_urls);
    }
    out.push('}');
    out
}

/// Raft's `ConfState` as Hearth stores it (protobuf; field numbers as etcd's `raftpb`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ConfState {
    #[prost(uint64, repeated, tag = "1")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub learners: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub voters_outgoing: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub learners_next: Vec<u64>,
    #[prost(bool, tag = "5")]
    pub auto_leave: bool,
}

/// etcd 3.5's `meta/confState`: `raftpb.ConfState` as JSON (lists `omitempty`, `auto_leave`
/// always).
pub(crate) fn conf_state(cs: &ConfState) -> String {
    let mut out = String::from("{");
    for (name, v) in [
        ("voters", &cs.voters),
        ("learners", &cs.learners),
        ("voters_outgoing", &cs.voters_outgoing),
        ("learners_next", &cs.learners_next),
    ] {
        if !v.is_empty() {
            out.push_str(&format!("\"{name}\":"));
            numbers(&mut out, v);
            out.push(',');
        }
    }
    out.push_str(&format!("\"auto_leave\":{}}}", cs.auto_leave));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_as_etcd_writes_it() {
        // etcd 3.4.23 wrote this record for a member named e1 (see the bbolt golden file).
        let m = membershippb::Member {
            id: 0x628170c800dbcee,
            raft_attributes: Some(membershippb::RaftAttributes {
                peer_urls: vec!["http://127.0.0.1:32380".into()],
                is_learner: false,
            }),
            member_attributes: Some(membershippb::Attributes {
                name: "e1".into(),
                client_urls: vec!["http://127.0.0.1:32379".into()],
            }),
        };
        assert_eq!(
            member(&m),
            "{\"id\":443629905751424238,\"peerURLs\":[\"http://127.0.0.1:32380\"],\"name\":\"e1\",\"clientURLs\":[\"http://127.0.0.1:32379\"]}"
        );
        let learner = membershippb::Member {
            id: 7,
            raft_attributes: Some(membershippb::RaftAttributes {
                peer_urls: vec![],
                is_learner: true,
            }),
            member_attributes: Some(membershippb::Attributes {
                name: "a<b>\"&\n".into(),
                client_urls: vec![],
            }),
        };
        assert_eq!(
            member(&learner),
            "{\"id\":7,\"peerURLs\":null,\"isLearner\":true,\"name\":\"a\\u003cb\\u003e\\\"\\u0026\\n\"}"
        );
    }

    #[test]
    fn conf_state_as_etcd_writes_it() {
        let cs = ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            ..Default::default()
        };
        assert_eq!(
            conf_state(&cs),
            "{\"voters\":[1,2],\"learners\":[3],\"auto_leave\":false}"
        );
        assert_eq!(conf_state(&ConfState::default()), "{\"auto_leave\":false}");
    }
}
