//! Budgets for messages held whole. A message that must be edited is gathered into one buffer
//! before it is walked, so a client that declares large messages and sends them slowly could make
//! the proxy hold any amount of memory. Each such message is therefore charged its declared length,
//! at its prefix and before a byte of it is stored, to two budgets: its client connection's
//! (`connection_gather_bytes`) and the whole process's (`[limits] gather_bytes`). A message that does
//! not fit fails its call with RESOURCE_EXHAUSTED; other calls go on. The charge is a drop guard, so
//! it is given back however the message or the call ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::Gauge;

use crate::metrics::GatherMetrics;

/// Bytes that may be held at once by the messages charged to it.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
    /// The config key that sets `limit`, for error messages.
    key: Arc<str>,
}

impl Budget {
    pub(crate) fn new(limit: u64, key: impl Into<Arc<str>>) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            key: key.into(),
        }
    }

    /// Takes `n` bytes if they fit; never lets `used` pass `limit`, even under contention.
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Why a message could not be gathered. Both become RESOURCE_EXHAUSTED; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GatherError {
    #[error(
        "a {len}-byte message must be held whole to be edited, and that is over the limit of \
         {limit} bytes for such messages ({key})"
    )]
    TooLarge { len: u32, limit: u32, key: Arc<str> },
    #[error(
        "a {len}-byte message must be held whole to be edited, and that would exceed the {scope} \
         budget for such messages ({key} = {limit} bytes); retry later or raise {key}"
    )]
    OverBudget {
        len: u32,
        limit: u64,
        key: Arc<str>,
        scope: Scope,
    },
}

/// Which budget refused (the `reason` label of `strait_gather_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Connection,
    Process,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Connection => "per-connection",
            Scope::Process => "process-wide",
        })
    }
}

/// What one direction of one call gathers against: the limit on one message and both budgets.
pub(crate) struct Gather {
    pub(crate) max_message: u32,
    pub(crate) max_message_key: Arc<str>,
    pub(crate) connection: Arc<Budget>,
    pub(crate) process: Arc<Budget>,
    pub(crate) metrics: GatherMetrics,
}

impl Gather {
    /// Charges a message of `len` bytes to both budgets, or says which refused.
    pub(crate) fn reserve(&self, len: u32) -> Result<Reservation, GatherError> {
        if len > self.max_message {
            return Err(GatherError::TooLarge {
                len,
                limit: self.max_message,
                key: Arc::clone(&self.max_message_key),
            });
        }
        let n = u64::from(len);
        let refused = |budget: &Budget, scope: Scope| {
            match scope {
                Scope::Connection => self.metrics.refused_connection.increment(1),
                Scope::Process => self.metrics.refused_process.increment(1),
            }
            GatherError::OverBudget {
                len,
                limit: budget.limit,
                key: Arc::clone(&budget.key),
                scope,
            }
        };
        if !self.connection.take(n) {
            return Err(refused(&self.connection, Scope::Connection));
        }
        if !self.process.take(n) {
            self.connection.give_back(n);
            return Err(refused(&self.process, Scope::Process));
        }
        self.metrics.held.increment(n as f64);
        Ok(Reservation {
            bytes: n,
            connection: Arc::clone(&self.connection),
            process: Arc::clone(&self.process),
            held: self.metrics.held.clone(),
        })
    }
}

/// Bytes charged to both budgets for one message; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    bytes: u64,
    connection: Arc<Budget>,
    process: Arc<Budget>,
    held: Gauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.connection.give_back(self.bytes);
        self.process.give_back(self.bytes);
        self.held.decrement(self.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn gather(connection: &Arc<Budget>, process: &Arc<Budget>, max_message: u32) -> Gather {
        Gather {
            max_message,
            max_message_key: Arc::from("listener.limits.max_edited_request_bytes"),
            connection: Arc::clone(connection),
            process: Arc::clone(process),
            metrics: GatherMetrics {
                held: Gauge::noop(),
                refused_connection: metrics::Counter::noop(),
                refused_process: metrics::Counter::noop(),
            },
        }
    }

    #[test]
    fn a_message_is_charged_to_both_budgets_until_its_reservation_drops() {
        let connection = Arc::new(Budget::new(100, "listener.limits.connection_gather_bytes"));
        let process = Arc::new(Budget::new(150, "limits.gather_bytes"));
        let g = gather(&connection, &process, 1000);
        let a = g.reserve(60).unwrap();
        assert_eq!((connection.used(), process.used()), (60, 60));
        // Over the connection's budget: refused, and nothing is left charged to the process.
        let err = g.reserve(41).unwrap_err();
        assert!(
            matches!(
                &err,
                GatherError::OverBudget {
                    scope: Scope::Connection,
                    limit: 100,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .contains("listener.limits.connection_gather_bytes = 100"));
        assert_eq!((connection.used(), process.used()), (60, 60));
        let b = g.reserve(40).unwrap();
        assert_eq!(connection.used(), 100);
        drop(a);
        drop(b);
        assert_eq!((connection.used(), process.used()), (0, 0));
    }

    #[test]
    fn the_process_budget_is_shared_by_connections() {
        let process = Arc::new(Budget::new(100, "limits.gather_bytes"));
        let one = Arc::new(Budget::new(80, "c"));
        let two = Arc::new(Budget::new(80, "c"));
        let _a = gather(&one, &process, 1000).reserve(70).unwrap();
        let err = gather(&two, &process, 1000).reserve(40).unwrap_err();
        assert!(
            matches!(
                &err,
                GatherError::OverBudget {
                    scope: Scope::Process,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("limits.gather_bytes = 100"),
            "{err}"
        );
        // The refused connection's own charge was given back.
        assert_eq!((one.used(), two.used(), process.used()), (70, 0, 70));
        let _b = gather(&two, &process, 1000).reserve(30).unwrap();
        assert_eq!(process.used(), 100);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_any_budget_is_charged() {
        let connection = Arc::new(Budget::new(1 << 30, "c"));
        let process = Arc::new(Budget::new(1 << 30, "p"));
        let err = gather(&connection, &process, 4096)
            .reserve(4097)
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "4096 bytes for such messages (listener.limits.max_edited_request_bytes)"
            ),
            "{err}"
        );
        assert_eq!(connection.used(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_budget() {
        let connection = Arc::new(Budget::new(1000, "c"));
        let process = Arc::new(Budget::new(1000, "p"));
        let g = Arc::new(gather(&connection, &process, 1000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let g = Arc::clone(&g);
                let connection = Arc::clone(&connection);
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Ok(r) = g.reserve(300) {
                            assert!(connection.used() <= 1000);
                            drop(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((connection.used(), process.used()), (0, 0));
    }
}
