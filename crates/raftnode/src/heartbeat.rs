//! What the leader's heartbeats tell about the member and its peers:
//! * `etcd_server_heartbeat_send_failures_total`, as etcd's `TimeoutDetector`: a heartbeat to a peer
//!   that leaves more than two heartbeat intervals after the previous one means the loop was held up
//!   (usually by a slow disk), which can cost the cluster its leader; it is counted and logged.
//! * `etcd_network_peer_round_trip_time_seconds{To}`: the time from a heartbeat to a peer to that
//!   peer's heartbeat response. etcd measures it with a prober on every member every few seconds;
//!   Hearth measures it on the leader, from the heartbeats it sends anyway (one probe in flight per
//!   peer), so followers export no round trips.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};

pub(crate) struct Heartbeats {
    /// Twice the heartbeat interval.
    max_gap: Duration,
    last_sent: HashMap<u64, Instant>,
    probes: HashMap<u64, Instant>,
}

impl Heartbeats {
    pub(crate) fn new(heartbeat: Duration) -> Heartbeats {
        Heartbeats {
            max_gap: heartbeat * 2,
            last_sent: HashMap::new(),
            probes: HashMap::new(),
        }
    }

    /// A new leader starts timing afresh (etcd resets its detector on becoming leader).
    pub(crate) fn reset(&mut self) {
        self.last_sent.clear();
        self.probes.clear();
    }

    pub(crate) fn sent(&mut self, msgs: &[Message], now: Instant) {
        for m in msgs {
            if m.get_msg_type() != MessageType::MsgHeartbeat {
                continue;
            }
            if let Some(last) = self.last_sent.insert(m.to, now) {
                let gap = now.saturating_duration_since(last);
                if gap > self.max_gap {
                    crate::metrics::HEARTBEAT_SEND_FAILURES.inc();
                    tracing::warn!(
                        to = format!("{:x}", m.to),
                        heartbeat_interval = ?self.max_gap / 2,
                        expected_duration = ?self.max_gap,
                        exceeded_duration = ?(gap - self.max_gap),
                        "leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk"
                    );
                }
            }
            self.probes.entry(m.to).or_insert(now);
        }
    }

    pub(crate) fn received(&mut self, m: &Message, now: Instant) {
        if m.get_msg_type() != MessageType::MsgHeartbeatResponse {
            return;
        }
        if let Some(sent) = self.probes.remove(&m.from) {
            rafthttp::metrics::PEER_RTT
                .with_label_values(&[&format!("{:x}", m.from)])
                .observe(now.saturating_duration_since(sent).as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = to;
        m
    }

    #[test]
    fn a_late_heartbeat_counts_once_and_a_reset_forgets() {
        let mut h = Heartbeats::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let before = crate::metrics::HEARTBEAT_SEND_FAILURES.get();
        h.sent(&[heartbeat(2)], t0);
        h.sent(&[heartbeat(2)], t0 + Duration::from_millis(150));
        assert_eq!(crate::metrics::HEARTBEAT_SEND_FAILURES.get(), before);
        h.sent(&[heartbeat(2)], t0 + Duration::from_millis(400));
        assert_eq!(crate::metrics::HEARTBEAT_SEND_FAILURES.get(), before + 1.0);
        h.reset();
        h.sent(&[heartbeat(2)], t0 + Duration::from_secs(10));
        assert_eq!(crate::metrics::HEARTBEAT_SEND_FAILURES.get(), before + 1.0);
    }

    #[test]
    fn a_response_observes_the_round_trip() {
        let mut h = Heartbeats::new(Duration::from_millis(100));
        let t0 = Instant::now();
        h.sent(&[heartbeat(7)], t0);
        let mut resp = Message::default();
        resp.set_msg_type(MessageType::MsgHeartbeatResponse);
        resp.from = 7;
        h.received(&resp, t0 + Duration::from_millis(3));
        let count = rafthttp::metrics::PEER_RTT
            .with_label_values(&["7"])
            .get_sample_count();
        assert_eq!(count, 1);
        h.received(&resp, t0 + Duration::from_millis(4));
        assert_eq!(
            rafthttp::metrics::PEER_RTT
                .with_label_values(&["7"])
                .get_sample_count(),
            1
        );
    }
}
