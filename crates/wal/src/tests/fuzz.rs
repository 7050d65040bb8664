//! The bounded run of the `wal` fuzz target, and the property that matters most for a log read back
//! after damage: it is an error, or it is what some prefix of the writes left, never other data.

use super::*;
use crate::fuzzing::{fuzz_wal, join, MAX_SEGMENTS};
use crate::read_log;

/// A multi-segment log of the usual workload (no releases, so it starts at the first write), and
/// the state after every prefix of its records, in write order.
fn log_and_prefix_states() -> (Vec<Vec<u8>>, Vec<Recovered>) {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    let mut model = Model::default();
    let mut states = vec![model.expected()];
    for op in workload_without_releases(14) {
        run(&mut wal, &op).unwrap();
        for r in records(&op) {
            model.apply(&r);
            states.push(model.expected());
        }
    }
    drop(wal);
    let mut paths = seg_paths(&fs);
    paths.sort();
    let segments: Vec<Vec<u8>> = paths.iter().map(|p| fs.read_file(p)).collect();
    assert!(
        (3..=MAX_SEGMENTS).contains(&segments.len()),
        "{} segments",
        segments.len()
    );
    (segments, states)
}

fn read(segments: &[Vec<u8>]) -> crate::Result<Recovered> {
    let log = read_log(
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| Ok((PathBuf::from(format!("{i}.wal")), s.clone()))),
    )?;
    Ok(Recovered {
        metadata: log.metadata,
        hard_state: log.hard_state,
        snapshot: log.snapshot,
        entries: log.entries,
        repaired_tail: None,
    })
}

#[test]
fn bounded_fuzz_of_wal() {
    let (segments, _) = log_and_prefix_states();
    let refs: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    let mut seeds = vec![join(&refs)];
    for k in 1..refs.len() {
        seeds.push(join(&refs[refs.len() - k..]));
        seeds.push(join(&refs[..k]));
    }
    let first = &segments[0];
    let spans = record_spans(first);
    seeds.push(first[spans[2].0..spans[2].1].to_vec());
    seeds.push(b"0000000000000001-00000000000000ff.wal".to_vec());
    fuzzcorpus::run(0x7761_6c00, &seeds, 3000, fuzz_wal);
}

#[test]
fn damage_is_an_error_or_a_prefix_of_the_writes() {
    let (segments, states) = log_and_prefix_states();
    assert_eq!(read(&segments).unwrap(), *states.last().unwrap());
    let mut m = fuzzcorpus::Mutator::new(0xda3a_6e00);
    let (mut errors, mut shorter) = (0, 0);
    for _ in 0..1500 {
        let mut damaged = segments.clone();
        let i = m.rng().usize(..damaged.len());
        let other = segments[m.rng().usize(..segments.len())].clone();
        damaged[i] = m.mutate(&damaged[i], &other);
        match read(&damaged) {
            Err(_) => errors += 1,
            Ok(r) => {
                let at = states.iter().position(|s| *s == r);
                assert!(
                    at.is_some(),
                    "segment {i} damaged, read back as data never written: {r:?}"
                );
                if at != Some(states.len() - 1) {
                    shorter += 1;
                }
                assert!(
                    i + 1 == segments.len() || at == Some(states.len() - 1),
                    "damage to sealed segment {i} shortened the log"
                );
            }
        }
    }
    // The property is only as good as the damage that reached it.
    assert!(
        errors > 500 && shorter > 50,
        "{errors} errors, {shorter} cut short"
    );
}
