//! A few Prometheus counters, kept as atomics (no registry needed for so few).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    responses: [AtomicU64; 5],
    sign_ins_succeeded: AtomicU64,
    sign_ins_failed: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_sign_in(&self, succeeded: bool) {
        let counter = if succeeded {
            &self.sign_ins_succeeded
        } else {
            &self.sign_ins_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with gauges passed in by the caller.
    pub fn render(&self, hash_slots: usize, hash_waiting: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP latchkey_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE latchkey_http_responses_total counter\n");
        for (i, counter) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "latchkey_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP latchkey_sign_ins_total Password sign-ins by outcome.\n");
        out.push_str("# TYPE latchkey_sign_ins_total counter\n");
        let _ = writeln!(
            out,
            "latchkey_sign_ins_total{{outcome=\"succeeded\"}} {}",
            self.sign_ins_succeeded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "latchkey_sign_ins_total{{outcome=\"failed\"}} {}",
            self.sign_ins_failed.load(Ordering::Relaxed)
        );
        out.push_str("# HELP latchkey_password_hash_slots Hashes that may run at once.\n");
        out.push_str("# TYPE latchkey_password_hash_slots gauge\n");
        let _ = writeln!(out, "latchkey_password_hash_slots {hash_slots}");
        out.push_str("# HELP latchkey_password_hash_waiting Hashes waiting for a slot.\n");
        out.push_str("# TYPE latchkey_password_hash_waiting gauge\n");
        let _ = writeln!(out, "latchkey_password_hash_waiting {hash_waiting}");
        out
    }
}
