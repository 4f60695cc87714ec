//! Background loops: mail delivery from the durable outbox, with retries.
//!
//! A mail is leased before it is sent, so several replicas can run this loop against one
//! database without sending twice. When SMTP is down, each attempt fails and is retried
//! with a doubling delay; nothing is lost, and mail whose content has expired (a reset
//! link past its lifetime) is dropped instead of being sent late.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::idm::ports::{Clock, MailQueue, MailTransport};

const BATCH: i64 = 20;
const LEASE_SECONDS: i64 = 60;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub poll_interval: Duration,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Seconds to wait after the `attempts`-th failure (at least one second).
    pub fn delay_seconds(&self, attempts: i64) -> i64 {
        let factor = 1_u32 << u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        i64::try_from(delay.as_millis().div_ceil(1000))
            .unwrap_or(1)
            .max(1)
    }
}

pub async fn run_mail_worker(
    queue: Arc<dyn MailQueue>,
    transport: Arc<dyn MailTransport>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let delivered_full_batch = deliver_due(&*queue, &*transport, &*clock, retry).await;
        if *shutdown.borrow() {
            return;
        }
        if delivered_full_batch {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(retry.poll_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass over the due mail; returns whether a full batch was handled.
async fn deliver_due(
    queue: &dyn MailQueue,
    transport: &dyn MailTransport,
    clock: &dyn Clock,
    retry: RetryPolicy,
) -> bool {
    let now = clock.now();
    match queue.drop_expired(now).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(dropped = n, "expired mail dropped undelivered"),
        Err(err) => tracing::warn!(error = %err, "mail outbox sweep failed"),
    }
    let batch = match queue.claim_due(now, BATCH, LEASE_SECONDS).await {
        Ok(batch) => batch,
        Err(err) => {
            tracing::warn!(error = %err, "mail outbox unavailable");
            return false;
        }
    };
    let full = i64::try_from(batch.len()).unwrap_or(0) >= BATCH;
    for queued in batch {
        match transport.deliver(&queued.mail).await {
            Ok(()) => {
                if let Err(err) = queue.mark_sent(&queued.id, clock.now()).await {
                    tracing::error!(mail = %queued.id, error = %err, "mail sent but not marked");
                }
                tracing::info!(mail = %queued.id, "mail delivered");
            }
            Err(err) => {
                let retry_at = clock.now() + retry.delay_seconds(queued.attempts);
                tracing::warn!(
                    mail = %queued.id,
                    attempts = queued.attempts + 1,
                    error = %err,
                    "mail delivery failed; will retry"
                );
                if let Err(err) = queue.mark_failed(&queued.id, retry_at, &err).await {
                    tracing::error!(mail = %queued.id, error = %err, "could not reschedule mail");
                }
            }
        }
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let retry = RetryPolicy {
            poll_interval: Duration::from_secs(1),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        assert_eq!(retry.delay_seconds(0), 1);
        assert_eq!(retry.delay_seconds(1), 2);
        assert_eq!(retry.delay_seconds(3), 8);
        assert_eq!(retry.delay_seconds(30), 300);
    }
}
