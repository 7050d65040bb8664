//! A service's live configuration, kept in Hearth (or etcd) under a key prefix.
//!
//! [`follow`] loads every key under the prefix with one range read, then watches the prefix
//! from the revision after that read, applying each change as it comes. When the connection
//! breaks (the server restarts, the network drops), it reconnects and watches again from the
//! revision after the last change it applied: the server replays what happened meanwhile, so
//! no change is missed and none is applied twice. Only if that history was compacted away in
//! the meantime does it read the whole prefix again (the configuration is then right, though
//! the intermediate changes were not seen one by one).
//!
//! Every change applied is reported to a [`Sink`], in revision order.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};

/// One change to the configuration, at the store revision that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Set {
        rev: i64,
        key: String,
        value: String,
    },
    Removed {
        rev: i64,
        key: String,
    },
}

impl Change {
    pub fn rev(&self) -> i64 {
        match self {
            Change::Set { rev, .. } | Change::Removed { rev, .. } => *rev,
        }
    }
}

/// The configuration: key (without the prefix) to value, and the revision it reflects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub values: BTreeMap<String, String>,
    /// Every change up to and including this revision has been applied.
    pub rev: i64,
}

impl Config {
    /// Applies one change; changes must come in revision order.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Set { key, value, .. } => {
                self.values.insert(key.clone(), value.clone());
            }
            Change::Removed { key, .. } => {
                self.values.remove(key);
            }
        }
        self.rev = self.rev.max(change.rev());
    }
}

/// What the service does with its configuration.
pub trait Sink {
    /// The whole configuration was (re)loaded.
    fn loaded(&mut self, config: &Config);
    /// One change was applied; `config` already includes it.
    fn applied(&mut self, change: &Change, config: &Config);
    /// The watch was re-established after a disconnect, from `from_rev` on.
    fn resumed(&mut self, from_rev: i64);
}

/// How long to wait between attempts to reach the server.
const RETRY: Duration = Duration::from_millis(200);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn connect(endpoints: &[String]) -> Client {
    loop {
        match Client::connect(endpoints, None).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// Reads the whole prefix (retrying until the server answers).
async fn load(client: &mut Client, prefix: &str) -> Config {
    loop {
        match client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
        {
            Ok(r) => {
                let values = r
                    .kvs()
                    .iter()
                    .map(|kv| (text(&kv.key()[prefix.len()..]), text(kv.value())))
                    .collect();
                let rev = r.header().map_or(0, |h| h.revision());
                return Config { values, rev };
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// Loads the configuration under `prefix` and follows it forever (see the module doc).
pub async fn follow(endpoints: &[String], prefix: &str, sink: &mut dyn Sink) -> ! {
    let mut client = connect(endpoints).await;
    let mut config = load(&mut client, prefix).await;
    sink.loaded(&config);
    let mut first = true;
    loop {
        let from = config.rev + 1;
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = match client.watch(prefix, Some(opts)).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if !first {
            sink.resumed(from);
        }
        first = false;
        // Until the stream breaks.
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    // The history since `config.rev` is gone: read everything again.
                    config = load(&mut client, prefix).await;
                    sink.loaded(&config);
                }
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = text(&kv.key()[prefix.len().min(kv.key().len())..]);
                let change = match ev.event_type() {
                    EventType::Put => Change::Set {
                        rev: kv.mod_revision(),
                        key,
                        value: text(kv.value()),
                    },
                    EventType::Delete => Change::Removed {
                        rev: kv.mod_revision(),
                        key,
                    },
                };
                config.apply(&change);
                sink.applied(&change, &config);
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_in_order() {
        let mut c = Config::default();
        c.apply(&Change::Set {
            rev: 2,
            key: "a".into(),
            value: "1".into(),
        });
        c.apply(&Change::Set {
            rev: 3,
            key: "b".into(),
            value: "2".into(),
        });
        c.apply(&Change::Removed {
            rev: 4,
            key: "a".into(),
        });
        assert_eq!(c.rev, 4);
        assert_eq!(
            c.values,
            BTreeMap::from([("b".to_string(), "2".to_string())])
        );
    }
}
