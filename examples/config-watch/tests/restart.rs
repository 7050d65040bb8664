//! Runs the `config-watch` binary against the real `hearth` binary, restarts the server in the
//! middle, and checks that every update under the prefix was applied exactly once, in order,
//! and that nothing outside the prefix was.

use std::process::{Command, Stdio};
use std::time::Duration;

use hearth_tests::ctl::Running;
use hearth_tests::{Kind, Server};

const DEADLINE: Duration = Duration::from_secs(60);
const PREFIX: &str = "app/";

/// What config-watch must print for one change.
fn line(rev: i64, key: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("applied {rev} set {key}={v}"),
        None => format!("applied {rev} removed {key}"),
    }
}

fn applied_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("applied "))
        .map(str::to_string)
        .collect()
}

/// Writes `n` changes under the prefix (puts and some deletes) plus noise outside it; returns
/// the lines config-watch must print for them.
async fn write_updates(c: &mut etcd_client::Client, from: usize, n: usize) -> Vec<String> {
    let mut want = Vec::new();
    for i in from..from + n {
        let key = format!("k{}", i % 5);
        if i % 7 == 6 {
            let r = c
                .delete(format!("{PREFIX}{key}"), None)
                .await
                .expect("delete");
            if r.deleted() > 0 {
                want.push(line(r.header().unwrap().revision(), &key, None));
            }
        } else {
            let value = format!("v{i}");
            let r = c
                .put(format!("{PREFIX}{key}"), value.clone(), None)
                .await
                .expect("put");
            want.push(line(r.header().unwrap().revision(), &key, Some(&value)));
        }
        if i.is_multiple_of(3) {
            c.put(format!("other/{i}"), "not for us", None)
                .await
                .expect("put outside the prefix");
        }
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_every_update_once_across_a_server_restart() {
    let mut server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    for (k, v) in [("k0", "initial"), ("k1", "initial"), ("k9", "kept")] {
        c.put(format!("{PREFIX}{k}"), v, None).await.expect("put");
    }

    let child = Command::new(env!("CARGO_BIN_EXE_config-watch"))
        .args(["--endpoints", &server.endpoint(), "--prefix", PREFIX])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start config-watch");
    let mut watcher = Running::new(child);
    assert!(
        watcher.wait_for(DEADLINE, |o| o.contains("loaded 3 keys")),
        "config-watch did not load: {}",
        watcher.stdout()
    );

    let mut want = write_updates(&mut c, 0, 20).await;
    let last = want.last().unwrap().clone();
    assert!(
        watcher.wait_for(DEADLINE, |o| o.contains(&last)),
        "config-watch did not apply the first updates: {}",
        watcher.stdout()
    );

    // Restart the server, and write more before config-watch has necessarily reconnected:
    // it must resume from the last revision it applied and get these from the history.
    server.restart().await;
    let mut c = server.client().await;
    want.extend(write_updates(&mut c, 20, 20).await);
    let last = want.last().unwrap().clone();
    let done = watcher.wait_for(DEADLINE, |o| o.contains(&last));
    let out = watcher.stop();
    assert!(
        done,
        "config-watch did not apply the updates after the restart: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("resumed from revision"),
        "config-watch never lost its stream: {}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("other/") && out.stdout.matches("loaded ").count() == 1,
        "{}",
        out.stdout
    );
    assert_eq!(
        applied_lines(&out.stdout),
        want,
        "every update exactly once, in order"
    );
}
