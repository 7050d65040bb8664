//! The acceptor and configurations on real loopback sockets: who gets in, who is refused (and what the
//! log says), rotation of files on disk, protocol options, and start-up errors.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport::testing::CertSpec;
use transport::{Acceptor, ClientTls, Role, ServerTls, TlsError, TlsInfo};

/// Waits until the log contains `needle` (the refusal is logged by the server's handshake task, after
/// the client already saw the connection fail).
async fn logged(needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !logs().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "log never contained {needle:?}:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn mutual_tls_exchanges_bytes_and_exposes_the_client_cn() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(true), Role::Client).unwrap();
    let addr = echo_server(Acceptor::tls(server)).await;
    let greeting = exchange(addr, &client(&pki.client_info(Some("alice"))))
        .await
        .unwrap();
    assert_eq!(greeting, "hello alice h2");
}

#[tokio::test]
async fn without_client_cert_auth_no_certificate_is_asked_for() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(false), Role::Client).unwrap();
    let addr = echo_server(Acceptor::tls(server)).await;
    let greeting = exchange(addr, &client(&pki.client_info(Some("bob"))))
        .await
        .unwrap();
    assert_eq!(
        greeting, "hello - h2",
        "an unverified certificate is no identity"
    );
    exchange(addr, &client(&pki.client_info(None)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_without_certificate_is_refused_under_client_cert_auth() {
    capture_logs();
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(true), Role::Client).unwrap();
    let addr = echo_server(Acceptor::tls(server)).await;
    assert!(exchange(addr, &client(&pki.client_info(None)))
        .await
        .is_err());
    logged("rejected connection on client endpoint").await;
}

#[tokio::test]
async fn bad_client_certificates_are_refused_logged_and_the_next_good_client_gets_in() {
    capture_logs();
    let pki = Pki::new();
    let other = transport::testing::Ca::new("another CA");
    let (revoked, _, _) = pki.issue(&CertSpec::new("member-revoked"), "revoked");
    let crl = transport::testing::write(pki.path(), "crl.pem", &pki.ca.crl_pem(&[&revoked]));
    let mut info = pki.server_info(true);
    info.crl_file = Some(crl);
    info.allowed_cns = vec![
        "member-1".into(),
        "member-revoked".into(),
        "member-expired".into(),
        "member-early".into(),
        "member-foreign".into(),
    ];
    let server = ServerTls::new(&info, Role::Peer).unwrap();
    let addr = echo_server(Acceptor::tls(server)).await;
    let good = client(&pki.client_info(Some("member-1")));

    let with_cert = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        client(&TlsInfo {
            cert_file: Some(cert),
            key_file: Some(key),
            trusted_ca_file: Some(pki.ca_file.clone()),
            ..Default::default()
        })
    };
    let (_, c, k) = {
        let issued = other.issue(&CertSpec::new("member-foreign"));
        let (c, k) = issued.write(pki.path(), "foreign");
        (issued, c, k)
    };
    let foreign = with_cert(c, k);
    let (_, c, k) = pki.issue(&CertSpec::new("member-expired").expired(), "expired");
    let expired = with_cert(c, k);
    let (_, c, k) = pki.issue(&CertSpec::new("member-early").not_yet_valid(), "early");
    let early = with_cert(c, k);
    let revoked = with_cert(
        pki.path().join("revoked.pem"),
        pki.path().join("revoked-key.pem"),
    );
    let disallowed = client(&pki.client_info(Some("intruder")));

    for (name, bad, reason) in [
        ("member-foreign", &foreign, "UnknownIssuer"),
        ("member-expired", &expired, "certificate expired"),
        ("member-early", &early, "certificate not valid yet"),
        ("member-revoked", &revoked, "Revoked"),
        (
            "intruder",
            &disallowed,
            "client certificate authentication failed",
        ),
    ] {
        assert!(exchange(addr, bad).await.is_err(), "{name} must be refused");
        logged(&format!("common_name=\"{name}\"")).await;
        logged(reason).await;
        assert_eq!(
            exchange(addr, &good).await.unwrap(),
            "hello member-1 h2",
            "after {name}"
        );
    }
    logged("rejected connection on peer endpoint").await;
}

#[tokio::test]
async fn allowed_hostnames_match_the_client_certificate_sans() {
    let pki = Pki::new();
    let mut info = pki.server_info(true);
    info.allowed_hostnames = vec!["m1.cluster.test".into()];
    let addr = echo_server(Acceptor::tls(ServerTls::new(&info, Role::Client).unwrap())).await;
    let with_sans = |cn: &str, sans: &[&str]| {
        let (_, c, k) = pki.issue(&CertSpec::new(cn).sans(sans), cn);
        client(&TlsInfo {
            cert_file: Some(c),
            key_file: Some(k),
            trusted_ca_file: Some(pki.ca_file.clone()),
            ..Default::default()
        })
    };
    let m1 = with_sans("m1", &["m1.cluster.test"]);
    let m2 = with_sans("m2", &["m2.cluster.test"]);
    assert_eq!(exchange(addr, &m1).await.unwrap(), "hello m1 h2");
    assert!(exchange(addr, &m2).await.is_err());
}

/// etcd's `baseConfig` sets the allowed-CN / allowed-hostname check on its client configuration too: a
/// member dialing a peer whose server certificate the trusted CA issued, but with another CN (or for
/// other hostnames), fails with etcd's message.
#[tokio::test]
async fn a_dialer_refuses_servers_outside_its_allowed_cns_and_hostnames() {
    let pki = Pki::new();
    // Servers that ask for no client certificate, so only the dialer's own checks decide.
    let serve = |name: &str, sans: &[&str]| {
        let (_, c, k) = pki.issue(&CertSpec::new(name).sans(sans), &format!("srv-{name}"));
        let info = TlsInfo {
            cert_file: Some(c),
            key_file: Some(k),
            ..Default::default()
        };
        echo_server(Acceptor::tls(ServerTls::new(&info, Role::Peer).unwrap()))
    };
    let m1 = serve("member-1", &["127.0.0.1", "m1.cluster.test"]).await;
    let m2 = serve("member-2", &["127.0.0.1", "m2.cluster.test"]).await;
    let dial = |tls: ClientTls, addr: std::net::SocketAddr| async move {
        let uri: http::Uri = format!("http://{addr}").parse().unwrap();
        transport::Connector::tls(tls).connect(&uri).await
    };

    let mut by_cn = pki.client_info(Some("member-0"));
    by_cn.allowed_cns = vec!["member-1".into(), "member-9".into()];
    let by_cn = client(&by_cn);
    assert_eq!(exchange(m1, &by_cn).await.unwrap(), "hello - h2");
    let err = dial(by_cn.clone(), m2).await.unwrap_err();
    assert_eq!(err.to_string(), "client certificate authentication failed");
    assert!(exchange(m2, &by_cn).await.is_err());

    let mut by_host = pki.client_info(Some("member-0"));
    by_host.allowed_hostnames = vec!["m1.cluster.test".into()];
    let by_host = client(&by_host);
    assert_eq!(exchange(m1, &by_host).await.unwrap(), "hello - h2");
    let err = dial(by_host, m2).await.unwrap_err();
    assert_eq!(err.to_string(), "client certificate authentication failed");

    // etcd's `ClientConfig` applies the rule only with a certificate of its own (`baseConfig`)...
    let mut no_identity = pki.client_info(None);
    no_identity.allowed_cns = vec!["member-1".into()];
    exchange(m2, &client(&no_identity)).await.unwrap();
    // ...and with verification skipped Go hands it no verified chain, so every server is refused.
    let mut unverified = pki.client_info(Some("member-0"));
    unverified.insecure_skip_verify = true;
    exchange(m1, &client(&unverified)).await.unwrap();
    unverified.allowed_cns = vec!["member-1".into()];
    let err = dial(client(&unverified), m1).await.unwrap_err();
    assert_eq!(err.to_string(), "client certificate authentication failed");
}

#[tokio::test]
async fn peer_certificates_must_match_the_remote_address_unless_told_otherwise() {
    capture_logs();
    let pki = Pki::new();
    let (_, c, k) = pki.issue(&CertSpec::new("elsewhere").sans(&["10.9.9.9"]), "elsewhere");
    let elsewhere = client(&TlsInfo {
        cert_file: Some(c),
        key_file: Some(k),
        trusted_ca_file: Some(pki.ca_file.clone()),
        ..Default::default()
    });
    let mut info = pki.server_info(true);
    let strict = echo_server(Acceptor::tls(ServerTls::new(&info, Role::Peer).unwrap())).await;
    assert!(exchange(strict, &elsewhere).await.is_err());
    logged("x509: certificate is valid for 10.9.9.9, not 127.0.0.1").await;
    info.skip_client_san_verify = true;
    let lax = echo_server(Acceptor::tls(ServerTls::new(&info, Role::Peer).unwrap())).await;
    assert_eq!(
        exchange(lax, &elsewhere).await.unwrap(),
        "hello elsewhere h2"
    );
    // Client URLs never check SANs against the address (etcd only does so for peers).
    let client_port = echo_server(Acceptor::tls(
        ServerTls::new(&pki.server_info(true), Role::Client).unwrap(),
    ))
    .await;
    exchange(client_port, &elsewhere).await.unwrap();
}

#[tokio::test]
async fn plaintext_garbage_and_silence_on_the_tls_port_never_hold_up_a_good_client() {
    capture_logs();
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(false), Role::Client).unwrap();
    let addr =
        echo_server(Acceptor::tls(server).handshake_timeout(Duration::from_millis(500))).await;
    let good = client(&pki.client_info(None));

    // A client that connects and says nothing: it must not delay anyone, and is dropped at the timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    exchange(addr, &good).await.unwrap();

    for junk in [
        &b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9][..],
        &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        // The server answers with at most a TLS alert, then closes.
        let _ = s.read_to_end(&mut buf).await;
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP"),
            "no HTTP answer on a TLS port"
        );
        exchange(addr, &good).await.unwrap();
    }

    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).await.unwrap_or(0);
    assert_eq!(
        n, 0,
        "the silent connection is closed at the handshake timeout"
    );
    logged("TLS handshake not completed within").await;
}

#[tokio::test]
async fn one_port_serves_tls_and_plaintext_when_both_schemes_are_listed() {
    let pki = Pki::new();
    let server = ServerTls::new(&pki.server_info(false), Role::Client).unwrap();
    let addr = echo_server(Acceptor::tls_and_plain(server)).await;
    assert_eq!(
        exchange(addr, &client(&pki.client_info(None)))
            .await
            .unwrap(),
        "hello - h2"
    );
    // Plaintext clients (HTTP) speak first; that first byte tells the two apart.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"ping\n").await.unwrap();
    let mut answer = [0u8; 15];
    plain.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"hello - -\nping\n");
}

#[tokio::test]
async fn rotated_certificate_files_are_served_by_the_next_handshake() {
    let pki = Pki::new();
    let (_, cert, key) = pki.issue(&CertSpec::new("server-v1"), "rotating");
    let info = TlsInfo {
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        ..Default::default()
    };
    let addr = echo_server(Acceptor::tls(ServerTls::new(&info, Role::Client).unwrap())).await;
    let c = client(&pki.client_info(None));
    let served_cn = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let s = tokio_rustls::TlsConnector::from(c.config())
            .connect(c.server_name("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
        transport::CertSummary::parse(&der)
            .unwrap()
            .common_name
            .unwrap()
    };
    assert_eq!(served_cn().await, "server-v1");

    let v2 = pki.ca.issue(&CertSpec::new("server-v2"));
    // Certificate first: for a moment it does not match the key; the old pair keeps being served.
    std::fs::write(&cert, &v2.cert_pem).unwrap();
    assert_eq!(served_cn().await, "server-v1");
    std::fs::write(&key, &v2.key_pem).unwrap();
    assert_eq!(served_cn().await, "server-v2");

    // A rename over the files (how most tools rotate) is seen as well.
    let v3 = pki.ca.issue(&CertSpec::new("server-v3"));
    let (c3, k3) = v3.write(pki.path(), "staged");
    std::fs::rename(&k3, &key).unwrap();
    std::fs::rename(&c3, &cert).unwrap();
    assert_eq!(served_cn().await, "server-v3");
}

#[tokio::test]
async fn a_changed_crl_file_is_applied_to_the_next_handshake() {
    let pki = Pki::new();
    let crl = transport::testing::write(pki.path(), "crl.pem", &pki.ca.crl_pem(&[]));
    let mut info = pki.server_info(true);
    info.crl_file = Some(crl.clone());
    let addr = echo_server(Acceptor::tls(ServerTls::new(&info, Role::Client).unwrap())).await;
    let (alice, c, k) = pki.issue(&CertSpec::new("alice"), "alice");
    let alice_client = client(&TlsInfo {
        cert_file: Some(c),
        key_file: Some(k),
        trusted_ca_file: Some(pki.ca_file.clone()),
        ..Default::default()
    });
    assert_eq!(
        exchange(addr, &alice_client).await.unwrap(),
        "hello alice h2"
    );
    std::fs::write(&crl, pki.ca.crl_pem(&[&alice])).unwrap();
    assert!(exchange(addr, &alice_client).await.is_err());
    // An unreadable CRL refuses everyone (fail closed) until it is fixed.
    let bob = client(&pki.client_info(Some("bob")));
    std::fs::write(&crl, "not a CRL").unwrap();
    assert!(exchange(addr, &bob).await.is_err());
    std::fs::write(&crl, pki.ca.crl_pem(&[&alice])).unwrap();
    assert_eq!(exchange(addr, &bob).await.unwrap(), "hello bob h2");
}

#[tokio::test]
async fn protocol_versions_and_cipher_suites_are_enforced() {
    let pki = Pki::new();
    let mut tls13_only = pki.server_info(false);
    tls13_only.options = options(&[], "TLS1.3", "");
    let addr = echo_server(Acceptor::tls(
        ServerTls::new(&tls13_only, Role::Client).unwrap(),
    ))
    .await;
    let mut tls12_client = pki.client_info(None);
    tls12_client.options = options(&[], "", "TLS1.2");
    assert!(exchange(addr, &client(&tls12_client)).await.is_err());
    exchange(addr, &client(&pki.client_info(None)))
        .await
        .unwrap();

    // rcgen's keys are ECDSA, so ECDSA suites are the ones that can work.
    let mut one_suite = pki.server_info(false);
    one_suite.options = options(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], "", "TLS1.2");
    let acceptor = Acceptor::tls(ServerTls::new(&one_suite, Role::Client).unwrap());
    let addr = echo_server(acceptor).await;
    let mut chacha = pki.client_info(None);
    chacha.options = options(&["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"], "", "TLS1.2");
    assert!(exchange(addr, &client(&chacha)).await.is_err());
    let mut aes = pki.client_info(None);
    aes.options = options(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], "", "TLS1.2");
    exchange(addr, &client(&aes)).await.unwrap();
}

#[tokio::test]
async fn a_client_refuses_expired_and_foreign_server_certificates() {
    let pki = Pki::new();
    let (_, c, k) = pki.issue(&CertSpec::new("old").expired(), "old-server");
    let expired = TlsInfo {
        cert_file: Some(c),
        key_file: Some(k),
        ..Default::default()
    };
    let addr = echo_server(Acceptor::tls(
        ServerTls::new(&expired, Role::Client).unwrap(),
    ))
    .await;
    let err = exchange(addr, &client(&pki.client_info(None)))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("certificate expired"),
        "{err:#}"
    );

    let other = Pki::new();
    let addr = echo_server(Acceptor::tls(
        ServerTls::new(&other.server_info(false), Role::Client).unwrap(),
    ))
    .await;
    let err = exchange(addr, &client(&pki.client_info(None)))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
    // The server certificate is valid for 127.0.0.1 and localhost, not for other names.
    let err = exchange_with(addr, &client(&other.client_info(None)), "db.example")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("certificate not valid for name"),
        "{err:#}"
    );
    exchange_with(addr, &client(&other.client_info(None)), "localhost")
        .await
        .unwrap();
}

#[tokio::test]
async fn auto_tls_certificates_serve_and_dial_without_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let info = transport::self_cert(
        &dir.path().join("fixtures").join("peer"),
        &["127.0.0.1:0".to_string()],
        1,
        Default::default(),
    )
    .unwrap();
    let addr = echo_server(Acceptor::tls(ServerTls::new(&info, Role::Peer).unwrap())).await;
    assert_eq!(exchange(addr, &client(&info)).await.unwrap(), "hello - h2");
}

fn build_error(info: &TlsInfo) -> String {
    ServerTls::new(info, Role::Client).unwrap_err().to_string()
}

#[test]
fn bad_files_are_refused_at_build_time_naming_the_file() {
    let pki = Pki::new();
    let (_, cert, _) = pki.issue(&CertSpec::new("a"), "a");
    let (_, _, other_key) = pki.issue(&CertSpec::new("b"), "b");
    let info = |c: &std::path::Path, k: &std::path::Path| TlsInfo {
        cert_file: Some(c.to_path_buf()),
        key_file: Some(k.to_path_buf()),
        ..Default::default()
    };

    let e = build_error(&info(&cert, &other_key));
    assert!(
        e.starts_with("tls: private key does not match public key"),
        "{e}"
    );
    assert!(e.contains(&*cert.to_string_lossy()) && e.contains(&*other_key.to_string_lossy()));

    let missing = pki.path().join("missing.pem");
    let e = build_error(&info(&missing, &other_key));
    assert!(
        e.starts_with(&format!("open {}: ", missing.display())),
        "{e}"
    );

    let empty = transport::testing::write(pki.path(), "empty.pem", "");
    let e = build_error(&info(&empty, &other_key));
    assert_eq!(
        e,
        format!(
            "{}: tls: failed to find any PEM data in certificate input",
            empty.display()
        )
    );
    let e = build_error(&info(&cert, &cert));
    assert_eq!(
        e,
        format!(
            "{}: tls: found a certificate rather than a key in the PEM for the private key",
            cert.display()
        )
    );
    let broken = transport::testing::write(
        pki.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let e = build_error(&info(&broken, &other_key));
    assert!(e.starts_with(&format!("{}: ", broken.display())), "{e}");

    let mut with_bad_ca = pki.server_info(true);
    with_bad_ca.trusted_ca_file = Some(empty.clone());
    assert!(build_error(&with_bad_ca).starts_with(&format!("{}: ", empty.display())));
    let mut with_bad_crl = pki.server_info(true);
    with_bad_crl.crl_file = Some(empty.clone());
    assert!(build_error(&with_bad_crl).starts_with(&format!("{}: ", empty.display())));

    let mut bad_client_pair = pki.server_info(false);
    bad_client_pair.client_cert_file = Some(cert.clone());
    bad_client_pair.client_key_file = Some(other_key.clone());
    assert!(matches!(
        ServerTls::new(&bad_client_pair, Role::Peer),
        Err(TlsError::KeyMismatch { .. })
    ));
    assert!(matches!(
        ClientTls::new(&bad_client_pair),
        Err(TlsError::KeyMismatch { .. })
    ));
}

/// The protocol a client offering only `alpn` ends up with, or the handshake error.
async fn negotiated(role: Role, alpn: &[u8]) -> Result<Option<Vec<u8>>, std::io::Error> {
    let pki = Pki::new();
    let addr = echo_server(Acceptor::tls(
        ServerTls::new(&pki.server_info(false), role).unwrap(),
    ))
    .await;
    let tls = client(&pki.client_info(None));
    let mut config = (*tls.config()).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(tls.server_name("127.0.0.1").unwrap(), tcp)
        .await?;
    Ok(s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

#[tokio::test]
async fn the_client_port_speaks_http1_over_tls_and_the_peer_port_only_h2() {
    assert_eq!(
        negotiated(Role::Client, b"http/1.1").await.unwrap(),
        Some(b"http/1.1".to_vec())
    );
    assert_eq!(
        negotiated(Role::Client, b"h2").await.unwrap(),
        Some(b"h2".to_vec())
    );
    assert!(negotiated(Role::Peer, b"http/1.1").await.is_err());
}
