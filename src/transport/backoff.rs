//! Redial backoff, shared by the upstream pool and the mux dialer: exponential from `initial` up to
//! `max`, each delay jittered between half and all of the current step so that many redialling
//! connections do not come back in step, and back to `initial` after a success.

use std::time::Duration;

/// The delays between the attempts of one redial loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    /// A number in `[0, 1)`; drawn afresh for every delay.
    jitter: fn() -> f64,
}

impl Backoff {
    /// From `initial` (raised to `max` if larger, so the bound holds) doubling up to `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(initial, max, fastrand::f64)
    }

    fn with_jitter(initial: Duration, max: Duration, jitter: fn() -> f64) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            step: initial,
            jitter,
        }
    }

    /// The step the next delay is drawn from (what a log line calls `retry_in`).
    pub(crate) fn current(&self) -> Duration {
        self.step
    }

    /// The delay before the next attempt, between half and all of the current step; the step then
    /// doubles, up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self
            .step
            .mul_f64(0.5 + (self.jitter)().clamp(0.0, 1.0) * 0.5);
        self.step = self.step.saturating_mul(2).min(self.max);
        delay
    }

    /// After a success (a connection that stayed up, a link that came back): start from `initial`.
    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn delays(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn doubles_up_to_the_bound_and_resets() {
        // Jitter at its top: each delay is the whole step.
        let mut backoff = Backoff::with_jitter(100 * MS, 1000 * MS, || 1.0);
        assert_eq!(backoff.current(), 100 * MS);
        assert_eq!(
            delays(&mut backoff, 6),
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(backoff.current(), 1000 * MS);
        backoff.reset();
        assert_eq!(delays(&mut backoff, 2), [100 * MS, 200 * MS]);
    }

    #[test]
    fn jitter_spans_the_upper_half_of_the_step() {
        let mut low = Backoff::with_jitter(100 * MS, 400 * MS, || 0.0);
        assert_eq!(delays(&mut low, 4), [50 * MS, 100 * MS, 200 * MS, 200 * MS]);
        // A jitter source out of range cannot push a delay past the step.
        let mut wild = Backoff::with_jitter(100 * MS, 400 * MS, || 7.0);
        assert_eq!(delays(&mut wild, 2), [100 * MS, 200 * MS]);
    }

    #[test]
    fn real_jitter_stays_within_bounds() {
        let mut backoff = Backoff::new(10 * MS, 80 * MS);
        for _ in 0..1000 {
            let step = backoff.current();
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} of {step:?}");
            assert!(backoff.current() <= 80 * MS);
        }
    }

    #[test]
    fn an_initial_above_the_bound_is_held_to_it() {
        let mut backoff = Backoff::with_jitter(5000 * MS, 1000 * MS, || 1.0);
        assert_eq!(delays(&mut backoff, 2), [1000 * MS, 1000 * MS]);
    }
}
