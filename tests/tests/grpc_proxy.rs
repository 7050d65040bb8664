//! `hearth grpc-proxy` end to end: etcdctl and the `etcd-client` crate through the proxy in front
//! of a 3-member Hearth cluster; many watchers sharing few upstream watchers (counted on the
//! members' own metrics); the watch guarantees (ordered, no gap, no duplicate, from the asked
//! revision) through the proxy while the member it watches on is killed and restarted; the
//! namespace; the proxy in front of etcd 3.4; errors while no member is reachable; refused flags;
//! TLS on the client side (etcdctl and curl with `--cacert`, client certificates, a CRL) and to
//! the cluster (etcd 3.4 serving TLS); auth through the proxy (users with different permissions
//! watching one key, new watchers checked after auth is enabled or a permission revoked); the
//! JSON gateway on the proxy's port.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, GetResponse, LockOptions, PutOptions, TxnOp,
    WatchOptions, WatchResponse, WatchStream,
};
use hearth_tests::leases::Interactive;
use hearth_tests::poll::{self, Poll};
use hearth_tests::proxy::{ClientFiles, Proxy};
use hearth_tests::{Cluster, Kind, Server};

const DEADLINE: Duration = Duration::from_secs(60);

fn out(o: &std::process::Output) -> String {
    hearth_tests::ctl::succeeded(o, "etcdctl")
}

/// The sum over the running members of the watchers they hold.
fn member_watchers(c: &Cluster) -> f64 {
    c.running()
        .map(|i| {
            c.member(i)
                .metric("etcd_debugging_mvcc_watcher_total")
                .unwrap_or(0.0)
        })
        .sum()
}

/// The next response of a watch stream, which must come within `DEADLINE`.
async fn next_message(s: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(DEADLINE, s.message())
        .await
        .expect("a watch response within the deadline")
        .expect("the watch stream")
        .expect("the watch stream open")
}

/// Opens a watcher on `c` and takes its `created` response.
async fn watch_created(
    c: &mut Client,
    key: impl Into<Vec<u8>>,
    opts: Option<WatchOptions>,
) -> (WatchStream, WatchResponse) {
    let mut s = c.watch(key, opts).await.unwrap();
    let created = next_message(&mut s).await;
    assert!(created.created(), "{created:?}");
    (s, created)
}

/// Puts `key` and returns the revision of the write.
async fn put_revision(c: &mut Client, key: &str, value: &str) -> i64 {
    c.put(key, value, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

async fn serializable_get(c: &mut Client, key: &str) -> Result<GetResponse, etcd_client::Error> {
    c.get(key, Some(GetOptions::new().with_serializable()))
        .await
}

/// `etcdctl get KEY --print-value-only` through the proxy prints `value`.
fn assert_value(proxy: &Proxy, key: &str, value: &str) {
    assert_eq!(
        out(&proxy.etcdctl(&["get", key, "--print-value-only"])),
        format!("{value}\n")
    );
}

/// A 3-member cluster and a proxy in front of it started with `args`.
async fn cluster_and_proxy(args: &[&str]) -> (Cluster, Proxy) {
    let cluster = Cluster::start(3).await;
    let proxy = Proxy::start(&cluster.endpoints(), args).await;
    (cluster, proxy)
}

/// Waits (see `poll`) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    poll::eventually(what, DEADLINE, async || f()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_through_the_proxy_in_front_of_three_members() {
    let (cluster, proxy) = cluster_and_proxy(&[]).await;

    // From revision 2, the first write's: the watch may reach the cluster after that write.
    let mut watch =
        Interactive::start(&proxy.endpoint(), &["watch", "--prefix", "k", "--rev", "2"]);
    assert_eq!(out(&proxy.etcdctl(&["put", "k1", "v1"])), "OK\n");
    assert_eq!(out(&proxy.etcdctl(&["get", "k1"])), "k1\nv1\n");
    assert_eq!(
        out(&proxy.etcdctl(&["get", "k1", "--consistency=s"])),
        "k1\nv1\n"
    );
    let txn = proxy.etcdctl_stdin_txn("value(\"k1\") = \"v1\"\n\nput k2 v2\n\nput k2 no\n\n");
    assert_eq!(txn, "SUCCESS\n\nOK\n");
    assert_eq!(out(&proxy.etcdctl(&["del", "k1"])), "1\n");
    assert!(
        watch.wait_lines(9, DEADLINE),
        "watch lines: {:?}",
        watch.lines()
    );
    assert_eq!(
        watch.lines()[..9],
        ["PUT", "k1", "v1", "PUT", "k2", "v2", "DELETE", "k1", ""][..]
    );
    let _ = watch.interrupt(Duration::from_secs(5));

    // Leases: grant, keep alive once, time to live with keys, revoke.
    let granted = out(&proxy.etcdctl(&["lease", "grant", "60"]));
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert_eq!(
        out(&proxy.etcdctl(&["put", "leased", "x", "--lease", &id])),
        "OK\n"
    );
    let kept = out(&proxy.etcdctl(&["lease", "keep-alive", "--once", &id]));
    assert!(kept.contains("keepalived with TTL(60)"), "{kept}");
    let ttl = out(&proxy.etcdctl(&["lease", "timetolive", &id, "--keys"]));
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    assert!(out(&proxy.etcdctl(&["lease", "revoke", &id])).contains("revoked"));
    assert_eq!(out(&proxy.etcdctl(&["get", "leased"])), "");

    // Lock and election through the proxy.
    let mut lock = Interactive::start(&proxy.endpoint(), &["lock", "mylock"]);
    assert!(lock.wait_lines(1, DEADLINE), "lock: {:?}", lock.lines());
    assert!(lock.lines()[0].starts_with("mylock/"), "{:?}", lock.lines());
    let _ = lock.interrupt(Duration::from_secs(5));
    let mut elect = Interactive::start(&proxy.endpoint(), &["elect", "myelection", "alice"]);
    assert!(elect.wait_lines(2, DEADLINE), "elect: {:?}", elect.lines());
    assert_eq!(elect.lines()[1], "alice");
    let _ = elect.interrupt(Duration::from_secs(5));

    // As etcd's proxy: the member list is the proxy itself; status comes from a member.
    let members = out(&proxy.etcdctl(&["member", "list"]));
    assert!(members.contains("127.0.0.1:23790"), "{members}");
    let status = out(&proxy.etcdctl(&["endpoint", "status"]));
    assert!(status.contains("3.5.33"), "{status}");
    cluster.assert_hashkv_equal().await;
}

trait TxnStdin {
    fn etcdctl_stdin_txn(&self, stdin: &str) -> String;
}

impl TxnStdin for Proxy {
    fn etcdctl_stdin_txn(&self, stdin: &str) -> String {
        out(&hearth_tests::server::etcdctl(
            &self.endpoint(),
            &["txn"],
            stdin,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_crate_through_the_proxy_and_the_cache() {
    let (cluster, proxy) = cluster_and_proxy(&[]).await;
    let mut c = proxy.client().await;
    let put = c.put("a", "1", None).await.unwrap();
    let rev = put.header().unwrap().revision();
    // A serializable read is answered from the cache once a linearizable one filled it, and
    // never older than the proxy's own write.
    let r = c.get("a", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    for _ in 0..3 {
        let r = serializable_get(&mut c, "a").await.unwrap();
        assert_eq!(r.kvs()[0].value(), b"1");
        assert!(r.header().unwrap().revision() >= rev);
    }
    eventually("cache hits", || {
        proxy
            .proxy_metric("etcd_grpc_proxy_cache_hits_total")
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    c.put("a", "2", None).await.unwrap();
    let r = serializable_get(&mut c, "a").await.unwrap();
    assert_eq!(
        r.kvs()[0].value(),
        b"2",
        "a write through the proxy is never hidden by the cache"
    );
    // A write that bypasses the proxy reaches the cache through its invalidation watch.
    let mut direct = cluster.member(1).client().await;
    let w = direct.put("a", "3", None).await.unwrap();
    let wrev = w.header().unwrap().revision();
    let mut wait = Poll::new(
        "a serializable answer at the direct write's revision",
        DEADLINE,
    );
    loop {
        let r = serializable_get(&mut c, "a").await.unwrap();
        let h = r.header().unwrap().revision();
        if h >= wrev {
            assert_eq!(
                r.kvs()[0].value(),
                b"3",
                "answer at {h} must hold the write at {wrev}"
            );
            break;
        }
        wait.next(format!("an answer at {h}")).await;
    }

    let t = c
        .txn(
            etcd_client::Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "3")])
                .and_then([TxnOp::put(
                    "b",
                    "x",
                    Some(PutOptions::new().with_prev_key()),
                )]),
        )
        .await
        .unwrap();
    assert!(t.succeeded());

    let lease = c.lease_grant(30, None).await.unwrap().id();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let a = tokio::time::timeout(DEADLINE, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((a.id(), a.ttl()), (lease, 30));

    let lock = c
        .lock("l", Some(LockOptions::new().with_lease(lease)))
        .await
        .unwrap();
    assert!(lock.key().starts_with(b"l/"));
    c.unlock(lock.key()).await.unwrap();
    cluster.assert_hashkv_equal().await;
}

/// Many clients watch the same few keys through the proxy: the members hold one upstream
/// watcher per key (plus the cache's), and every client watcher gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_on_few_keys_share_upstream_watchers() {
    let (cluster, proxy) = cluster_and_proxy(&[]).await;
    let before = member_watchers(&cluster);
    const KEYS: usize = 4;
    const CLIENTS: usize = 10;
    const PER_CLIENT: usize = 20;
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = proxy.client().await;
        for w in 0..PER_CLIENT {
            let key = format!("cfg/{}", w % KEYS);
            let (s, _) = watch_created(&mut c, key, None).await;
            streams.push((w % KEYS, s));
        }
    }
    let want = before + KEYS as f64;
    eventually("upstream watchers", || member_watchers(&cluster) == want).await;
    assert_eq!(
        proxy.proxy_metric("etcd_grpc_proxy_watchers_coalescing_total"),
        Some((CLIENTS * PER_CLIENT - KEYS) as f64)
    );
    let mut c = cluster.member(0).client().await;
    let mut revs = BTreeMap::new();
    for k in 0..KEYS {
        let r = c.put(format!("cfg/{k}"), "on", None).await.unwrap();
        revs.insert(k, r.header().unwrap().revision());
    }
    for (k, s) in &mut streams {
        let r = next_message(s).await;
        assert_eq!(r.events().len(), 1);
        assert_eq!(r.events()[0].kv().unwrap().mod_revision(), revs[k]);
    }
    // A latecomer from an older revision gets its history, then shares the key's watcher again.
    let mut late = proxy.client().await;
    let first = revs[&0] - 1;
    let mut s = late
        .watch(
            "cfg/0",
            Some(WatchOptions::new().with_start_revision(1).with_prev_key()),
        )
        .await
        .unwrap();
    let r = next_message(&mut s).await;
    assert!(r.created() || !r.events().is_empty());
    let mut seen = Vec::new();
    while seen.is_empty() {
        let r = next_message(&mut s).await;
        seen.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    assert_eq!(seen, [revs[&0]], "history after {first}");
    eventually("the latecomer merged", || member_watchers(&cluster) == want).await;
    cluster.assert_hashkv_equal().await;
}

/// Watchers through the proxy while a writer keeps writing one key per revision and the member
/// the proxy watches on is killed and restarted: every watcher gets exactly the revisions from
/// its start to the last one, in order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_guarantees_hold_through_the_proxy_while_a_member_is_killed() {
    let (mut cluster, proxy) = cluster_and_proxy(&[]).await;
    let mut w = cluster.member(1).client().await;
    let base = put_revision(&mut w, "g/seed", "0").await;

    // Watchers from now, from the past, with prev_kv, with a filter.
    let mut clients = Vec::new();
    let mut watchers = Vec::new();
    for (i, start) in [0, base, 1, 0, base].into_iter().enumerate() {
        let mut c = proxy.client().await;
        let mut opts = WatchOptions::new().with_prefix();
        if start > 0 {
            opts = opts.with_start_revision(start);
        }
        if i == 2 {
            opts = opts.with_prev_key();
        }
        let (s, created) = watch_created(&mut c, "g/", Some(opts)).await;
        let from = if start > 0 {
            start
        } else {
            created.header().unwrap().revision() + 1
        };
        watchers.push((from, s, Vec::<i64>::new()));
        clients.push(c);
    }

    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn({
        let eps: Vec<String> = [1, 2]
            .iter()
            .map(|&i| cluster.member(i).endpoint())
            .collect();
        let written = written.clone();
        async move {
            let mut c = hearth_tests::server::connect(&eps[0]).await.unwrap();
            let mut last = 0;
            let mut n = 0;
            while n < 600 {
                // A write refused while the cluster elects a leader is repeated.
                let mut retry = Poll::new(format!("write {n} to succeed"), DEADLINE);
                loop {
                    match c.put(format!("g/{n}"), format!("{n}"), None).await {
                        Ok(r) => {
                            last = r.header().unwrap().revision();
                            break;
                        }
                        Err(e) => retry.next(e).await,
                    }
                }
                n += 1;
                written.store(n, std::sync::atomic::Ordering::Release);
            }
            last
        }
    });
    let reached = |n: usize| {
        let w = written.clone();
        move || w.load(std::sync::atomic::Ordering::Acquire) >= n
    };
    // Kill the member the proxy watches on (endpoint 0, pinned first) while writes go on,
    // and bring it back while they still go on.
    eventually("100 writes", reached(100)).await;
    cluster.member_mut(0).kill9();
    eventually("300 writes", reached(300)).await;
    cluster.member_mut(0).restart().await;
    let last = writer.await.unwrap();

    for (from, s, got) in &mut watchers {
        while got.last().is_none_or(|&r| r < last) {
            let r = tokio::time::timeout(DEADLINE, s.message())
                .await
                .unwrap_or_else(|_| panic!("watcher from {from} stalled at {:?}", got.last()))
                .unwrap()
                .unwrap();
            assert!(!r.canceled(), "canceled: {r:?}");
            for e in r.events() {
                assert_eq!(e.event_type(), EventType::Put);
                got.push(e.kv().unwrap().mod_revision());
            }
        }
        // Revision 1 is the empty store: the first write is revision 2.
        let want: Vec<i64> = ((*from).max(2)..=last).collect();
        // The seed (and anything before) is in the prefix too; every revision from `from` on is
        // one put under g/.
        assert_eq!(got, &want, "watcher from {from}");
    }
    assert!(
        proxy.log().contains("upstream watch stream broke"),
        "the proxy's upstream watch stream was on the killed member"
    );
    cluster.assert_hashkv_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_prefixes_every_key_both_ways() {
    let (cluster, proxy) = cluster_and_proxy(&["--namespace=tenant/"]).await;
    let mut direct = cluster.member(0).client().await;
    direct.put("outside", "no", None).await.unwrap();
    let mut c = proxy.client().await;
    let (mut watch, _) = watch_created(&mut c, "", Some(WatchOptions::new().with_prefix())).await;
    c.put("a", "1", None).await.unwrap();
    let r = direct.get("tenant/a", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"1", "stored under the prefix");
    let all = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let keys: Vec<&[u8]> = all.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [b"a"], "only the namespace, prefix stripped");
    let from = c
        .get("\0", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(from.kvs().len(), 1);
    let e = next_message(&mut watch).await;
    assert_eq!(e.events()[0].kv().unwrap().key(), b"a");
    direct.put("outside", "still no", None).await.unwrap();
    c.delete("", Some(etcd_client::DeleteOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(
        direct.get("outside", None).await.unwrap().kvs().len(),
        1,
        "untouched"
    );
    let lease = c.lease_grant(30, None).await.unwrap().id();
    c.put("b", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    direct
        .put("outside2", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let ttl = c
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"b".to_vec()]);
    let lock = c
        .lock("l", Some(LockOptions::new().with_lease(lease)))
        .await
        .unwrap();
    assert!(lock.key().starts_with(b"l/"));
    let held = direct
        .get("tenant/l/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(held.kvs().len(), 1, "the lock lives under the prefix");
    c.unlock(lock.key()).await.unwrap();
    cluster.assert_hashkv_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_in_front_of_etcd_3_4() {
    let etcd = Server::start(Kind::Etcd).await;
    let proxy = Proxy::start(&[etcd.endpoint()], &[]).await;
    let before = etcd
        .metric("etcd_debugging_mvcc_watcher_total")
        .unwrap_or(0.0);
    let mut c = proxy.client().await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let (s, _) = watch_created(&mut c, "k", None).await;
        streams.push(s);
    }
    assert_eq!(
        etcd.metric("etcd_debugging_mvcc_watcher_total"),
        Some(before + 1.0)
    );
    let rev = put_revision(&mut c, "k", "v").await;
    for s in &mut streams {
        let r = next_message(s).await;
        assert_eq!(r.events()[0].kv().unwrap().mod_revision(), rev);
    }
    assert_value(&proxy, "k", "v");
    let status = out(&proxy.etcdctl(&["endpoint", "status"]));
    assert!(status.contains("3.4."), "{status}");
    // A progress request is answered without claiming what was not delivered.
    let mut s = c
        .watch("k", Some(WatchOptions::new().with_start_revision(1)))
        .await
        .unwrap();
    let mut last = 0;
    while last < rev {
        let r = next_message(&mut s).await;
        if let Some(e) = r.events().last() {
            last = e.kv().unwrap().mod_revision();
        }
    }
    s.request_progress().await.unwrap();
    let p = next_message(&mut s).await;
    assert_eq!(p.watch_id(), -1);
    assert!(p.header().unwrap().revision() <= rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_member_is_answered_with_unavailable() {
    let dead_port = hearth_tests::ports::reserve();
    let dead = format!("127.0.0.1:{dead_port}");
    let live = Server::start(Kind::Hearth).await;
    // Started with a live member, which then goes away.
    let mut live = live;
    let proxy = Proxy::start(&[live.endpoint(), dead], &[]).await;
    live.kill9();
    let o = proxy.etcdctl(&["get", "k", "--command-timeout=5s"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Unavailable") || err.contains("connection"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unimplemented_flags_are_refused_by_name() {
    for flag in [
        "--resolver-prefix=/proxies",
        "--enable-pprof",
        "--discovery-srv=example.com",
    ] {
        let o = std::process::Command::new(hearth_tests::server::hearth_bin())
            .args(["grpc-proxy", "start", "--listen-addr=127.0.0.1:0", flag])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{flag} accepted");
        let name = flag.split('=').next().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{name} is not supported")),
            "{flag}: {err}"
        );
    }
}

/// A test PKI: a CA, a certificate for 127.0.0.1 (server and client use), a client certificate,
/// one without a CN (what a proxy presents to its cluster), a revoked one, and a CRL revoking it.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    no_cn: (PathBuf, PathBuf),
    revoked: (PathBuf, PathBuf),
    crl: PathBuf,
}

fn pki() -> Pki {
    use transport::testing::{write, Ca, CertSpec};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("hearth-e2e-proxy-ca");
    let server = ca.issue(&CertSpec::new("proxy"));
    let client = ca.issue(&CertSpec::new("client"));
    let revoked = ca.issue(&CertSpec::new("revoked"));
    let no_cn = ca.issue(&CertSpec {
        cn: None,
        ..CertSpec::new("")
    });
    let crl = write(dir.path(), "crl.pem", &ca.crl_pem(&[&revoked]));
    Pki {
        ca: write(dir.path(), "ca.pem", ca.cert_pem()),
        server: server.write(dir.path(), "server"),
        client: client.write(dir.path(), "client"),
        no_cn: no_cn.write(dir.path(), "no-cn"),
        revoked: revoked.write(dir.path(), "revoked"),
        crl,
        _dir: dir,
    }
}

fn flag(name: &str, p: &std::path::Path) -> String {
    format!("--{name}={}", p.display())
}

fn failed(o: &std::process::Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// etcdctl with `args` against `endpoint` (no TLS files unless in `args`) fails.
fn refused(endpoint: &str, args: &[&str]) {
    failed(&hearth_tests::server::etcdctl(endpoint, args, ""));
}

/// etcdctl and curl reach a plaintext member through a proxy that serves TLS; clients that do
/// not speak TLS or do not trust its certificate are refused; with a trusted CA the proxy
/// requires client certificates and honours the CRL; an `https://` metrics address serves TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_and_curl_through_a_tls_proxy_to_a_plaintext_member() {
    let pki = pki();
    let member = Server::start(Kind::Hearth).await;
    let metrics = hearth_tests::ports::reserve();
    let proxy = Proxy::start_tls(
        &[member.endpoint()],
        &[
            &flag("cert-file", &pki.server.0),
            &flag("key-file", &pki.server.1),
            &format!("--metrics-addr=https://127.0.0.1:{metrics}"),
        ],
        ClientFiles {
            ca: pki.ca.clone(),
            cert_key: None,
        },
    )
    .await;
    assert!(proxy.endpoint().starts_with("https://"));
    assert_eq!(out(&proxy.etcdctl(&["put", "k", "v"])), "OK\n");
    assert_value(&proxy, "k", "v");
    // The JSON gateway over TLS ("k" and "v" in base64).
    let (code, body) = proxy.curl_post("/v3/kv/range", r#"{"key":"aw=="}"#);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""value":"dg==""#), "{body}");
    // Plaintext on the TLS port, and TLS without trusting the proxy's CA, are refused.
    let plain = format!("http://127.0.0.1:{}", proxy.port());
    refused(&plain, &["get", "k", "--command-timeout=3s"]);
    refused(&proxy.endpoint(), &["get", "k", "--command-timeout=3s"]);
    poll::eventually(
        "the proxy to log the refused handshake",
        DEADLINE,
        async || {
            proxy
                .log()
                .contains("rejected connection on client endpoint")
        },
    )
    .await;
    // The metrics address serves TLS with the same certificate.
    let o = std::process::Command::new("curl")
        .args([
            "--silent",
            "--fail",
            "--cacert",
            &pki.ca.display().to_string(),
            &format!("https://127.0.0.1:{metrics}/proxy/metrics"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("etcd_grpc_proxy_cache_keys_total"),
        "{o:?}"
    );
    drop(proxy);

    // A trusted CA makes client certificates required; the CRL refuses the revoked one.
    let proxy = Proxy::start_tls(
        &[member.endpoint()],
        &[
            &flag("cert-file", &pki.server.0),
            &flag("key-file", &pki.server.1),
            &flag("trusted-ca-file", &pki.ca),
            &flag("client-crl-file", &pki.crl),
        ],
        ClientFiles {
            ca: pki.ca.clone(),
            cert_key: Some(pki.client.clone()),
        },
    )
    .await;
    assert_value(&proxy, "k", "v");
    let (code, body) = proxy.curl_post("/v3/kv/range", r#"{"key":"aw=="}"#);
    assert_eq!(code, 200, "{body}");
    let ca = flag("cacert", &pki.ca);
    refused(
        &proxy.endpoint(),
        &[&ca, "get", "k", "--command-timeout=3s"],
    );
    refused(
        &proxy.endpoint(),
        &[
            &ca,
            &flag("cert", &pki.revoked.0),
            &flag("key", &pki.revoked.1),
            "get",
            "k",
            "--command-timeout=3s",
        ],
    );
    poll::eventually(
        "the proxy to log the refused certificate",
        DEADLINE,
        async || {
            let log = proxy.log();
            log.contains("rejected connection on client endpoint") && log.contains("revoked")
        },
    )
    .await;
}

/// An `etcd` 3.4 member serving only TLS, started with the test's certificates; killed on drop.
struct TlsEtcd {
    child: std::process::Child,
    dir: tempfile::TempDir,
    client: hearth_tests::ports::Port,
    _peer: hearth_tests::ports::Port,
}

impl TlsEtcd {
    /// With `client_auth`, etcd also requires client certificates from the test's CA
    /// (`--client-cert-auth --trusted-ca-file`).
    async fn start(pki: &Pki, client_auth: bool) -> TlsEtcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (
            hearth_tests::ports::reserve(),
            hearth_tests::ports::reserve(),
        );
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let mut cmd = std::process::Command::new(hearth_tests::server::ETCD_BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        if client_auth {
            cmd.args([
                "--client-cert-auth".to_string(),
                flag("trusted-ca-file", &pki.ca),
            ]);
        }
        let child = cmd
            .args([
                "--name=tls".to_string(),
                flag("data-dir", &dir.path().join("data")),
                format!("--listen-client-urls=https://127.0.0.1:{client}"),
                format!("--advertise-client-urls=https://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=tls=http://127.0.0.1:{peer}"),
                flag("cert-file", &pki.server.0),
                flag("key-file", &pki.server.1),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let e = TlsEtcd {
            child,
            dir,
            client,
            _peer: peer,
        };
        let tls = [
            flag("cacert", &pki.ca),
            flag("cert", &pki.client.0),
            flag("key", &pki.client.1),
        ];
        poll::eventually("etcd to serve over TLS", DEADLINE, async || {
            let o = hearth_tests::server::etcdctl(
                &e.endpoint(),
                &[
                    &tls[0],
                    &tls[1],
                    &tls[2],
                    "endpoint",
                    "health",
                    "--command-timeout=3s",
                ],
                "",
            );
            o.status.success().then_some(()).ok_or_else(|| {
                format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&o.stderr),
                    std::fs::read_to_string(e.dir.path().join("etcd.log")).unwrap_or_default()
                )
            })
        })
        .await;
        e
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client)
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy dials a cluster that serves only TLS (Debian's etcd 3.4) with `--cacert`, for an
/// `https://` endpoint and for a bare `host:port` (TLS because a TLS flag is given, as
/// clientv3 decides), and fetches the cluster's `/metrics` over TLS too; with
/// `--insecure-skip-tls-verify` it dials without the CA; a cluster requiring client certificates
/// is reached with `--cert --key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_dials_a_tls_etcd_with_cacert() {
    let pki = pki();
    let etcd = TlsEtcd::start(&pki, false).await;
    let ca = flag("cacert", &pki.ca);
    let proxy = Proxy::start(&[etcd.endpoint()], &[&ca]).await;
    let mut c = proxy.client().await;
    let (mut w, _) = watch_created(&mut c, "k", None).await;
    let rev = put_revision(&mut c, "k", "v").await;
    let ev = next_message(&mut w).await;
    assert_eq!(ev.events()[0].kv().unwrap().mod_revision(), rev);
    assert_value(&proxy, "k", "v");
    let (code, body) = proxy.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("etcd_server_has_leader 1"), "{body}");
    drop(proxy);

    let bare = etcd.endpoint().trim_start_matches("https://").to_string();
    let proxy = Proxy::start(std::slice::from_ref(&bare), &[&ca]).await;
    assert_value(&proxy, "k", "v");
    drop(proxy);
    let proxy = Proxy::start(&[bare], &["--insecure-skip-tls-verify"]).await;
    assert_value(&proxy, "k", "v");
    drop(proxy);
    drop(etcd);

    let etcd = TlsEtcd::start(&pki, true).await;
    let proxy = Proxy::start(
        &[etcd.endpoint()],
        &[&ca, &flag("cert", &pki.no_cn.0), &flag("key", &pki.no_cn.1)],
    )
    .await;
    assert_eq!(out(&proxy.etcdctl(&["put", "k", "v2"])), "OK\n");
    assert_value(&proxy, "k", "v2");
}

/// `etcdctl user add` through the proxy, with the password on the command line.
fn add_user(proxy: &Proxy, user: &str, password: &str) {
    out(&proxy.etcdctl(&[
        "user",
        "add",
        user,
        &format!("--new-user-password={password}"),
        "--interactive=false",
    ]));
}

/// A client of the proxy authenticated as `user`.
async fn client_as(proxy: &Proxy, user: &str, password: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_user(user, password)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(20));
    etcd_client::Client::connect([proxy.endpoint()], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

/// With auth enabled on a Hearth member, each client's token travels through the proxy: a
/// user allowed to read `k` and one who is not both watch `k` through the proxy; the first is
/// sent its events, the second is refused (never joined to the first one's upstream watcher),
/// and a cached serializable read of `k` is not handed to the second either. Watchers of one
/// authenticated client share one upstream watcher. Lease keep-alives are checked per user too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_through_the_proxy_keeps_users_apart() {
    let member = Server::start(Kind::Hearth).await;
    let proxy = Proxy::start(&[member.endpoint()], &[]).await;
    add_user(&proxy, "root", "rootpw");
    out(&proxy.etcdctl(&["user", "grant-role", "root", "root"]));
    for (user, password, key) in [("alice", "alicepw", "k"), ("bob", "bobpw", "other")] {
        let role = format!("reads-{key}");
        add_user(&proxy, user, password);
        out(&proxy.etcdctl(&["role", "add", &role]));
        out(&proxy.etcdctl(&["role", "grant-permission", &role, "read", key]));
        out(&proxy.etcdctl(&["user", "grant-role", user, &role]));
    }
    out(&proxy.etcdctl(&["auth", "enable"]));
    let mut root = client_as(&proxy, "root", "rootpw").await;
    root.put("k", "v0", None).await.unwrap();
    let mut alice = client_as(&proxy, "alice", "alicepw").await;
    let mut bob = client_as(&proxy, "bob", "bobpw").await;

    let before = member
        .metric("etcd_debugging_mvcc_watcher_total")
        .unwrap_or(0.0);
    let mut alice_watches = Vec::new();
    for _ in 0..2 {
        let (s, r) = watch_created(&mut alice, "k", None).await;
        assert!(!r.canceled(), "{r:?}");
        alice_watches.push(s);
    }
    // Two streams of one authenticated client: one upstream watcher.
    poll::eventually("one upstream watcher for alice", DEADLINE, async || {
        member.metric("etcd_debugging_mvcc_watcher_total") == Some(before + 1.0)
    })
    .await;

    // Bob may not read k: his watcher is refused, not joined to alice's.
    let mut s = bob.watch("k", None).await.unwrap();
    let r = next_message(&mut s).await;
    assert!(r.canceled(), "bob's watch on k: {r:?}");
    assert!(
        r.cancel_reason().contains("permission denied"),
        "{}",
        r.cancel_reason()
    );
    let (mut bob_other, r) = watch_created(&mut bob, "other", None).await;
    assert!(!r.canceled(), "{r:?}");

    let rev = put_revision(&mut root, "k", "v1").await;
    root.put("other", "o", None).await.unwrap();
    for s in &mut alice_watches {
        let r = next_message(s).await;
        assert_eq!(r.events()[0].kv().unwrap().mod_revision(), rev);
        assert_eq!(r.events()[0].kv().unwrap().value(), b"v1");
    }
    // Bob's next event is the one on the key he may read.
    let r = next_message(&mut bob_other).await;
    assert_eq!(r.events()[0].kv().unwrap().key(), b"other");

    // Serializable reads: alice's answer is never served to bob.
    for _ in 0..2 {
        let r = serializable_get(&mut alice, "k").await.unwrap();
        assert_eq!(r.kvs()[0].value(), b"v1");
    }
    let err = serializable_get(&mut bob, "k")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("permission denied"), "{err}");
    let err = proxy.etcdctl(&["get", "k", "--consistency=s"]);
    failed(&err);

    // Keep-alives carry their client's token too: a lease with a key on it is renewed for root,
    // and refused to bob, who may not write that key (etcd 3.5's check), even while root's
    // keep-alives of it go on.
    let lease = root.lease_grant(60, None).await.unwrap().id();
    root.put("k", "leased", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (_keeper, _answers) = root.lease_keep_alive(lease).await.unwrap();
    let refused = bob.lease_keep_alive(lease).await.map(|_| ()).unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    let (_keeper, _answers) = root.lease_keep_alive(lease).await.unwrap();
}

/// Every new watcher through the proxy is checked by the cluster with its client's own
/// credentials, even on a range the proxy already watches for the same credentials (etcd's
/// `checkPermissionForWatch`): a tokenless watcher opened before auth was enabled does not let a
/// tokenless watcher in after it (and the refused one is sent no event), and a user whose read
/// permission was revoked cannot start a watch beside the one opened while it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_watchers_are_checked_on_ranges_already_watched() {
    let member = Server::start(Kind::Hearth).await;
    let proxy = Proxy::start(&[member.endpoint()], &[]).await;
    add_user(&proxy, "root", "rootpw");
    out(&proxy.etcdctl(&["user", "grant-role", "root", "root"]));
    add_user(&proxy, "alice", "alicepw");
    out(&proxy.etcdctl(&["role", "add", "reads-secret"]));
    out(&proxy.etcdctl(&["role", "grant-permission", "reads-secret", "read", "secret"]));
    out(&proxy.etcdctl(&["user", "grant-role", "alice", "reads-secret"]));

    // Before auth: a tokenless watcher on `secret`, kept open (the proxy keeps its upstream one).
    let mut early = proxy.client().await;
    let (mut early_watch, r) = watch_created(&mut early, "secret", None).await;
    assert!(!r.canceled(), "{r:?}");
    out(&proxy.etcdctl(&["auth", "enable"]));

    // After: a new tokenless watcher on the same key is refused as etcd's proxy refuses it.
    let mut late = proxy.client().await;
    let mut late_watch = late.watch("secret", None).await.unwrap();
    let r = next_message(&mut late_watch).await;
    assert!(
        r.created() && r.canceled(),
        "a tokenless watch after auth was enabled: {r:?}"
    );
    assert_eq!(r.cancel_reason(), "etcdserver: user name is empty");
    let mut root = client_as(&proxy, "root", "rootpw").await;
    let rev = put_revision(&mut root, "secret", "s1").await;
    // The early watcher (checked when auth was off) is sent the put; the refused stream is not:
    // its answer to a progress request comes next.
    let r = next_message(&mut early_watch).await;
    assert_eq!(r.events()[0].kv().unwrap().mod_revision(), rev);
    late_watch.request_progress().await.unwrap();
    let r = next_message(&mut late_watch).await;
    assert!(
        r.events().is_empty() && !r.created() && !r.canceled(),
        "the refused stream after the put: {r:?}"
    );

    // Alice watches `secret` while she may read it; once that is revoked, a new watch of hers
    // on it (same token, so the same group of upstream watchers) is refused.
    let mut alice = client_as(&proxy, "alice", "alicepw").await;
    let (_alice_first, r) = watch_created(&mut alice, "secret", None).await;
    assert!(!r.canceled(), "{r:?}");
    root.role_revoke_permission("reads-secret", "secret", None)
        .await
        .unwrap();
    let mut s = alice.watch("secret", None).await.unwrap();
    let r = next_message(&mut s).await;
    assert!(
        r.created() && r.canceled(),
        "alice's watch after her permission was revoked: {r:?}"
    );
    assert_eq!(r.cancel_reason(), "etcdserver: permission denied");
}

/// etcd's JSON gateway on the proxy's port: put, range and a watch stream with curl, through the
/// proxy's services (here with a namespace, which the gateway's calls get too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_through_the_proxy() {
    use tokio::io::AsyncBufReadExt as _;
    let member = Server::start(Kind::Hearth).await;
    let proxy = Proxy::start(&[member.endpoint()], &["--namespace=ns/"]).await;
    let mut watch = tokio::process::Command::from(proxy.curl_command(
        "/v3/watch",
        &[
            "--no-buffer",
            "-X",
            "POST",
            "--data-binary",
            r#"{"create_request":{"key":"aw=="}}"#,
        ],
    ))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut line = async || {
        tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a watch response from curl")
            .unwrap()
            .expect("curl's stream open")
    };
    let created = line().await;
    assert!(created.contains(r#""created":true"#), "{created}");
    let (code, body) = proxy.curl_post("/v3/kv/put", r#"{"key":"aw==","value":"dg=="}"#);
    assert_eq!(code, 200, "{body}");
    let event = line().await;
    assert!(
        event.contains(r#""key":"aw==""#) && event.contains(r#""value":"dg==""#),
        "{event}"
    );
    let (code, body) = proxy.curl_post("/v3/kv/range", r#"{"key":"aw=="}"#);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#""key":"aw==""#) && body.contains(r#""count":"1""#),
        "{body}"
    );
    // The member holds the key under the namespace.
    let mut direct = member.client().await;
    let r = direct.get("ns/k", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"v");
    let (code, _) = proxy.curl_post("/v3/kv/nonexistent", "{}");
    assert_eq!(code, 404);
}
