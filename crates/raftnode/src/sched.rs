//! The scheduling policy of the Raft loop and the apply thread.
//!
//! Both threads sleep until the request threads hand them work, and under Linux's default policy
//! a thread woken that way preempts the one that woke it. When all of a member's threads share
//! one saturated core (a member pinned to a core, or three members on one machine), every
//! proposal and every applied batch then costs two context switches: the request thread is
//! preempted as soon as it queues one request, the Raft loop handles that one request, and
//! the request thread resumes. Measured on one core with 1000 clients: 31,000 wake-ups of the
//! Raft loop and 23,000 preemptions of the request thread per 100,000 puts.
//!
//! `SCHED_BATCH` keeps the fair share of CPU time of the default policy but gives up wakeup
//! preemption: a woken Raft or apply thread waits for the running request thread to block or to
//! use up its slice. Meanwhile more requests queue, so each wake-up takes a larger batch (more
//! entries per WAL fsync, more results per hand-back).
//!
//! **Tradeoff.** On an idle core nothing changes: a woken thread runs at once, so the latency of
//! a lone request is the same. On a saturated core a batch may wait up to one scheduler slice
//! (a few milliseconds) longer before the Raft loop picks it up; that is far below the election
//! and heartbeat timeouts, and the queueing it replaces was longer. Measured on one core (same
//! binary, policy switched with `chrt -b` between runs): put with 1000 clients 9.6-10.1k to
//! 16.9-17.2k requests/s (p99 141-146 to 91-94 ms), with 100 clients 10.5-11.1k to 13.0-13.3k,
//! with one client unchanged. Only these two threads are affected; the request threads, the
//! watch thread and the peer transport keep the default policy.

/// Switches the calling thread to `SCHED_BATCH`. A failure (a kernel or sandbox that refuses
/// it) is logged and otherwise ignored: the thread keeps working under the default policy.
pub fn batch_this_thread(name: &str) {
    if let Err(e) = set_batch() {
        tracing::debug!(thread = name, "SCHED_BATCH not available: {e}");
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives the call; pid 0 names
    // the calling thread, and the call only changes that thread's scheduling policy.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "only Linux has SCHED_BATCH",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduling policy of the calling thread, from `/proc/thread-self/stat` (field 41).
    #[cfg(target_os = "linux")]
    fn own_policy() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields counted from the one after the parenthesised command name (field 3).
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(38).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_calling_thread_gets_sched_batch() {
        let batched = std::thread::spawn(|| {
            let before = own_policy();
            batch_this_thread("test");
            (before, own_policy())
        })
        .join()
        .unwrap();
        assert_eq!(batched, (libc::SCHED_OTHER, libc::SCHED_BATCH));
        assert_eq!(own_policy(), libc::SCHED_OTHER);
    }
}
