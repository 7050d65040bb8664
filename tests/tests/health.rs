//! etcd 3.5's health pages (`/health`, `/livez`, `/readyz`, their sub-paths and query parameters) on
//! the client URL and on a `--listen-metrics-urls` URL, the `hasleader` watch cancelled when the member
//! loses its leader, and the linearizable member list.
//!
//! Expected answers come from etcd 3.5.33's `server/etcdhttp/health.go` (Debian's etcd 3.4 has no
//! `/livez` or `/readyz`, and its `/health` JSON lacks `reason`), with one difference: etcd runs a root
//! path's checks in Go's random map order, Hearth in the order `data_corruption`, `serializable_read`,
//! `linearizable_read`, `non_learner`.

use std::time::Duration;

use api::etcdserverpb::cluster_client::ClusterClient;
use api::etcdserverpb::MemberListRequest;
use etcd_client::{AlarmAction, AlarmType, ConnectOptions, WatchOptions};
use hearth_tests::server::http_get;
use hearth_tests::{poll, ports, Cluster, Kind, Options, Server};

const DEADLINE: Duration = Duration::from_secs(30);

async fn get(port: u16, path: &str) -> (u16, String) {
    let p = path.to_string();
    tokio::task::spawn_blocking(move || http_get(port, &p))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

const HEALTHY: &str = r#"{"health":"true","reason":""}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_pages_answer_as_etcd_3_5_on_client_and_metrics_urls() {
    let metrics = ports::reserve();
    let s = Server::start_with(
        Kind::Hearth,
        Options::with_args(&[&format!("--listen-metrics-urls={}", metrics.url())]),
    )
    .await;
    let client = s
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    for port in [client, metrics.number()] {
        assert_eq!(get(port, "/health").await, (200, HEALTHY.into()));
        assert_eq!(
            get(port, "/health?serializable=true").await,
            (200, HEALTHY.into())
        );
        assert_eq!(get(port, "/livez").await, (200, "ok\n".into()));
        assert_eq!(
            get(port, "/livez?verbose").await,
            (200, "[+]serializable_read ok\nok\n".into())
        );
        assert_eq!(get(port, "/readyz").await, (200, "ok\n".into()));
        assert_eq!(
            get(port, "/readyz?verbose=1").await,
            (
                200,
                "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n"
                    .into()
            )
        );
        assert_eq!(
            get(
                port,
                "/readyz?exclude=linearizable_read&exclude=nonexistent&verbose"
            )
            .await,
            (
                200,
                "[+]data_corruption ok\n[+]serializable_read ok\n[+]non_learner ok\nok\n".into()
            )
        );
        for sub in [
            "/livez/serializable_read",
            "/readyz/data_corruption",
            "/readyz/serializable_read",
            "/readyz/linearizable_read",
        ] {
            assert_eq!(get(port, sub).await, (200, "ok\n".into()), "{sub}");
        }
        // A sub-path ignores `exclude`, and runs only its own check.
        assert_eq!(
            get(
                port,
                "/readyz/linearizable_read?exclude=linearizable_read&verbose"
            )
            .await,
            (200, "[+]linearizable_read ok\nok\n".into())
        );
        assert_eq!(get(port, "/livez/linearizable_read").await.0, 404);
        let (code, page) = get(port, "/metrics").await;
        assert_eq!(code, 200);
        assert!(page.contains("etcd_server_has_leader 1"), "{page}");
        assert!(
            page.contains(r#"etcd_server_healthcheck{name="linearizable_read",type="readyz"} 1"#),
            "{page}"
        );
    }
    // The metrics URL serves the health pages and /metrics only, as etcd's metrics mux.
    assert_eq!(
        get(metrics.number(), "/version").await,
        (404, "404 page not found\n".into())
    );
    assert_eq!(
        get(client, "/version").await,
        (
            200,
            r#"{"etcdserver":"3.5.33","etcdcluster":"3.5.0"}"#.into()
        )
    );

    // Alarms: /health names the first active one unless excluded; /readyz minds only CORRUPT.
    let mut c = s.client().await;
    c.alarm(AlarmAction::Activate, AlarmType::Nospace, None)
        .await
        .unwrap();
    let nospace = r#"{"health":"false","reason":"ALARM NOSPACE"}"#.to_string() + "\n";
    assert_eq!(get(client, "/health").await, (503, nospace.clone()));
    assert_eq!(get(metrics.number(), "/health").await, (503, nospace));
    assert_eq!(
        get(client, "/health?exclude=NOSPACE").await,
        (200, HEALTHY.into())
    );
    assert_eq!(get(client, "/readyz").await, (200, "ok\n".into()));
    c.alarm(AlarmAction::Activate, AlarmType::Corrupt, None)
        .await
        .unwrap();
    assert_eq!(
        get(client, "/health?exclude=NOSPACE").await,
        (
            503,
            r#"{"health":"false","reason":"ALARM CORRUPT"}"#.to_string() + "\n"
        )
    );
    assert_eq!(
        get(client, "/health?exclude=NOSPACE&exclude=CORRUPT").await,
        (200, HEALTHY.into())
    );
    // A failed check answers 503 with every check's line (and http.Error's newline).
    assert_eq!(
        get(client, "/readyz").await,
        (
            503,
            "[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\n\n"
                .into()
        )
    );
    assert_eq!(
        get(client, "/readyz/data_corruption").await,
        (
            503,
            "[-]data_corruption failed: alarm activated: CORRUPT\n\n".into()
        )
    );
    assert_eq!(
        get(client, "/readyz?exclude=data_corruption").await,
        (200, "ok\n".into())
    );
    assert_eq!(get(client, "/livez").await, (200, "ok\n".into()));
    for t in [AlarmType::Nospace, AlarmType::Corrupt] {
        c.alarm(AlarmAction::Deactivate, t, None).await.unwrap();
    }
    assert_eq!(get(client, "/health").await, (200, HEALTHY.into()));
    assert_eq!(get(client, "/readyz").await, (200, "ok\n".into()));
    let page = s.metrics();
    assert!(
        hearth_tests::server::metric_value(&page, "etcd_server_health_failures")
            .is_some_and(|v| v >= 3.0),
        "{page}"
    );
}

async fn member_list(endpoint: &str, linearizable: bool) -> Result<usize, tonic::Status> {
    let mut c = ClusterClient::connect(endpoint.to_string()).await.unwrap();
    let mut req = tonic::Request::new(MemberListRequest { linearizable });
    req.set_timeout(Duration::from_secs(20));
    c.member_list(req)
        .await
        .map(|r| r.into_inner().members.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_is_unhealthy_and_ends_hasleader_watches() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(&[]).await;
    let i = (leader + 1) % 3;
    let m = &cluster.members[i];
    let port = m
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    assert_eq!(get(port, "/health").await, (200, HEALTHY.into()));
    assert_eq!(member_list(&m.endpoint(), true).await.unwrap(), 3);

    // Two watchers on the member about to be cut off: one requiring a leader, one not.
    let opts = ConnectOptions::new().with_require_leader(true);
    let mut strict = etcd_client::Client::connect([m.endpoint()], Some(opts))
        .await
        .unwrap();
    let mut strict_stream = strict
        .watch("k", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut lax = m.client().await;
    let mut lax_stream = lax
        .watch("k", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();

    for st in [&mut strict_stream, &mut lax_stream] {
        let created = st.message().await.unwrap().unwrap();
        assert!(created.created());
    }

    cluster.members[i].cut_off(true);
    cluster.wait_leader_lost(i).await;
    let m = &cluster.members[i];
    assert_eq!(
        get(port, "/health").await,
        (
            503,
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#.to_string() + "\n"
        )
    );
    assert_eq!(
        get(port, "/health?serializable=true").await,
        (200, HEALTHY.into())
    );
    assert_eq!(get(port, "/livez").await, (200, "ok\n".into()));
    let (code, body) = get(port, "/readyz?verbose").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: "),
        "{body}"
    );
    // A linearizable member list needs the leader; a plain one is served from the local copy.
    assert!(member_list(&m.endpoint(), true).await.is_err());
    assert_eq!(member_list(&m.endpoint(), false).await.unwrap(), 3);

    // etcd ends a `hasleader` stream after three election timeouts without a leader; the other
    // stream stays open.
    let err = poll::eventually("the hasleader watch to end", DEADLINE, async || {
        match tokio::time::timeout(Duration::from_millis(200), strict_stream.message()).await {
            Err(_) => Err("still open".to_string()),
            Ok(Ok(Some(r))) => Err(format!("a response: {r:?}")),
            Ok(Ok(None)) => Ok("ended without a status".to_string()),
            Ok(Err(e)) => Ok(e.to_string()),
        }
    })
    .await;
    assert!(err.contains("etcdserver: no leader"), "{err}");
    let lax = tokio::time::timeout(Duration::from_millis(500), lax_stream.message()).await;
    assert!(
        lax.is_err(),
        "the watch without hasleader stays open: {lax:?}"
    );
    // A new hasleader stream is refused at once (the interceptor's check).
    let refused = match strict.watch("k", None).await {
        Err(e) => e.to_string(),
        Ok(mut st) => format!("{:?}", st.message().await),
    };
    assert!(refused.contains("etcdserver: no leader"), "{refused}");

    cluster.members[i].cut_off(false);
    cluster.wait_leader(&[]).await;
    poll::eventually("the member to be healthy again", DEADLINE, async || {
        get(port, "/health").await == (200, HEALTHY.to_string())
    })
    .await;
    drop(lax_stream);
    cluster.assert_hashkv_equal().await;
}
