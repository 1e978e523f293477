//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Everything the relay counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections open now (authenticated or not).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Data frames received from clients.
    pub frames_in: AtomicU64,
    /// Data frames delivered to clients.
    pub frames_out: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Payload bytes delivered.
    pub bytes_out: AtomicU64,
    /// Frames dropped: no route, peer offline, or not allowed.
    pub drops: AtomicU64,
    /// Failed authentications.
    pub auth_failures: AtomicU64,
    /// Connections closed for breaking a limit (size, rate, queue, idle).
    pub limit_closes: AtomicU64,
    /// Hosts' registrations taken (checked and newer than the last).
    pub registrations: AtomicU64,
    /// Knocks let through to an open pairing offer.
    pub knocks: AtomicU64,
    /// Data frames sent to other nodes of the cluster.
    pub cluster_frames_out: AtomicU64,
    /// Data frames other nodes of the cluster forwarded here.
    pub cluster_frames_in: AtomicU64,
    /// Connections to NATS made again after it was away.
    pub cluster_reconnects: AtomicU64,
    /// Keys connected at other nodes, as this node knows them now.
    pub cluster_presence: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, kind, value) in [
            ("relay_connections", "Connections open now.", "gauge", &self.connections),
            (
                "relay_connections_total",
                "Connections accepted.",
                "counter",
                &self.connections_total,
            ),
            ("relay_frames_in_total", "Data frames received.", "counter", &self.frames_in),
            ("relay_frames_out_total", "Data frames delivered.", "counter", &self.frames_out),
            ("relay_bytes_in_total", "Payload bytes received.", "counter", &self.bytes_in),
            ("relay_bytes_out_total", "Payload bytes delivered.", "counter", &self.bytes_out),
            (
                "relay_drops_total",
                "Frames dropped (no route, offline, not allowed).",
                "counter",
                &self.drops,
            ),
            (
                "relay_auth_failures_total",
                "Failed authentications.",
                "counter",
                &self.auth_failures,
            ),
            (
                "relay_limit_closes_total",
                "Connections closed for breaking a limit.",
                "counter",
                &self.limit_closes,
            ),
            (
                "relay_registrations_total",
                "Hosts' registrations taken.",
                "counter",
                &self.registrations,
            ),
            (
                "relay_knocks_total",
                "Knocks let through to an open pairing offer.",
                "counter",
                &self.knocks,
            ),
            (
                "relay_cluster_frames_out_total",
                "Data frames sent to other nodes of the cluster.",
                "counter",
                &self.cluster_frames_out,
            ),
            (
                "relay_cluster_frames_in_total",
                "Data frames other nodes of the cluster forwarded here.",
                "counter",
                &self.cluster_frames_in,
            ),
            (
                "relay_cluster_reconnects_total",
                "Connections to NATS made again after it was away.",
                "counter",
                &self.cluster_reconnects,
            ),
            (
                "relay_cluster_presence",
                "Keys connected at other nodes of the cluster.",
                "gauge",
                &self.cluster_presence,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        out
    }
}
