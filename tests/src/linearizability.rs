//! Checks a recorded history ([`crate::history`]) for linearizability, and a watcher's changes for
//! etcd's watch guarantees.
//!
//! # Method: the revision is the witness
//!
//! Every etcd response says at which revision it took effect (a write) or what revision it saw (a
//! read), and the watch stream lists every change with its revision. That is a candidate
//! linearization handed to us: all writes in revision order, each read right after the write of
//! its revision. Instead of searching for a linearization (Wing and Gong's algorithm, porcupine:
//! exponential in the worst case, and per key, blind to multi-key order) the checker verifies this
//! one, which takes O(n log n) for the whole key space:
//!
//! 1. **Watch**: revisions 2, 3, 4, ... each exactly once and in order (the traffic changes one key
//!    per revision), so nothing was skipped, repeated or reordered, including across resumes.
//! 2. **Attribution**: every change is the effect of one operation a client invoked (values are
//!    unique; a deletion goes to a delete of that key); no operation took effect twice; every
//!    acknowledged write took effect at the revision it was acknowledged with, and none that was
//!    reported as not applied (a failed compare) did. A failed write may or may not have taken
//!    effect; the history decides.
//! 3. **Results**: the changes are replayed into a model store; every read returns exactly the
//!    model's key at its revision, every `prev_kv` and every compare is judged against the model
//!    just before the write, and each change's create revision and version follow from the model.
//! 4. **Real time**: if operation A returned before B was invoked, A's place in the order is not
//!    after B's (for writes: revision strictly smaller). A failed write that took effect has no
//!    return time, so it only has to come after everything that returned before it was invoked.
//!
//! If all four hold, the order above is a linearization that respects real time and explains every
//! result, so the history is linearizable; the checker is sound. It is also complete for a correct
//! server, because a correct etcd assigns revisions in its linearization order.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use crate::history::{Change, Op, Record, Ret};
use crate::normalize::show_bytes;
use api::mvccpb::KeyValue;

/// What a successful check found.
#[derive(Debug, Default)]
pub struct Report {
    pub operations: usize,
    pub reads: usize,
    pub acknowledged_writes: usize,
    /// Writes that failed but took effect anyway (legal: their outcome was unknown).
    pub unknown_applied: usize,
    /// Writes that failed and never took effect.
    pub unknown_lost: usize,
    /// The revision of the last change.
    pub last_rev: i64,
    /// The keys at `last_rev`, as the history says they must be.
    pub final_state: BTreeMap<Vec<u8>, KeyValue>,
}

/// Collects the first few violations with enough context to debug them.
#[derive(Default)]
struct Violations(Vec<String>, usize);

impl Violations {
    fn add(&mut self, msg: String) {
        self.1 += 1;
        if self.0.len() < 20 {
            self.0.push(msg);
        }
    }
}

fn show(kv: Option<&KeyValue>) -> String {
    match kv {
        None => "absent".into(),
        Some(kv) => format!(
            "{}={} (create {}, mod {}, version {})",
            show_bytes(&kv.key),
            show_bytes(&kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
    }
}

fn show_rec(i: usize, r: &Record) -> String {
    let op = match &r.op {
        Op::Get { key } => format!("get {}", show_bytes(key)),
        Op::Put { key, value, .. } => format!("put {}={}", show_bytes(key), show_bytes(value)),
        Op::Delete { key } => format!("delete {}", show_bytes(key)),
        Op::Txn { key, expect, value } => format!(
            "txn if mod({})=={expect} put {}",
            show_bytes(key),
            show_bytes(value)
        ),
    };
    let out = match &r.outcome {
        Ok((t, ret)) => {
            let what = match ret {
                Ret::Get { rev, kv } => format!("revision {rev}, {}", show(kv.as_ref())),
                Ret::Put { rev, prev } => format!("revision {rev}, prev {}", show(prev.as_ref())),
                Ret::Delete { rev, deleted } => format!("revision {rev}, deleted {deleted}"),
                Ret::Txn { rev, succeeded, kv } => format!(
                    "revision {rev}, succeeded {succeeded}, read {}",
                    show(kv.as_ref())
                ),
            };
            format!("returned at {t:?}: {what}")
        }
        Err(e) => format!("failed: {e}"),
    };
    format!(
        "op #{i} (client {}) {op}, invoked at {:?}, {out}",
        r.client, r.invoked
    )
}

/// Checks `history` against `changes` (everything a watcher from revision 1 received). Returns a
/// report, or every violation found (the first 20 in full).
pub fn check(history: &[Record], changes: &[Change]) -> Result<Report, String> {
    let mut v = Violations::default();

    // 1. The watch: each revision once, in order, from 2.
    for (i, c) in changes.iter().enumerate() {
        let want = i as i64 + 2;
        if c.rev != want {
            v.add(format!(
                "watch: change #{i} has revision {} where revision {want} was due (skipped, repeated or reordered): {c:?}",
                c.rev
            ));
            break;
        }
    }
    let last_rev = changes.last().map_or(1, |c| c.rev);

    // 2. Attribution of every change to the operation that made it.
    let mut by_value: HashMap<&[u8], usize> = HashMap::new();
    for (i, r) in history.iter().enumerate() {
        if let Some(val) = r.op.value() {
            assert!(
                by_value.insert(val, i).is_none(),
                "the traffic wrote one value twice: {}",
                show_bytes(val)
            );
        }
    }
    let mut unknown_deletes: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut acked_deletes: HashMap<(&[u8], i64), usize> = HashMap::new();
    for (i, r) in history.iter().enumerate() {
        if let Op::Delete { key } = &r.op {
            match &r.outcome {
                Err(_) => unknown_deletes.entry(key).or_default().push(i),
                Ok((_, Ret::Delete { rev, deleted })) if *deleted > 0 => {
                    acked_deletes.insert((key.as_slice(), *rev), i);
                }
                Ok(_) => {}
            }
        }
    }
    // Unknown deletes in invocation order: the earliest one is the easiest to place in time.
    for list in unknown_deletes.values_mut() {
        list.sort_by_key(|&i| history[i].invoked);
        list.reverse();
    }
    let mut effect: Vec<Option<i64>> = vec![None; history.len()];
    for c in changes {
        let by = match &c.value {
            Some(val) => match by_value.get(val.as_slice()) {
                Some(&i) => i,
                None => {
                    v.add(format!(
                        "revision {}: {} was set to {}, which no client wrote",
                        c.rev,
                        show_bytes(&c.key),
                        show_bytes(val)
                    ));
                    continue;
                }
            },
            None => match acked_deletes.remove(&(c.key.as_slice(), c.rev)) {
                Some(i) => i,
                None => match unknown_deletes.get_mut(c.key.as_slice()).and_then(Vec::pop) {
                    Some(i) => i,
                    None => {
                        v.add(format!(
                            "revision {}: {} was deleted, but no client's delete explains it",
                            c.rev,
                            show_bytes(&c.key)
                        ));
                        continue;
                    }
                },
            },
        };
        if history[by].op.key() != c.key.as_slice() {
            v.add(format!(
                "revision {}: the change is on {}, but it comes from {}",
                c.rev,
                show_bytes(&c.key),
                show_rec(by, &history[by])
            ));
        }
        if let Some(prev) = effect[by].replace(c.rev) {
            v.add(format!(
                "{} took effect twice, at revisions {prev} and {}",
                show_rec(by, &history[by]),
                c.rev
            ));
        }
    }
    // Where each operation sits in the order: 2*rev for a change, 2*rev+1 for what only looked.
    let mut place: Vec<Option<i64>> = vec![None; history.len()];
    let mut report = Report {
        operations: history.len(),
        last_rev,
        ..Report::default()
    };
    for (i, r) in history.iter().enumerate() {
        let must_change = match &r.outcome {
            Err(_) => None,
            Ok((_, Ret::Put { .. })) => Some(true),
            Ok((_, Ret::Delete { deleted, .. })) => Some(*deleted > 0),
            Ok((_, Ret::Txn { succeeded, .. })) => Some(*succeeded),
            Ok((_, Ret::Get { .. })) => Some(false),
        };
        match (must_change, effect[i], &r.outcome) {
            (None, Some(rev), _) => {
                report.unknown_applied += 1;
                place[i] = Some(2 * rev);
            }
            (None, None, _) => {
                if r.op.is_write() {
                    report.unknown_lost += 1;
                }
            }
            (Some(true), Some(rev), Ok((_, ret))) => {
                report.acknowledged_writes += 1;
                if rev != ret.rev() {
                    v.add(format!("{} took effect at revision {rev}", show_rec(i, r)));
                }
                place[i] = Some(2 * rev);
            }
            (Some(true), None, _) => v.add(format!(
                "acknowledged write lost: {} is not in the history",
                show_rec(i, r)
            )),
            (Some(false), Some(rev), _) => v.add(format!(
                "{} reported no change, but it changed revision {rev}",
                show_rec(i, r)
            )),
            (Some(false), None, Ok((_, ret))) => {
                if r.op.is_write() {
                    report.acknowledged_writes += 1;
                } else {
                    report.reads += 1;
                }
                place[i] = Some(2 * ret.rev() + 1);
            }
            (Some(_), _, Err(_)) => unreachable!("must_change is None for failures"),
        }
    }

    // 3. Results against the model, in revision order.
    #[derive(Clone, Copy)]
    enum When {
        /// The state just before revision `rev` (for a write at `rev`).
        Before,
        /// The state at revision `rev`.
        At,
    }
    let mut checks: Vec<(i64, u8, usize, When)> = Vec::new();
    for (i, p) in place.iter().enumerate() {
        let Some(p) = *p else { continue };
        let rev = p / 2;
        if p % 2 == 0 {
            checks.push((rev - 1, 1, i, When::Before));
        } else {
            checks.push((rev, 1, i, When::At));
        }
        if rev > last_rev {
            v.add(format!(
                "{} is at revision {rev}, past the last change ({last_rev})",
                show_rec(i, &history[i])
            ));
        }
    }
    checks.sort_by_key(|c| (c.0, c.1, c.2));
    let mut model: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut next_change = 0usize;
    for (state_rev, _, i, when) in checks {
        while next_change < changes.len() && changes[next_change].rev <= state_rev {
            apply_change(&mut model, &changes[next_change], &mut v);
            next_change += 1;
        }
        let r = &history[i];
        let key = r.op.key();
        let current = model.get(key);
        let mod_rev = current.map_or(0, |kv| kv.mod_revision);
        let bad = match (&r.op, &r.outcome, when) {
            (Op::Get { .. }, Ok((_, Ret::Get { kv, .. })), When::At) => {
                (kv.as_ref() != current).then(|| format!("read {}", show(kv.as_ref())))
            }
            (Op::Put { prev_kv: true, .. }, Ok((_, Ret::Put { prev, .. })), When::Before) => {
                (prev.as_ref() != current).then(|| format!("prev_kv {}", show(prev.as_ref())))
            }
            (Op::Delete { .. }, Ok((_, Ret::Delete { deleted: 0, .. })), When::At) => current
                .is_some()
                .then(|| "deleted nothing, but the key was there".to_string()),
            (Op::Txn { expect, .. }, Ok((_, Ret::Txn { succeeded: false, kv, .. })), When::At) => {
                if mod_rev == *expect {
                    Some(format!(
                        "compare mod_revision == {expect} failed, but the key's mod_revision was {mod_rev}"
                    ))
                } else {
                    (kv.as_ref() != current).then(|| format!("read {}", show(kv.as_ref())))
                }
            }
            (Op::Txn { expect, .. }, _, When::Before) => (mod_rev != *expect).then(|| {
                format!(
                    "compare mod_revision == {expect} succeeded, but the key's mod_revision was {mod_rev}"
                )
            }),
            _ => None,
        };
        if let Some(what) = bad {
            let at = match when {
                When::Before => format!("just before revision {}", state_rev + 1),
                When::At => format!("at revision {state_rev}"),
            };
            v.add(format!(
                "{}: {what}; {at} the key was {}",
                show_rec(i, r),
                show(current)
            ));
        }
    }
    for c in &changes[next_change..] {
        apply_change(&mut model, c, &mut v);
    }
    report.final_state = model;

    // 4. Real time: whatever returned before an operation was invoked is not placed after it.
    let mut returned: Vec<(Duration, i64, usize)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match (&r.outcome, place[i]) {
            (Ok((t, _)), Some(p)) => Some((*t, p, i)),
            _ => None,
        })
        .collect();
    returned.sort();
    let mut invoked: Vec<(Duration, usize)> = (0..history.len())
        .filter(|&i| place[i].is_some())
        .map(|i| (history[i].invoked, i))
        .collect();
    invoked.sort();
    let mut latest: Option<(i64, usize)> = None;
    let mut j = 0;
    for (t, i) in invoked {
        while j < returned.len() && returned[j].0 < t {
            if latest.is_none_or(|(p, _)| returned[j].1 > p) {
                latest = Some((returned[j].1, returned[j].2));
            }
            j += 1;
        }
        let p = place[i].expect("filtered");
        if let Some((lp, li)) = latest {
            if lp > p {
                v.add(format!(
                    "real-time order violated: {} is ordered at revision {}, but {} returned before it was invoked and is at revision {}",
                    show_rec(i, &history[i]),
                    p / 2,
                    show_rec(li, &history[li]),
                    lp / 2
                ));
            }
        }
    }

    if v.0.is_empty() {
        Ok(report)
    } else {
        let mut s = format!("{} violations; the first ones:\n", v.1);
        for m in &v.0 {
            let _ = writeln!(s, "  - {m}");
        }
        Err(s)
    }
}

fn apply_change(model: &mut BTreeMap<Vec<u8>, KeyValue>, c: &Change, v: &mut Violations) {
    let prev = model.get(&c.key);
    match &c.value {
        Some(value) => {
            let (create, version) = match prev {
                Some(p) => (p.create_revision, p.version + 1),
                None => (c.rev, 1),
            };
            if (c.create_revision, c.version) != (create, version) {
                v.add(format!(
                    "revision {}: put {} reports create revision {} and version {}, the history gives {create} and {version}",
                    c.rev,
                    show_bytes(&c.key),
                    c.create_revision,
                    c.version
                ));
            }
            model.insert(
                c.key.clone(),
                KeyValue {
                    key: c.key.clone(),
                    create_revision: create,
                    mod_revision: c.rev,
                    version,
                    value: value.clone(),
                    lease: 0,
                },
            );
        }
        None => {
            if model.remove(&c.key).is_none() {
                v.add(format!(
                    "revision {}: {} was deleted while absent",
                    c.rev,
                    show_bytes(&c.key)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"k";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rec(op: Op, invoked: u64, ret: Option<(u64, Ret)>) -> Record {
        Record {
            client: 0,
            op,
            invoked: ms(invoked),
            outcome: ret.map(|(t, r)| (ms(t), r)).ok_or_else(|| "timeout".into()),
        }
    }

    fn put(v: &str) -> Op {
        Op::Put {
            key: K.to_vec(),
            value: v.into(),
            prev_kv: true,
        }
    }

    fn get() -> Op {
        Op::Get { key: K.to_vec() }
    }

    fn kv(v: &str, create: i64, m: i64, version: i64) -> KeyValue {
        KeyValue {
            key: K.to_vec(),
            value: v.into(),
            create_revision: create,
            mod_revision: m,
            version,
            lease: 0,
        }
    }

    fn set(rev: i64, v: &str, create: i64, version: i64) -> Change {
        Change {
            rev,
            key: K.to_vec(),
            value: Some(v.into()),
            create_revision: create,
            version,
        }
    }

    fn del(rev: i64) -> Change {
        Change {
            rev,
            key: K.to_vec(),
            value: None,
            create_revision: 0,
            version: 0,
        }
    }

    /// put a@2, put b@3 (acked), a get that saw b, a delete@4 that timed out but happened.
    fn good() -> (Vec<Record>, Vec<Change>) {
        let history = vec![
            rec(put("a"), 0, Some((10, Ret::Put { rev: 2, prev: None }))),
            rec(
                put("b"),
                11,
                Some((
                    20,
                    Ret::Put {
                        rev: 3,
                        prev: Some(kv("a", 2, 2, 1)),
                    },
                )),
            ),
            rec(
                get(),
                15,
                Some((
                    25,
                    Ret::Get {
                        rev: 3,
                        kv: Some(kv("b", 2, 3, 2)),
                    },
                )),
            ),
            rec(Op::Delete { key: K.to_vec() }, 30, None),
            rec(
                Op::Txn {
                    key: K.to_vec(),
                    expect: 0,
                    value: "c".into(),
                },
                50,
                Some((
                    60,
                    Ret::Txn {
                        rev: 5,
                        succeeded: true,
                        kv: None,
                    },
                )),
            ),
        ];
        let changes = vec![
            set(2, "a", 2, 1),
            set(3, "b", 2, 2),
            del(4),
            set(5, "c", 5, 1),
        ];
        (history, changes)
    }

    #[test]
    fn a_linearizable_history_passes() {
        let (h, c) = good();
        let r = check(&h, &c).unwrap();
        assert_eq!(
            (
                r.reads,
                r.acknowledged_writes,
                r.unknown_applied,
                r.last_rev
            ),
            (1, 3, 1, 5)
        );
        assert_eq!(r.final_state.get(K), Some(&kv("c", 5, 5, 1)));
    }

    fn fails(h: &[Record], c: &[Change], what: &str) {
        match check(h, c) {
            Ok(_) => panic!("expected a violation ({what})"),
            Err(e) => assert!(e.contains(what), "expected {what:?} in:\n{e}"),
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_found() {
        let (h, mut c) = good();
        c.truncate(1);
        fails(&h, &c, "acknowledged write lost");
    }

    #[test]
    fn a_stale_read_is_found() {
        let (mut h, c) = good();
        // The read returns after put b was acknowledged... but reports a.
        h[2].outcome = Ok((
            ms(25),
            Ret::Get {
                rev: 2,
                kv: Some(kv("a", 2, 2, 1)),
            },
        ));
        h[2].invoked = ms(21);
        fails(&h, &c, "real-time order violated");
        // A read whose value does not match its own revision.
        h[2].outcome = Ok((
            ms(25),
            Ret::Get {
                rev: 3,
                kv: Some(kv("a", 2, 2, 1)),
            },
        ));
        fails(&h, &c, "read \"k\"=\"a\"");
    }

    #[test]
    fn watch_gaps_duplicates_and_foreign_values_are_found() {
        let (h, c) = good();
        let mut gap = c.clone();
        gap.remove(1);
        fails(&h, &gap, "where revision 3 was due");
        let mut dup = c.clone();
        dup.insert(2, c[1].clone());
        fails(&h, &dup, "where revision 4 was due");
        let mut foreign = c.clone();
        foreign[3].value = Some(b"zzz".to_vec());
        fails(&h, &foreign, "which no client wrote");
    }

    #[test]
    fn wrong_prev_kv_and_versions_are_found() {
        let (mut h, c) = good();
        h[1].outcome = Ok((ms(20), Ret::Put { rev: 3, prev: None }));
        fails(&h, &c, "prev_kv absent");
        let (h, mut c) = good();
        c[1].version = 1;
        fails(&h, &c, "version 1");
    }

    #[test]
    fn a_write_applied_twice_or_before_invocation_is_found() {
        let (h, mut c) = good();
        c.push(set(6, "b", 2, 3));
        fails(&h, &c, "took effect twice");
        // The unknown delete cannot have happened before it was invoked.
        let (mut h, c) = good();
        h[3].invoked = ms(70);
        fails(&h, &c, "real-time order violated");
    }

    #[test]
    fn a_wrong_compare_outcome_is_found() {
        let (mut h, c) = good();
        h.push(rec(
            Op::Txn {
                key: K.to_vec(),
                expect: 5,
                value: "d".into(),
            },
            70,
            Some((
                80,
                Ret::Txn {
                    rev: 5,
                    succeeded: false,
                    kv: Some(kv("c", 5, 5, 1)),
                },
            )),
        ));
        fails(&h, &c, "compare mod_revision == 5 failed");
    }
}
