//! The acceptor and the connector under tonic: gRPC health checks over mutual TLS (with the client's CN
//! visible to services), plaintext and TLS gRPC on one port, and Debian's etcdctl 3.4 against a tiny KV
//! service served through the acceptor.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use transport::testing::CertSpec;
use transport::{Acceptor, ClientTls, ConnInfo, Role, ServerTls, TlsInfo};

/// Serves gRPC health through `acceptor`; records the CN and TLS-ness of each request's connection.
async fn health_server(
    acceptor: Acceptor,
) -> (SocketAddr, Arc<Mutex<Vec<(bool, Option<String>)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let record = seen.clone();
    let svc = InterceptedService::new(health, move |req: tonic::Request<()>| {
        let info = req.extensions().get::<ConnInfo>().cloned();
        record.lock().unwrap().push((
            info.as_ref().is_some_and(ConnInfo::is_tls),
            info.as_ref()
                .and_then(|i| i.common_name().map(str::to_string)),
        ));
        Ok(req)
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = acceptor.incoming(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    (addr, seen)
}

async fn channel(url: &str, tls: Option<&ClientTls>) -> Result<Channel, tonic::transport::Error> {
    let (ep, connector) = transport::endpoint(url, tls).unwrap();
    ep.connect_with_connector(connector).await
}

async fn check(ch: Channel) -> Result<i32, tonic::Status> {
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(r.into_inner().status)
}

#[tokio::test]
async fn grpc_health_over_mutual_tls_sees_the_client_cn() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(true), Role::Client).unwrap();
    let (addr, seen) = health_server(Acceptor::tls(server)).await;
    let alice = ClientTls::new(&pki.client_info(Some("alice"))).unwrap();
    let ch = channel(&format!("https://127.0.0.1:{}", addr.port()), Some(&alice))
        .await
        .unwrap();
    assert_eq!(
        check(ch).await.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(true, Some("alice".to_string()))]
    );

    // Without a certificate the channel cannot be established (or its first call fails).
    let anonymous = ClientTls::new(&pki.client_info(None)).unwrap();
    let refused = match channel(
        &format!("https://localhost:{}", addr.port()),
        Some(&anonymous),
    )
    .await
    {
        Err(_) => true,
        Ok(ch) => check(ch).await.is_err(),
    };
    assert!(refused);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn plaintext_and_tls_grpc_share_one_port() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(false), Role::Client).unwrap();
    let (addr, seen) = health_server(Acceptor::tls_and_plain(server)).await;
    let tls = ClientTls::new(&pki.client_info(None)).unwrap();
    let secure = channel(&format!("https://127.0.0.1:{}", addr.port()), Some(&tls))
        .await
        .unwrap();
    check(secure).await.unwrap();
    let plain = channel(&format!("http://127.0.0.1:{}", addr.port()), None)
        .await
        .unwrap();
    check(plain).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(true, None), (false, None)]
    );
}

/// The smallest KV service etcdctl can `get` from.
struct Kv;

#[tonic::async_trait]
impl api::etcdserverpb::kv_server::Kv for Kv {
    type RangeStreamStream =
        futures::stream::Empty<Result<api::etcdserverpb::RangeStreamResponse, tonic::Status>>;

    async fn range_stream(
        &self,
        _: tonic::Request<api::etcdserverpb::RangeRequest>,
    ) -> Result<tonic::Response<Self::RangeStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not served here"))
    }

    async fn range(
        &self,
        req: tonic::Request<api::etcdserverpb::RangeRequest>,
    ) -> Result<tonic::Response<api::etcdserverpb::RangeResponse>, tonic::Status> {
        let cn = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|i| i.common_name().map(str::to_string))
            .unwrap_or_default();
        Ok(tonic::Response::new(api::etcdserverpb::RangeResponse {
            header: Some(api::etcdserverpb::ResponseHeader::default()),
            kvs: vec![api::mvccpb::KeyValue {
                key: req.into_inner().key,
                value: cn.into_bytes(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 0,
            }],
            more: false,
            count: 1,
        }))
    }
    async fn put(
        &self,
        _: tonic::Request<api::etcdserverpb::PutRequest>,
    ) -> Result<tonic::Response<api::etcdserverpb::PutResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("put"))
    }
    async fn delete_range(
        &self,
        _: tonic::Request<api::etcdserverpb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<api::etcdserverpb::DeleteRangeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("delete"))
    }
    async fn txn(
        &self,
        _: tonic::Request<api::etcdserverpb::TxnRequest>,
    ) -> Result<tonic::Response<api::etcdserverpb::TxnResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("txn"))
    }
    async fn compact(
        &self,
        _: tonic::Request<api::etcdserverpb::CompactionRequest>,
    ) -> Result<tonic::Response<api::etcdserverpb::CompactionResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("compact"))
    }
}

fn etcdctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client) is installed by scripts/test")
}

#[tokio::test]
async fn debian_etcdctl_gets_over_mutual_tls_and_is_refused_without_a_certificate() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(true), Role::Client).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::etcdserverpb::kv_server::KvServer::new(Kv))
            .serve_with_incoming(Acceptor::tls(server).incoming(listener)),
    );
    let (_, cert, key) = pki.issue(&CertSpec::new("root"), "etcdctl");
    let endpoint = format!("--endpoints=https://127.0.0.1:{}", addr.port());
    let ca = format!("--cacert={}", pki.ca_file.display());
    let cert = format!("--cert={}", cert.display());
    let key = format!("--key={}", key.display());
    let out = tokio::task::spawn_blocking(move || {
        etcdctl(&[
            &endpoint,
            &ca,
            &cert,
            &key,
            "--dial-timeout=5s",
            "get",
            "greeting",
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "greeting\nroot\n");

    let endpoint = format!("--endpoints=https://127.0.0.1:{}", addr.port());
    let ca = format!("--cacert={}", pki.ca_file.display());
    let out = tokio::task::spawn_blocking(move || {
        etcdctl(&[
            &endpoint,
            &ca,
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "greeting",
        ])
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "no certificate, no answer");
}

#[test]
fn peer_info_without_certificates_cannot_serve_tls() {
    assert!(ServerTls::new(&TlsInfo::default(), Role::Peer).is_err());
}
