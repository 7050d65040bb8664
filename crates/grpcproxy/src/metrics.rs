//! The proxy's own metrics under etcd's names (`server/proxy/grpcproxy/metrics.go`), served at
//! `/proxy/metrics`. Types are etcd's too: etcd declares the cache hit and miss totals as gauges,
//! and dashboards built on them expect that.
//!
//! Each proxy has its own registry (not the process-wide default one), so several proxies in one
//! process (tests) keep their figures apart.

use prometheus::{Counter, Gauge, Opts, Registry};

pub struct Metrics {
    registry: Registry,
    /// Client watchers served by an upstream watcher that also serves another client watcher.
    pub watchers_coalescing: Gauge,
    /// Responses delivered to more than one client watcher from one upstream response (one per
    /// extra receiver, as etcd counts).
    pub events_coalescing: Counter,
    pub cache_keys: Gauge,
    pub cache_hits: Gauge,
    pub cache_misses: Gauge,
    /// Hearth's own: client keep-alives answered by an upstream keep-alive sent for another client.
    pub keepalives_coalescing: Counter,
    /// Hearth's own: watchers on the cluster opened by this proxy.
    pub upstream_watchers: Gauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
        .namespace("etcd")
        .subsystem("grpc_proxy")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            watchers_coalescing: Gauge::with_opts(opts(
                "watchers_coalescing_total",
                "Total number of current watchers coalescing",
            ))
            .expect("valid metric"),
            events_coalescing: Counter::with_opts(opts(
                "events_coalescing_total",
                "Total number of events coalescing",
            ))
            .expect("valid metric"),
            cache_keys: Gauge::with_opts(opts("cache_keys_total", "Total number of keys/ranges cached"))
                .expect("valid metric"),
            cache_hits: Gauge::with_opts(opts("cache_hits_total", "Total number of cache hits"))
                .expect("valid metric"),
            cache_misses: Gauge::with_opts(opts("cache_misses_total", "Total number of cache misses"))
                .expect("valid metric"),
            keepalives_coalescing: Counter::with_opts(opts(
                "keepalives_coalescing_total",
                "Total number of lease keep-alives answered by an upstream keep-alive shared with another client",
            ))
            .expect("valid metric"),
            upstream_watchers: Gauge::with_opts(opts(
                "upstream_watchers",
                "Number of watchers this proxy holds on the cluster",
            ))
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.watchers_coalescing.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.events_coalescing.clone()),
            Box::new(m.cache_keys.clone()),
            Box::new(m.cache_hits.clone()),
            Box::new(m.cache_misses.clone()),
            Box::new(m.keepalives_coalescing.clone()),
            Box::new(m.upstream_watchers.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// The Prometheus text page.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
