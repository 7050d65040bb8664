//! `auth-storm`: puts from `--clients` authenticated clients while `--login-clients` other
//! clients log in at once, over and over, until the puts are done. Measures what a mass log-in
//! (bcrypt on every Authenticate) does to everyone else's writes: the put latency (its p99 is
//! the figure to compare) and, beside it, the log-ins' own latency.
//!
//! With `--setup`, first creates what it needs through the endpoints, without credentials:
//! `root` (with the root role) and `--user` (READWRITE on every key), both with `--password`,
//! then enables auth. Against a server that already has auth on, leave `--setup` out.

use crate::keys::{random_bytes, seed, KeySpace};
use crate::report::Recorder;
use crate::runner::{self, Load, Workload};
use crate::{Global, Outcome};
use anyhow::{Context, Result};
use clap::Args;
use etcd_client::{Client, ConnectOptions, Permission};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone, Serialize)]
pub struct AuthStormArgs {
    /// Key size of put request
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put request
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Total number of put requests
    #[arg(long, default_value_t = 20000)]
    pub total: u64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 100000)]
    pub key_space_size: u64,
    /// Clients logging in at once, each again as soon as its last log-in answered
    #[arg(long, default_value_t = 1000)]
    pub login_clients: u64,
    /// gRPC connections the logging-in clients share
    #[arg(long, default_value_t = 100)]
    pub login_conns: u64,
    /// The user everyone logs in as
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// Its password (and root's, with --setup)
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// Create root and the user and enable auth first
    #[arg(long)]
    pub setup: bool,
}

struct Put {
    keys: KeySpace,
    value: Vec<u8>,
}

impl Workload for Put {
    type Conn = etcd_client::KvClient;

    fn report_names(&self) -> Vec<String> {
        vec!["put during log-ins".into()]
    }

    async fn open(&self, client: Client) -> Result<etcd_client::KvClient> {
        Ok(client.kv_client())
    }

    async fn call(&self, kv: &mut etcd_client::KvClient, i: u64) -> (usize, Result<(), String>) {
        let r = kv.put(self.keys.key_for(i), self.value.clone(), None).await;
        (0, super::outcome(r))
    }
}

/// `root` and `user`, with `password`, and auth on.
async fn setup(g: &Global, a: &AuthStormArgs) -> Result<()> {
    let mut c = crate::client::connect_one(&g.endpoints, g.dial_timeout.get()).await?;
    let mut auth = c.auth_client();
    for name in ["root", a.user.as_str()] {
        auth.user_add(name, a.password.as_str(), None)
            .await
            .with_context(|| format!("adding user {name}"))?;
    }
    auth.user_grant_role("root", "root").await?;
    auth.role_add("bench-readwrite").await?;
    auth.role_grant_permission(
        "bench-readwrite",
        Permission::read_write(vec![0]).with_from_key(),
    )
    .await?;
    auth.user_grant_role(a.user.as_str(), "bench-readwrite")
        .await?;
    c.auth_enable().await.context("enabling auth")?;
    Ok(())
}

pub async fn run(g: &Global, a: &AuthStormArgs) -> Result<Outcome> {
    if a.setup {
        setup(g, a).await?;
    }
    let opts = || {
        let mut o = ConnectOptions::new().with_user(a.user.as_str(), a.password.as_str());
        if !g.dial_timeout.get().is_zero() {
            o = o.with_connect_timeout(g.dial_timeout.get());
        }
        o
    };
    // Put clients: their own connections, logged in once.
    let mut conns = Vec::new();
    for _ in 0..g.conns() {
        conns.push(
            Client::connect(&g.endpoints, Some(opts()))
                .await
                .context("connecting the put clients")?,
        );
    }
    let clients = (0..g.clients())
        .map(|i| conns[i % conns.len()].clone())
        .collect();
    // Log-in clients: plain connections, Authenticate in a loop.
    let login_conns =
        crate::client::connect(&g.endpoints, a.login_conns as usize, g.dial_timeout.get()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..a.login_clients as usize {
        let mut auth = login_conns[i % login_conns.len()].auth_client();
        let (stop, user, password) = (stop.clone(), a.user.clone(), a.password.clone());
        logins.spawn(async move {
            let mut rec = Recorder::new();
            while !stop.load(Ordering::Relaxed) {
                let st = Instant::now();
                match auth.authenticate(user.clone(), password.clone()).await {
                    Ok(_) => rec.record(st.elapsed()),
                    Err(e) => rec.record_error(crate::client::error_text(&e)),
                }
            }
            rec
        });
    }

    let seed = seed();
    let w = Put {
        keys: KeySpace::new(a.key_size, a.key_space_size, false, seed)?,
        value: random_bytes(seed, a.val_size),
    };
    let start = Instant::now();
    let load = Load {
        total: a.total,
        clients,
        limiter: None,
        bar: crate::progress::bar(a.total),
    };
    let puts = runner::run(Arc::new(w), load).await;
    stop.store(true, Ordering::Relaxed);
    let mut merged = Recorder::new();
    while let Some(r) = logins.join_next().await {
        merged.merge(&r.context("log-in task panicked")?);
    }
    let elapsed = start.elapsed();
    let mut sections: Vec<(Option<String>, crate::report::Report)> = puts?
        .into_iter()
        .map(|r| (Some("Puts while logging in:\n".to_string()), r))
        .collect();
    sections.push((
        Some("Log-ins meanwhile:\n".to_string()),
        merged.report("authenticate", elapsed),
    ));
    Ok(Outcome {
        preface: Vec::new(),
        sections,
    })
}
