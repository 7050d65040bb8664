//! The etcd v3 wire protocol as Hearth speaks it: generated message and service types only, no logic.
//!
//! Every protobuf package keeps etcd's name, so fully qualified type names and gRPC method
//! paths (`/etcdserverpb.KV/Range`, `/v3lockpb.Lock/Lock`, ...) are the ones etcd clients use.
//! Each service comes with a client (`*_client`) and a server (`*_server`) module. The one package that is
//! Hearth's own, `hearthraftpb`, is spoken only between the members of a cluster, on the peer URLs.

#![forbid(unsafe_code)]

/// Key-value records and watch events (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions as stored by the auth subsystem (`authpb`).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// Cluster-membership records carried in Raft proposals (`membershippb`).
pub mod membershippb {
    tonic::include_proto!("membershippb");
}

/// The client API services KV, Watch, Lease, Cluster, Maintenance and Auth, and the
/// `InternalRaftRequest` that the server proposes through Raft (`etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The distributed lock service (`v3lockpb`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The leader election service (`v3electionpb`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The lessor's persisted lease record and peer-internal time-to-live messages (`leasepb`).
pub mod leasepb {
    tonic::include_proto!("leasepb");
}

/// Hearth's own peer-to-peer service between the members of a cluster (`hearthraftpb`): Raft message
/// streams, cluster discovery for joining members, learner promotion forwarded to the leader.
pub mod hearthraftpb {
    tonic::include_proto!("hearthraftpb");
}

/// Encoded `google.protobuf.FileDescriptorSet` of all the files above, imports included,
/// for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hearth_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::FILE_DESCRIPTOR_SET;
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
        ServiceDescriptorProto,
    };

    fn fds() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
    }

    /// Looks up a message by fully qualified name (`pkg.Outer.Inner`).
    fn message(fds: &FileDescriptorSet, full: &str) -> DescriptorProto {
        for file in &fds.file {
            let Some(rest) = full.strip_prefix(&format!("{}.", file.package())) else {
                continue;
            };
            let mut parts = rest.split('.');
            let first = parts.next().unwrap();
            let Some(mut msg) = file.message_type.iter().find(|m| m.name() == first) else {
                continue;
            };
            for part in parts {
                msg = msg.nested_type.iter().find(|m| m.name() == part).unwrap();
            }
            return msg.clone();
        }
        panic!("message {full} not found");
    }

    fn field(fds: &FileDescriptorSet, msg: &str, name: &str) -> FieldDescriptorProto {
        message(fds, msg)
            .field
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{msg}.{name} not found"))
            .clone()
    }

    fn service(fds: &FileDescriptorSet, full: &str) -> ServiceDescriptorProto {
        fds.file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
            .find(|(pkg, s)| format!("{pkg}.{}", s.name()) == full)
            .unwrap_or_else(|| panic!("service {full} not found"))
            .1
            .clone()
    }

    fn method_names(svc: &ServiceDescriptorProto) -> Vec<&str> {
        svc.method.iter().map(|m| m.name()).collect()
    }

    fn enum_values(e: &EnumDescriptorProto) -> Vec<(&str, i32)> {
        e.value.iter().map(|v| (v.name(), v.number())).collect()
    }

    #[test]
    fn services_and_methods_match_etcd() {
        let fds = fds();
        let m = |s: &str| method_names(&service(&fds, s)).join(",");
        // RangeStream is etcd 3.7's, in 3.7's place.
        assert_eq!(
            m("etcdserverpb.KV"),
            "Range,RangeStream,Put,DeleteRange,Txn,Compact"
        );
        assert_eq!(m("etcdserverpb.Watch"), "Watch");
        assert_eq!(
            m("etcdserverpb.Lease"),
            "LeaseGrant,LeaseRevoke,LeaseKeepAlive,LeaseTimeToLive,LeaseLeases"
        );
        assert_eq!(
            m("etcdserverpb.Cluster"),
            "MemberAdd,MemberRemove,MemberUpdate,MemberList,MemberPromote"
        );
        assert_eq!(
            m("etcdserverpb.Maintenance"),
            "Alarm,Status,Defragment,Hash,HashKV,Snapshot,MoveLeader,Downgrade"
        );
        assert_eq!(service(&fds, "etcdserverpb.Auth").method.len(), 17);
        assert_eq!(m("v3lockpb.Lock"), "Lock,Unlock");
        assert_eq!(
            m("v3electionpb.Election"),
            "Campaign,Proclaim,Leader,Observe,Resign"
        );

        // Streaming shapes.
        let watch = &service(&fds, "etcdserverpb.Watch").method[0];
        assert!(watch.client_streaming() && watch.server_streaming());
        let observe = service(&fds, "v3electionpb.Election").method[3].clone();
        assert_eq!(observe.name(), "Observe");
        assert!(!observe.client_streaming() && observe.server_streaming());
        let snapshot = service(&fds, "etcdserverpb.Maintenance").method[5].clone();
        assert_eq!(snapshot.input_type(), ".etcdserverpb.SnapshotRequest");
        assert!(!snapshot.client_streaming() && snapshot.server_streaming());
        let compact = service(&fds, "etcdserverpb.KV").method[5].clone();
        assert_eq!(compact.input_type(), ".etcdserverpb.CompactionRequest");
        let stream = service(&fds, "etcdserverpb.KV").method[1].clone();
        assert_eq!(stream.input_type(), ".etcdserverpb.RangeRequest");
        assert_eq!(stream.output_type(), ".etcdserverpb.RangeStreamResponse");
        assert!(!stream.client_streaming() && stream.server_streaming());
    }

    #[test]
    fn field_numbers_match_etcd() {
        let fds = fds();
        let n = |msg: &str, name: &str| field(&fds, msg, name).number();
        assert_eq!(n("etcdserverpb.RangeRequest", "sort_target"), 6);
        assert_eq!(n("etcdserverpb.RangeRequest", "max_create_revision"), 13);
        assert_eq!(n("etcdserverpb.PutRequest", "ignore_lease"), 6);
        assert_eq!(n("etcdserverpb.Compare", "range_end"), 64);
        assert_eq!(n("etcdserverpb.WatchCreateRequest", "fragment"), 8);
        assert_eq!(n("etcdserverpb.WatchResponse", "fragment"), 7);
        assert_eq!(n("etcdserverpb.WatchResponse", "events"), 11);
        assert_eq!(n("etcdserverpb.LeaseTimeToLiveResponse", "grantedTTL"), 4);
        assert_eq!(n("etcdserverpb.AuthUserAddRequest", "hashedPassword"), 4);
        assert_eq!(n("etcdserverpb.StatusResponse", "isLearner"), 10);
        assert_eq!(n("etcdserverpb.HashKVResponse", "compact_revision"), 3);
        assert_eq!(n("etcdserverpb.RequestHeader", "auth_revision"), 3);
        assert_eq!(n("etcdserverpb.InternalRaftRequest", "header"), 100);
        assert_eq!(
            n("etcdserverpb.InternalRaftRequest", "lease_checkpoint"),
            11
        );
        assert_eq!(n("etcdserverpb.InternalRaftRequest", "auth_disable"), 1011);
        assert_eq!(n("etcdserverpb.InternalRaftRequest", "authenticate"), 1012);
        assert_eq!(n("etcdserverpb.InternalRaftRequest", "auth_status"), 1013);
        assert_eq!(
            n(
                "etcdserverpb.InternalRaftRequest",
                "auth_role_revoke_permission"
            ),
            1204
        );
        assert_eq!(
            n("etcdserverpb.InternalRaftRequest", "downgrade_info_set"),
            1302
        );
        assert_eq!(n("v3electionpb.LeaderKey", "lease"), 4);
        assert_eq!(n("authpb.Role", "keyPermission"), 2);

        // The oneof members of Compare.target_union, with their numbers and types.
        let compare = message(&fds, "etcdserverpb.Compare");
        let union_index = compare
            .oneof_decl
            .iter()
            .position(|o| o.name() == "target_union")
            .expect("target_union oneof") as i32;
        let members: Vec<(&str, i32, Type)> = compare
            .field
            .iter()
            .filter(|f| f.oneof_index == Some(union_index))
            .map(|f| (f.name(), f.number(), f.r#type()))
            .collect();
        assert_eq!(
            members,
            [
                ("version", 4, Type::Int64),
                ("create_revision", 5, Type::Int64),
                ("mod_revision", 6, Type::Int64),
                ("value", 7, Type::Bytes),
                ("lease", 8, Type::Int64),
            ]
        );
    }

    #[test]
    fn types_and_labels_match_etcd() {
        let fds = fds();
        let part = field(&fds, "etcdserverpb.RangeStreamResponse", "range_response");
        assert_eq!(part.number(), 1);
        assert_eq!(part.type_name(), ".etcdserverpb.RangeResponse");
        assert_eq!(part.label(), Label::Optional);
        assert_eq!(
            message(&fds, "etcdserverpb.RangeStreamResponse")
                .field
                .len(),
            1
        );
        let kvs = field(&fds, "etcdserverpb.RangeResponse", "kvs");
        assert_eq!(kvs.type_name(), ".mvccpb.KeyValue");
        assert_eq!(kvs.label(), Label::Repeated);
        assert_eq!(
            field(&fds, "v3lockpb.LockResponse", "header").type_name(),
            ".etcdserverpb.ResponseHeader"
        );
        assert_eq!(
            field(&fds, "etcdserverpb.AuthRoleGetResponse", "perm").type_name(),
            ".authpb.Permission"
        );
        assert_eq!(
            field(&fds, "etcdserverpb.HashKVResponse", "hash").r#type(),
            Type::Uint32
        );
        assert_eq!(
            field(&fds, "etcdserverpb.Member", "ID").r#type(),
            Type::Uint64
        );
        assert_eq!(
            field(&fds, "etcdserverpb.LeaseGrantRequest", "ID").r#type(),
            Type::Int64
        );
    }

    #[test]
    fn enums_match_etcd() {
        let fds = fds();
        let rpc = fds.file.iter().find(|f| f.name() == "rpc.proto").unwrap();
        let alarm = rpc
            .enum_type
            .iter()
            .find(|e| e.name() == "AlarmType")
            .unwrap();
        assert_eq!(
            enum_values(alarm),
            [("NONE", 0), ("NOSPACE", 1), ("CORRUPT", 2)]
        );
        let range = message(&fds, "etcdserverpb.RangeRequest");
        let target = range
            .enum_type
            .iter()
            .find(|e| e.name() == "SortTarget")
            .unwrap();
        assert_eq!(
            enum_values(target),
            [
                ("KEY", 0),
                ("VERSION", 1),
                ("CREATE", 2),
                ("MOD", 3),
                ("VALUE", 4)
            ]
        );
        let compare = message(&fds, "etcdserverpb.Compare");
        let target = compare
            .enum_type
            .iter()
            .find(|e| e.name() == "CompareTarget")
            .unwrap();
        assert_eq!(
            enum_values(target),
            [
                ("VERSION", 0),
                ("CREATE", 1),
                ("MOD", 2),
                ("VALUE", 3),
                ("LEASE", 4)
            ]
        );
        let watch = message(&fds, "etcdserverpb.WatchCreateRequest");
        assert_eq!(
            enum_values(&watch.enum_type[0]),
            [("NOPUT", 0), ("NODELETE", 1)]
        );
        let perm = message(&fds, "authpb.Permission");
        assert_eq!(
            enum_values(&perm.enum_type[0]),
            [("READ", 0), ("WRITE", 1), ("READWRITE", 2)]
        );
        let downgrade = message(&fds, "etcdserverpb.DowngradeRequest");
        assert_eq!(
            enum_values(&downgrade.enum_type[0]),
            [("VALIDATE", 0), ("ENABLE", 1), ("CANCEL", 2)]
        );
    }

    #[test]
    fn generated_types_encode_like_etcd() {
        use crate::etcdserverpb::{compare, Compare};
        let cmp = Compare {
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
            range_end: b"z".to_vec(),
            ..Default::default()
        };
        // key: field 3 (0x1a); value: field 7 (0x3a); range_end: field 64 (0x82 0x04), all length-delimited.
        assert_eq!(
            cmp.encode_to_vec(),
            [0x1a, 1, b'k', 0x3a, 1, b'v', 0x82, 0x04, 1, b'z']
        );
    }
}
