//! The member's side of authentication, as etcd's `EtcdServer` does it (`v3_server.go`,
//! `server.go`): the auth store opened at start-up, the caller's credentials resolved per request
//! (`AuthInfoFromCtx`), Authenticate, the other Auth requests through Raft, and the timer that
//! forgets expired simple tokens.
//!
//! # bcrypt off the Raft loop and off the runtime's workers
//!
//! A password check (Authenticate) or hash (UserAdd, UserChangePassword) costs tens of
//! milliseconds of CPU at the default cost. It runs here, before anything is proposed, on tokio's
//! blocking pool behind a semaphore sized to the machine's cores: a crowd of log-ins queues on the
//! semaphore (cheap, asynchronous) instead of occupying a runtime worker each or spawning a thread
//! each, and the Raft loop and the applier never see a password (the entry carries a hash, or for
//! Authenticate only the user name and the token prefix). etcd checks passwords on the gRPC
//! handler's goroutine, so a mass log-in there competes with every other request for the CPUs
//! without a bound; here the bound is the core count, and puts keep their workers.
//!
//! # Simple tokens
//!
//! A simple token is `<16 letters>.<index>`: every member registers it when it applies the
//! Authenticate entry at that index, so a token obtained through one member works on any member
//! once that member has applied the entry. A member asked about a token first waits (up to the
//! request timeout) until it has applied that index, as etcd's `indexWaiter` does. Each member
//! keeps a token alive from its own lookups only, so a token used on one member may expire on
//! another; etcd's clients re-authenticate on `invalid auth token` and retry.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use api::etcdserverpb::{
    AuthenticateRequest, AuthenticateResponse, InternalAuthenticateRequest, InternalRaftRequest,
};
use apply::auth::{AuthApplied, SharedAuth};
use apply::Applied;
use auth::{AuthError, AuthInfo, AuthStore, Now, TokenProvider};
use rpctypes::ServerError;
use tokio::sync::watch;
use v3rpc::Ctx;

use super::EtcdServer;
use crate::config::{AuthToken, Config};

/// How often expired simple tokens are forgotten (etcd's `simpleTokenTTLResolution`).
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// The time as the auth store takes it.
pub(crate) fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// How many bcrypt computations run at once: one per core.
pub(crate) fn bcrypt_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `--auth-token` as etcd's option string (the `auth` crate parses and checks it).
fn token_options(t: &AuthToken) -> String {
    match t {
        AuthToken::Simple => "simple".into(),
        AuthToken::Jwt {
            sign_method,
            pub_key,
            priv_key,
            ttl,
        } => {
            let mut s = format!("jwt,sign-method={sign_method},ttl={}ns", ttl.as_nanos());
            if let Some(p) = pub_key {
                s.push_str(&format!(",pub-key={}", p.display()));
            }
            if let Some(p) = priv_key {
                s.push_str(&format!(",priv-key={}", p.display()));
            }
            s
        }
    }
}

/// etcd's `NewAuthStore` at start-up: the token provider from `--auth-token` and
/// `--auth-token-ttl`, the store loaded from the backend (a new backend gets auth revision 1).
pub(crate) fn open(cfg: &Config, backend: &backend::Backend) -> Result<SharedAuth, AuthError> {
    let tokens = TokenProvider::from_options(&token_options(&cfg.auth_token), cfg.auth_token_ttl)?;
    let mut txn = backend.write()?;
    let store = AuthStore::open(&mut txn, tokens, cfg.bcrypt_cost)?;
    txn.commit()?;
    Ok(SharedAuth::new(store))
}

/// Forgets simple tokens unused for longer than their TTL, every second, until shutdown.
pub(crate) async fn purge_simple_tokens(srv: Arc<EtcdServer>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let purged = srv.auth.read().tokens().purge(now());
        if purged > 0 {
            tracing::debug!(purged, "deleted expired simple tokens");
        }
    }
}

impl EtcdServer {
    /// The auth store, for checks (never held across an `.await`).
    pub(crate) fn auth_store(&self) -> std::sync::RwLockReadGuard<'_, AuthStore> {
        self.auth.read()
    }

    /// Runs `f` (bcrypt) on the bounded blocking pool.
    async fn bcrypt<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServerError> {
        let _permit = self
            .bcrypt
            .acquire()
            .await
            .map_err(|_| ServerError::Stopped)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ServerError::Internal(format!("password hashing failed: {e}")))
    }

    /// etcd's `AuthInfoFromCtx`: see `v3rpc::AuthGetter::auth_info`.
    pub(crate) async fn auth_info(&self, cx: &Ctx) -> Result<Option<AuthInfo>, AuthError> {
        if cx.root {
            let store = self.auth.read();
            return Ok(store.is_enabled().then(|| store.root_auth_info()));
        }
        if let Some(token) = &cx.token {
            let index = {
                let store = self.auth.read();
                if !store.is_enabled() {
                    return Ok(None);
                }
                store.tokens().wait_index(token)?
            };
            if let Some(index) = index {
                let mut applied = self.applied.clone();
                let reached =
                    tokio::time::timeout(self.request_timeout, applied.wait_for(|a| *a >= index))
                        .await;
                if !matches!(reached, Ok(Ok(_))) {
                    return Err(AuthError::InvalidAuthToken);
                }
            }
            return self.auth.read().auth_info_from_token(token, now());
        }
        if self.cfg.client_tls.client_cert_auth {
            if let Some(cn) = &cx.common_name {
                return Ok(Some(self.auth.read().auth_info_from_common_name(cn)));
            }
        }
        Ok(None)
    }

    /// etcd 3.5's `requireAuthInfo`: with auth enabled, some valid credentials (`UserEmpty`
    /// otherwise); the credentials.
    pub(crate) async fn require_auth_info(
        &self,
        cx: &Ctx,
    ) -> Result<Option<AuthInfo>, ServerError> {
        if !self.auth.read().is_enabled() {
            return Ok(None);
        }
        let ai = self.auth_info(cx).await?;
        self.auth.read().require_auth_info(ai.as_ref())?;
        Ok(ai)
    }

    /// etcd's `Authenticate`: a linearizable read point, the password checked on the bcrypt pool
    /// against the hash read at auth revision `r`, then the token minted through Raft; if the
    /// auth store moved past `r` meanwhile (the password may have changed), again.
    pub(crate) async fn authenticate(
        &self,
        req: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, ServerError> {
        self.linearizable_read().await?;
        loop {
            let check = self
                .auth
                .read()
                .prepare_password_check(&req.name)
                .inspect_err(|e| {
                    if !matches!(e, AuthError::AuthNotEnabled) {
                        tracing::warn!(user = %req.name, "authentication failed: {e}");
                    }
                })?;
            let password = req.password.clone();
            let checked = self.bcrypt(move || check.verify(&password)).await??;
            let simple_token = self.auth.read().tokens().gen_token_prefix();
            let applied = self
                .propose(InternalRaftRequest {
                    authenticate: Some(InternalAuthenticateRequest {
                        name: req.name.clone(),
                        password: String::new(),
                        simple_token,
                    }),
                    ..Default::default()
                })
                .await?;
            let Applied::Auth(AuthApplied::Authenticate(resp)) = applied else {
                return Err(ServerError::Internal("unexpected apply result".into()));
            };
            if checked == self.auth.read().revision() {
                return Ok(resp);
            }
            tracing::info!("revision when password checked became stale; retrying");
        }
    }

    /// Any other Auth request, with the caller's credentials in the entry's header; a new
    /// password is hashed first, on the bcrypt pool (etcd 3.5's `UserAdd`, `UserChangePassword`).
    pub(crate) async fn auth_request(
        &self,
        cx: &Ctx,
        mut req: InternalRaftRequest,
    ) -> Result<AuthApplied, ServerError> {
        let ai = self.auth_info(cx).await?;
        let cost = self.auth.read().bcrypt_cost();
        if let Some(mut r) = req.auth_user_add.take() {
            req.auth_user_add = Some(
                self.bcrypt(move || auth::password::prepare_user_add(&mut r, cost).map(|()| r))
                    .await??,
            );
        }
        if let Some(mut r) = req.auth_user_change_password.take() {
            req.auth_user_change_password = Some(
                self.bcrypt(move || {
                    auth::password::prepare_user_change_password(&mut r, cost).map(|()| r)
                })
                .await??,
            );
        }
        match self.propose_as(ai.as_ref(), req).await? {
            Applied::Auth(a) => Ok(a),
            _ => Err(ServerError::Internal("unexpected apply result".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_flags_become_etcds_option_string() {
        let t = AuthToken::Jwt {
            sign_method: "RS256".into(),
            pub_key: Some("/k/a.pub".into()),
            priv_key: Some("/k/a.key".into()),
            ttl: Duration::from_secs(90),
        };
        assert_eq!(
            token_options(&t),
            "jwt,sign-method=RS256,ttl=90000000000ns,pub-key=/k/a.pub,priv-key=/k/a.key"
        );
        assert_eq!(token_options(&AuthToken::Simple), "simple");
    }
}
