//! Latency statistics and the report, in the layout of etcd's benchmark tool.
//!
//! A [`Recorder`] collects one workload task's latencies (an HDR histogram in nanoseconds, plus
//! exact count/min/max/mean/stddev) and its errors; recorders are merged at the end and turned
//! into a [`Report`], which prints either as etcd's text (Summary, Response time histogram,
//! Latency distribution, Error distribution) or as JSON. Everything here is pure: no clocks,
//! no I/O.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The percentiles etcd's report prints.
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];
/// Linear buckets between fastest and slowest (plus one for the slowest), as in etcd.
pub const HISTOGRAM_BUCKETS: usize = 10;
const BAR_WIDTH: u64 = 40;
const BAR_CHAR: char = '∎';
/// Largest latency the histogram tracks (longer ones are recorded as this): one hour.
const MAX_TRACKED_NS: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits of the HDR histogram: percentiles are within 0.1%.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Running count, mean and variance (Welford), mergeable across recorders.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Combines two sets of samples (Chan et al.'s parallel update).
    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n as f64 / n as f64;
        self.m2 += o.m2 + d * d * (self.n as f64 * o.n as f64) / n as f64;
        self.n = n;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.mean
        }
    }

    /// Population standard deviation, as etcd computes it.
    pub fn stddev(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2 / self.n as f64).max(0.0).sqrt()
        }
    }
}

/// Latencies and errors of one task (or, merged, of a whole run) for one report.
#[derive(Clone, Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    moments: Moments,
    min_ns: u64,
    max_ns: u64,
    errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            hist: Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGNIFICANT_DIGITS)
                .expect("valid histogram bounds"),
            moments: Moments::default(),
            min_ns: u64::MAX,
            max_ns: 0,
            errors: BTreeMap::new(),
        }
    }

    /// One successful request that took `d`.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos())
            .unwrap_or(u64::MAX)
            .min(MAX_TRACKED_NS);
        self.hist.saturating_record(ns);
        self.moments.push(ns as f64 / 1e9);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// One failed request; errors are counted by message.
    pub fn record_error(&mut self, msg: impl Into<String>) {
        self.record_errors(msg, 1);
    }

    /// `n` failed requests with the same message.
    pub fn record_errors(&mut self, msg: impl Into<String>, n: u64) {
        if n > 0 {
            *self.errors.entry(msg.into()).or_insert(0) += n;
        }
    }

    pub fn merge(&mut self, o: &Recorder) {
        self.hist
            .add(&o.hist)
            .expect("histograms with the same bounds");
        self.moments.merge(&o.moments);
        self.min_ns = self.min_ns.min(o.min_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Successful requests.
    pub fn count(&self) -> u64 {
        self.moments.count()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report of everything recorded, for a run that took `total` (wall clock).
    pub fn report(&self, name: &str, total: Duration) -> Report {
        let count = self.count();
        let total_secs = total.as_secs_f64();
        let mut error_distribution: Vec<ErrorCount> = self
            .errors
            .iter()
            .map(|(e, c)| ErrorCount {
                error: e.clone(),
                count: *c,
            })
            .collect();
        error_distribution.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        let mut r = Report {
            name: name.to_string(),
            count,
            errors: self.error_count(),
            total_secs,
            slowest_secs: 0.0,
            fastest_secs: 0.0,
            average_secs: 0.0,
            stddev_secs: 0.0,
            requests_per_sec: if total_secs > 0.0 {
                count as f64 / total_secs
            } else {
                0.0
            },
            histogram: Vec::new(),
            percentiles: Vec::new(),
            error_distribution,
        };
        if count == 0 {
            return r;
        }
        r.fastest_secs = secs(self.min_ns);
        r.slowest_secs = secs(self.max_ns);
        r.average_secs = self.moments.mean();
        r.stddev_secs = self.moments.stddev();
        r.histogram = self.buckets();
        r.percentiles = PERCENTILES
            .iter()
            .map(|&p| Percentile {
                percentile: p,
                secs: secs(
                    self.hist
                        .value_at_quantile(p / 100.0)
                        .clamp(self.min_ns, self.max_ns),
                ),
            })
            .collect();
        r
    }

    /// etcd's response time histogram: bucket `i` holds the latencies in
    /// `(bound[i-1], bound[i]]`, bounds spaced evenly from fastest to slowest. Each HDR bucket
    /// is placed by its lowest equivalent value (so the fastest request lands in the first
    /// bucket), clamped to the exact fastest/slowest.
    fn buckets(&self) -> Vec<Bucket> {
        let (lo, hi) = (self.min_ns, self.max_ns);
        let width = (hi - lo) as f64 / HISTOGRAM_BUCKETS as f64;
        let mut bounds: Vec<f64> = (0..HISTOGRAM_BUCKETS)
            .map(|i| lo as f64 + width * i as f64)
            .collect();
        bounds.push(hi as f64);
        let mut counts = vec![0u64; bounds.len()];
        for v in self.hist.iter_recorded() {
            let value = self
                .hist
                .lowest_equivalent(v.value_iterated_to())
                .clamp(lo, hi) as f64;
            let i = bounds
                .iter()
                .position(|&b| value <= b)
                .unwrap_or(bounds.len() - 1);
            counts[i] += v.count_at_value();
        }
        bounds
            .into_iter()
            .zip(counts)
            .map(|(b, count)| Bucket {
                upper_secs: b / 1e9,
                count,
            })
            .collect()
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One histogram bucket: requests whose latency is at most `upper_secs` (and above the
/// previous bucket's bound).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub upper_secs: f64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentile {
    pub percentile: f64,
    pub secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

/// The statistics of one measured operation; `--json` prints these fields as they are.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub name: String,
    /// Successful requests (the ones the latency figures are about).
    pub count: u64,
    /// Failed requests (see `error_distribution`).
    pub errors: u64,
    pub total_secs: f64,
    pub slowest_secs: f64,
    pub fastest_secs: f64,
    pub average_secs: f64,
    pub stddev_secs: f64,
    /// Successful requests per second of `total_secs`.
    pub requests_per_sec: f64,
    pub histogram: Vec<Bucket>,
    pub percentiles: Vec<Percentile>,
    pub error_distribution: Vec<ErrorCount>,
}

impl Report {
    /// etcd's text report. `precise` prints full floating point precision (etcd's
    /// `--precise`), otherwise four decimals.
    pub fn to_text(&self, precise: bool) -> String {
        let f = |x: f64| {
            if precise {
                format!("{x}")
            } else {
                format!("{x:.4}")
            }
        };
        let mut s = String::new();
        if self.count > 0 {
            s.push_str("\nSummary:\n");
            let _ = writeln!(s, "  Total:\t{} secs.", f(self.total_secs));
            let _ = writeln!(s, "  Slowest:\t{} secs.", f(self.slowest_secs));
            let _ = writeln!(s, "  Fastest:\t{} secs.", f(self.fastest_secs));
            let _ = writeln!(s, "  Average:\t{} secs.", f(self.average_secs));
            let _ = writeln!(s, "  Stddev:\t{} secs.", f(self.stddev_secs));
            let _ = writeln!(s, "  Requests/sec:\t{}", f(self.requests_per_sec));

            s.push_str("\nResponse time histogram:\n");
            let max = self.histogram.iter().map(|b| b.count).max().unwrap_or(0);
            for b in &self.histogram {
                let bar = (b.count * BAR_WIDTH).checked_div(max).unwrap_or(0) as usize;
                let _ = writeln!(
                    s,
                    "  {} [{}]\t|{}",
                    f(b.upper_secs),
                    b.count,
                    BAR_CHAR.to_string().repeat(bar)
                );
            }

            s.push_str("\nLatency distribution:\n");
            for p in &self.percentiles {
                if p.secs > 0.0 {
                    let ms = p.secs * 1000.0;
                    let ms = if precise {
                        format!("{ms}")
                    } else {
                        format!("{ms:.3}")
                    };
                    let _ = writeln!(s, "  {}% in {ms} ms.", p.percentile);
                }
            }
        } else {
            s.push_str("\nSummary:\n");
            let _ = writeln!(s, "  Total:\t{} secs.", f(self.total_secs));
            s.push_str("  No successful requests.\n");
        }
        if !self.error_distribution.is_empty() {
            s.push_str("\nError distribution:\n");
            for e in &self.error_distribution {
                let _ = writeln!(s, "  [{}]\t{}", e.count, e.error);
            }
        }
        s
    }
}

/// What `--json` prints: the command, its options, and its reports in order.
#[derive(Debug, Serialize)]
pub struct Output<G: Serialize, O: Serialize> {
    pub command: String,
    pub global: G,
    pub options: O,
    pub reports: Vec<Report>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn recorder(ms_values: impl IntoIterator<Item = u64>) -> Recorder {
        let mut r = Recorder::new();
        for v in ms_values {
            r.record(ms(v));
        }
        r
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    #[test]
    fn moments_match_direct_computation_and_merge() {
        let xs = [1.0, 2.0, 3.0, 4.0, 10.0];
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.push(x));
        assert_eq!(m.count(), 5);
        assert!(close(m.mean(), 4.0, 1e-12));
        // population variance: (9 + 4 + 1 + 0 + 36) / 5 = 10
        assert!(close(m.stddev(), 10f64.sqrt(), 1e-12));

        let (mut a, mut b) = (Moments::default(), Moments::default());
        xs[..2].iter().for_each(|&x| a.push(x));
        xs[2..].iter().for_each(|&x| b.push(x));
        a.merge(&b);
        assert_eq!(a.count(), 5);
        assert!(close(a.mean(), m.mean(), 1e-12));
        assert!(close(a.stddev(), m.stddev(), 1e-12));

        let mut empty = Moments::default();
        empty.merge(&m);
        assert_eq!(empty, m);
        assert_eq!(Moments::default().stddev(), 0.0);
    }

    #[test]
    fn summary_figures() {
        let r = recorder(1..=100).report("put", Duration::from_secs(2));
        assert_eq!(r.name, "put");
        assert_eq!(r.count, 100);
        assert_eq!(r.errors, 0);
        assert_eq!(r.fastest_secs, 0.001);
        assert_eq!(r.slowest_secs, 0.100);
        assert!(close(r.average_secs, 0.0505, 1e-9));
        // population stddev of 1..=100 is sqrt((100^2 - 1) / 12)
        assert!(close(
            r.stddev_secs,
            (9999.0f64 / 12.0).sqrt() / 1000.0,
            1e-9
        ));
        assert!(close(r.requests_per_sec, 50.0, 1e-12));
        assert!(r.error_distribution.is_empty());
    }

    #[test]
    fn percentiles_are_within_hdr_precision() {
        let r = recorder(1..=1000).report("range", Duration::from_secs(1));
        let got: Vec<f64> = r.percentiles.iter().map(|p| p.percentile).collect();
        assert_eq!(got, PERCENTILES.to_vec());
        let expect = [0.100, 0.250, 0.500, 0.750, 0.900, 0.950, 0.990, 0.999];
        // Within the histogram's 0.1%, give or take one sample (1 ms) for the rank convention.
        for (p, e) in r.percentiles.iter().zip(expect) {
            assert!(
                (p.secs - e).abs() <= e * 1e-3 + 0.001,
                "p{} = {} (want {e})",
                p.percentile,
                p.secs
            );
        }
    }

    #[test]
    fn percentiles_never_leave_the_exact_range() {
        let r = recorder([7, 7, 7]).report("x", Duration::from_secs(1));
        for p in &r.percentiles {
            assert_eq!(p.secs, 0.007);
        }
        assert_eq!(r.fastest_secs, 0.007);
        assert_eq!(r.slowest_secs, 0.007);
    }

    #[test]
    fn histogram_buckets_are_linear_from_fastest_to_slowest() {
        // 10 ms .. 110 ms: bounds every 10 ms; the fastest alone in bucket 0.
        let r = recorder((10..=110).step_by(10)).report("x", Duration::from_secs(1));
        assert_eq!(r.histogram.len(), HISTOGRAM_BUCKETS + 1);
        let bounds: Vec<f64> = r.histogram.iter().map(|b| b.upper_secs).collect();
        for (i, b) in bounds.iter().enumerate() {
            assert!(close(*b, 0.010 + 0.010 * i as f64, 1e-9), "bound {i} = {b}");
        }
        let counts: Vec<u64> = r.histogram.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![1; 11]);
    }

    #[test]
    fn histogram_counts_add_up_and_skewed_data_lands_low() {
        let mut values: Vec<u64> = vec![1; 90];
        values.extend([100; 10]);
        let r = recorder(values).report("x", Duration::from_secs(1));
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 100);
        assert_eq!(r.histogram[0].count, 90);
        assert_eq!(r.histogram[HISTOGRAM_BUCKETS].count, 10);
        assert_eq!(r.histogram[HISTOGRAM_BUCKETS].upper_secs, 0.100);
    }

    #[test]
    fn histogram_of_identical_latencies_has_one_full_bucket() {
        let r = recorder([5; 20]).report("x", Duration::from_secs(1));
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 20);
        assert_eq!(r.histogram[0].count, 20);
    }

    #[test]
    fn merge_combines_latencies_and_errors() {
        let mut a = recorder([1, 2]);
        a.record_error("boom");
        let mut b = recorder([3]);
        b.record_error("boom");
        b.record_errors("bang", 3);
        b.record_errors("never", 0);
        a.merge(&b);
        let r = a.report("x", Duration::from_secs(1));
        assert_eq!(r.count, 3);
        assert_eq!(r.errors, 5);
        assert_eq!(r.fastest_secs, 0.001);
        assert_eq!(r.slowest_secs, 0.003);
        assert_eq!(
            r.error_distribution,
            vec![
                ErrorCount {
                    error: "bang".into(),
                    count: 3
                },
                ErrorCount {
                    error: "boom".into(),
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn all_failed_report_has_no_latency_figures() {
        let mut rec = Recorder::new();
        rec.record_errors("rpc error: code = Unimplemented desc = unknown service", 4);
        let r = rec.report("lease-keepalive", Duration::from_millis(500));
        assert_eq!((r.count, r.errors), (0, 4));
        assert!(r.histogram.is_empty() && r.percentiles.is_empty());
        assert_eq!(r.requests_per_sec, 0.0);
        let text = r.to_text(false);
        assert!(text.contains("No successful requests."), "{text}");
        assert!(text.contains(
            "Error distribution:\n  [4]\trpc error: code = Unimplemented desc = unknown service\n"
        ));
        assert!(!text.contains("Latency distribution"));
    }

    #[test]
    fn text_has_etcds_layout() {
        let mut rec = recorder(1..=10);
        rec.record_error("etcdserver: request timed out");
        let text = rec.report("put", Duration::from_secs(1)).to_text(false);
        let expected_start = "\nSummary:\n  Total:\t1.0000 secs.\n  Slowest:\t0.0100 secs.\n  \
             Fastest:\t0.0010 secs.\n  Average:\t0.0055 secs.\n  Stddev:\t0.0029 secs.\n  \
             Requests/sec:\t10.0000\n\nResponse time histogram:\n  0.0010 [1]\t|";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(text.contains(&format!("  0.0100 [1]\t|{}\n", "∎".repeat(40))));
        assert!(text.contains("\nLatency distribution:\n  10% in 1.000 ms.\n"));
        assert!(text.contains("  99.9% in 10.000 ms.\n"), "{text}");
        assert!(text.ends_with("\nError distribution:\n  [1]\tetcdserver: request timed out\n"));
    }

    #[test]
    fn precise_prints_full_precision() {
        let text = recorder([1, 2])
            .report("x", Duration::from_millis(1500))
            .to_text(true);
        assert!(text.contains("  Total:\t1.5 secs.\n"), "{text}");
        assert!(text.contains("  Fastest:\t0.001 secs.\n"), "{text}");
        assert!(
            text.contains("  Requests/sec:\t1.3333333333333333\n"),
            "{text}"
        );
    }

    #[test]
    fn json_shape() {
        let mut rec = recorder([1, 2, 3]);
        rec.record_error("boom");
        let out = Output {
            command: "put".into(),
            global: serde_json::json!({"clients": 4}),
            options: serde_json::json!({"total": 4}),
            reports: vec![rec.report("put", Duration::from_secs(1))],
        };
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["command"], "put");
        assert_eq!(v["global"]["clients"], 4);
        assert_eq!(v["options"]["total"], 4);
        let r = &v["reports"][0];
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "average_secs",
                "count",
                "error_distribution",
                "errors",
                "fastest_secs",
                "histogram",
                "name",
                "percentiles",
                "requests_per_sec",
                "slowest_secs",
                "stddev_secs",
                "total_secs",
            ]
        );
        assert_eq!(r["name"], "put");
        assert_eq!(r["count"], 3);
        assert_eq!(r["errors"], 1);
        assert_eq!(r["histogram"].as_array().unwrap().len(), 11);
        assert_eq!(r["histogram"][0]["upper_secs"], 0.001);
        assert_eq!(r["percentiles"][7]["percentile"], 99.9);
        assert!(r["percentiles"][2]["secs"].is_f64());
        assert_eq!(r["error_distribution"][0]["error"], "boom");
        assert_eq!(r["error_distribution"][0]["count"], 1);
    }
}
