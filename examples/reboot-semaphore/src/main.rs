//! One machine of the fleet: takes a slot of the reboot semaphore, "reboots" (sleeps), gives the
//! slot back, as many rounds as asked. See the library's doc for the design.
//!
//! With `--log FILE`, it appends `acquire <machine> <slot>` once it holds a slot and
//! `release <machine> <slot>` just before giving it back, each line in one append-mode write,
//! so the lines of all machines form one ordered history (the test checks it).

#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use reboot_semaphore::Semaphore;

#[derive(Parser)]
#[command(about = "Reboot with at most --slots machines down at once")]
struct Args {
    /// etcd v3 endpoints (Hearth or etcd), comma separated.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The semaphore's name (key prefix).
    #[arg(long, default_value = "reboot")]
    name: String,
    /// How many machines may reboot at once.
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// This machine's name.
    #[arg(long)]
    machine: String,
    /// Lease TTL in seconds: how long a dead holder keeps its slot.
    #[arg(long, default_value_t = 5)]
    ttl: i64,
    /// How long a "reboot" takes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reboot_ms: u64,
    /// How many times to reboot.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Append the acquire/release history to this file.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
}

fn record(log: &Option<std::path::PathBuf>, line: &str) -> Result<()> {
    println!("{line}");
    if let Some(path) = log {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        f.write_all(format!("{line}\n").as_bytes())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = etcd_client::Client::connect(&args.endpoints, None)
        .await
        .context("connect")?;
    let sem = Semaphore::new(client, &args.name, args.slots, args.ttl);
    for _ in 0..args.rounds {
        let permit = sem.acquire().await?;
        let slot = permit.slot();
        record(&args.log, &format!("acquire {} {slot}", args.machine))?;
        tokio::time::sleep(Duration::from_millis(args.reboot_ms)).await;
        if permit.lost() {
            anyhow::bail!("{}: lost the lease while rebooting", args.machine);
        }
        record(&args.log, &format!("release {} {slot}", args.machine))?;
        permit.release().await?;
    }
    Ok(())
}
