//! `config-watch --endpoints URL[,URL...] --prefix PREFIX`: loads the configuration under
//! PREFIX, prints it, then prints each change as it is applied (one line each, in revision
//! order), surviving server restarts. See the crate's library for how.

#![forbid(unsafe_code)]

use anyhow::{bail, Context as _};
use config_watch::{follow, Change, Config, Sink};

/// Prints what happens, one line per event, for people and for the end-to-end test.
struct Print;

impl Sink for Print {
    fn loaded(&mut self, config: &Config) {
        println!(
            "loaded {} keys at revision {}",
            config.values.len(),
            config.rev
        );
        for (k, v) in &config.values {
            println!("  {k}={v}");
        }
    }

    fn applied(&mut self, change: &Change, _config: &Config) {
        match change {
            Change::Set { rev, key, value } => println!("applied {rev} set {key}={value}"),
            Change::Removed { rev, key } => println!("applied {rev} removed {key}"),
        }
    }

    fn resumed(&mut self, from_rev: i64) {
        println!("resumed from revision {from_rev}");
    }
}

fn main() -> anyhow::Result<()> {
    let mut endpoints = vec!["http://127.0.0.1:2379".to_string()];
    let mut prefix = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--endpoints" => {
                let v = args.next().context("--endpoints needs a value")?;
                endpoints = v.split(',').map(str::to_string).collect();
            }
            "--prefix" => prefix = Some(args.next().context("--prefix needs a value")?),
            other => bail!("unknown argument {other:?}; usage: config-watch [--endpoints URL,...] --prefix PREFIX"),
        }
    }
    let prefix = prefix.context("--prefix is required")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async { follow(&endpoints, &prefix, &mut Print).await })
}
