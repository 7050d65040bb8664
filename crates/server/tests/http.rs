//! etcd's plain HTTP endpoints on the client port, next to gRPC.

use server::{Config, Hearth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    send(addr, "GET", path).await
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    };
    let h = Hearth::start(cfg).await.unwrap();
    let addr = h.client_addrs()[0];
    assert_eq!(
        get(addr, "/health").await,
        (200, r#"{"health":"true","reason":""}"#.to_string())
    );
    assert_eq!(get(addr, "/livez").await, (200, "ok\n".to_string()));
    assert_eq!(get(addr, "/readyz").await, (200, "ok\n".to_string()));
    let (code, body) = get(addr, "/version").await;
    assert_eq!(code, 200);
    assert!(body.contains(r#""etcdserver":"3.5.33""#), "{body}");
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "etcd_disk_wal_fsync_duration_seconds_count",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    // etcd's Prometheus handler answers any method.
    let (code, posted) = send(addr, "POST", "/metrics").await;
    assert_eq!(code, 200);
    assert!(posted.contains("etcd_server_has_leader 1"), "{posted}");
    assert_eq!(get(addr, "/nope").await.0, 404);
    h.stop().await.unwrap();
}
