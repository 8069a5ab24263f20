//! A client's publish rate limit (`max_publish_rate` messages and
//! `max_publish_bytes_rate` payload bytes per second): a token bucket per
//! bound, holding one second's worth. A client over its rate is told so
//! and closed at MQTT 5 (DISCONNECT 0x97 Quota exceeded); a 3.x client,
//! which cannot be told, is slowed down: its input is not read until it is
//! back within its rate.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// One bound: `rate` per second, at most one second's worth saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Option<Bucket> {
        (rate > 0).then_some(Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        })
    }

    /// Takes `amount`; how long until the bucket is out of debt, if it is
    /// in debt now.
    fn take(&mut self, amount: f64, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - amount;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// A client's publish rate limit.
#[derive(Debug)]
pub struct Throttle {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    /// While set, the client's input is not read (3.x clients).
    pub resume_at: Option<Instant>,
}

impl Throttle {
    /// The limit `config` sets, if it sets one.
    pub fn new(config: &Config) -> Option<Throttle> {
        let now = Instant::now();
        let messages = Bucket::new(u64::from(config.max_publish_rate), now);
        let bytes = Bucket::new(config.max_publish_bytes_rate, now);
        (messages.is_some() || bytes.is_some()).then_some(Throttle {
            messages,
            bytes,
            resume_at: None,
        })
    }

    /// Charges one PUBLISH with `payload` bytes; how long the client is
    /// over its rate, if it is.
    pub fn charge(&mut self, payload: usize, now: Instant) -> Option<Duration> {
        let messages = self.messages.as_mut().and_then(|b| b.take(1.0, now));
        let bytes = self
            .bytes
            .as_mut()
            .and_then(|b| b.take(payload as f64, now));
        messages.max(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_and_says_how_long_past_it() {
        let now = Instant::now();
        let mut bucket = Bucket::new(10, now).unwrap();
        for _ in 0..10 {
            assert_eq!(bucket.take(1.0, now), None);
        }
        let wait = bucket.take(1.0, now).expect("over the rate");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Half a second later, five more are allowed... less the debt.
        let later = now + Duration::from_millis(500);
        for _ in 0..4 {
            assert_eq!(bucket.take(1.0, later), None);
        }
        assert!(bucket.take(1.0, later).is_some());
        assert!(Bucket::new(0, now).is_none());
    }
}
