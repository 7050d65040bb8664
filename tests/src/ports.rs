//! Loopback ports for test servers that nothing else can take before the server binds them.
//!
//! The usual trick, binding port 0 and closing the socket, leaves a window in which anything on
//! the machine may take the port before the server binds it: a test binary running in parallel
//! (`cargo nextest`, two CI jobs on one machine), or the kernel handing it out as the source port
//! of an outgoing connection. So a port is handed out only when all of these hold:
//!
//! - it comes from a fixed range just below the kernel's ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never picks a port by itself;
//! - this process holds an exclusive `flock` on `<tmp>/hearth-test-ports/<port>.lock`, kept for as
//!   long as the [`Port`] lives: a [`Server`](crate::Server) holds its ports for its whole life,
//!   restarts included, so every test process that reserves ports this way keeps off it. The
//!   kernel drops the lock when the process dies, so a crashed test leaks nothing;
//! - nothing listens on it now (a program that does not use these locks, say a cluster someone
//!   started by hand, is stepped around): the reservation binds it once before handing it out.
//!
//! Each process starts its scan at a random point of the range, so parallel test binaries rarely
//! try the same ports. What remains possible is a program outside the tests binding a fixed port
//! of the range after it was reserved; nothing short of a network namespace excludes that.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use rustix::fs::{flock, FlockOperation};

/// How many ports below the ephemeral range the tests use.
const SPAN: u16 = 10_000;

/// A loopback port reserved for this process until dropped.
#[derive(Debug)]
pub struct Port {
    number: u16,
    _lock: File,
}

impl Port {
    pub fn number(&self) -> u16 {
        self.number
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.number)
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number)
    }
}

/// One free port, reserved (see the module doc).
pub fn reserve() -> Port {
    let (lo, hi) = range();
    let span = usize::from(hi - lo) + 1;
    for _ in 0..span {
        let number = lo + (next() % span) as u16;
        if let Some(p) = try_reserve(number) {
            return p;
        }
    }
    panic!("no free loopback port in {lo}..={hi}: every one is reserved or in use");
}

/// `n` distinct free ports, reserved.
pub fn reserve_n(n: usize) -> Vec<Port> {
    (0..n).map(|_| reserve()).collect()
}

/// The range the tests take ports from: [`SPAN`] ports ending just below the ephemeral range.
fn range() -> (u16, u16) {
    static RANGE: OnceLock<(u16, u16)> = OnceLock::new();
    *RANGE.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|e| panic!("read the ephemeral port range: {e}"));
        let ephemeral_lo: u16 = text
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ip_local_port_range: {text:?}"));
        let hi = ephemeral_lo.saturating_sub(1);
        let lo = hi.saturating_sub(SPAN - 1).max(1024);
        assert!(
            lo < hi,
            "the ephemeral port range starts at {ephemeral_lo}: no room below it for test ports"
        );
        (lo, hi)
    })
}

/// The next candidate, counting from a random start (per process).
fn next() -> usize {
    static NEXT: OnceLock<AtomicUsize> = OnceLock::new();
    NEXT.get_or_init(|| AtomicUsize::new(fastrand::usize(..)))
        .fetch_add(1, Ordering::Relaxed)
}

fn lock_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("hearth-test-ports");
        // Shared by every user's tests on the machine, like /tmp itself.
        match std::fs::DirBuilder::new().mode(0o1777).create(&dir) {
            Ok(()) => {
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
        dir
    })
    .clone()
}

/// Reserves `number` if no other holder has it and nothing listens on it.
fn try_reserve(number: u16) -> Option<Port> {
    let path = lock_dir().join(format!("{number}.lock"));
    // Another user's lock file may not be writable to us; flock needs only an open file.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(&path)
        .or_else(|_| File::open(&path))
        .ok()?;
    flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
    TcpListener::bind(("127.0.0.1", number)).ok()?;
    Some(Port {
        number,
        _lock: file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let (lo, hi) = range();
        let ports = reserve_n(20);
        let mut numbers: Vec<u16> = ports.iter().map(Port::number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 20);
        assert!(numbers.iter().all(|n| (lo..=hi).contains(n)));
        // Held: nobody else (this process included) can reserve one of them again.
        assert!(ports.iter().all(|p| try_reserve(p.number()).is_none()));
        // Released on drop.
        let n = ports[0].number();
        drop(ports);
        assert!(try_reserve(n).is_some());
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let p = reserve();
        let n = p.number();
        // Something that takes no lock listens on it (bound while reserved, so nobody else
        // could take it first); once the lock is gone the port is still not handed out.
        let _listener = TcpListener::bind(("127.0.0.1", n)).expect("bind the reserved port");
        drop(p);
        assert!(try_reserve(n).is_none());
    }
}
