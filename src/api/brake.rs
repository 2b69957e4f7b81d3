//! A brake on guessing tokens: an address that sends PROCTOR_BAD_CREDENTIALS_PER_MINUTE
//! bad credentials within [`WINDOW`] is refused (429 with `Retry-After`) for a while, each
//! refusal in a row twice as long as the one before, up to [`LONGEST_BLOCK`]. While an
//! address is blocked, no credential from it is even looked at, right or wrong, so the
//! answers tell a guesser nothing.
//!
//! The count is per replica: behind a load balancer a guesser gets at most that many
//! tries per replica per window. Memory is bounded ([`MAX_ADDRESSES`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
/// The first block lasts a window; each block in a row doubles, up to this.
pub const LONGEST_BLOCK: Duration = Duration::from_secs(3600);
/// Addresses remembered at most; past it, the ones not blocked are forgotten.
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// Blocks in a row (reset by a window without one).
    strikes: u32,
}

#[derive(Debug)]
pub struct Brake {
    /// Bad credentials an address may send within a [`WINDOW`]; 0: no brake.
    allowed: u32,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl Brake {
    pub fn new(allowed: u32) -> Self {
        Self {
            allowed,
            entries: Mutex::default(),
        }
    }

    /// `Err(seconds)` while `address` is blocked: how long until it may try again.
    pub fn check(&self, address: IpAddr) -> Result<(), u64> {
        self.check_at(address, Instant::now())
    }

    /// Counts a bad credential from `address`; `Some(seconds)` when this one blocks it.
    pub fn failed(&self, address: IpAddr) -> Option<u64> {
        self.failed_at(address, Instant::now())
    }

    fn check_at(&self, address: IpAddr, now: Instant) -> Result<(), u64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&address).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(seconds_until(until, now)),
            _ => Ok(()),
        }
    }

    fn failed_at(&self, address: IpAddr, now: Instant) -> Option<u64> {
        if self.allowed == 0 {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ADDRESSES && !entries.contains_key(&address) {
            entries.retain(|_, e| e.blocked_until.is_some_and(|until| until > now));
        }
        let entry = entries.entry(address).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
            strikes: 0,
        });
        if now.duration_since(entry.window_start) >= WINDOW {
            let blocked_lately = entry
                .blocked_until
                .is_some_and(|until| now.duration_since(until) < WINDOW);
            if !blocked_lately {
                entry.strikes = 0;
            }
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures < self.allowed {
            return None;
        }
        entry.strikes = (entry.strikes + 1).min(16);
        let block = WINDOW
            .saturating_mul(1 << (entry.strikes - 1))
            .min(LONGEST_BLOCK);
        let until = now + block;
        entry.blocked_until = Some(until);
        entry.window_start = until;
        entry.failures = 0;
        Some(seconds_until(until, now))
    }
}

fn seconds_until(until: Instant, now: Instant) -> u64 {
    until.duration_since(now).as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILURES_ALLOWED: u32 = 10;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn an_address_is_blocked_after_too_many_failures_and_only_that_address() {
        let brake = Brake::new(FAILURES_ALLOWED);
        let start = Instant::now();
        for i in 1..FAILURES_ALLOWED {
            assert_eq!(brake.failed_at(address(1), start), None, "failure {i}");
            assert_eq!(brake.check_at(address(1), start), Ok(()));
        }
        assert_eq!(brake.failed_at(address(1), start), Some(60));
        assert_eq!(brake.check_at(address(1), start), Err(60));
        assert_eq!(
            brake.check_at(address(1), start + Duration::from_secs(59)),
            Err(1)
        );
        assert_eq!(brake.check_at(address(2), start), Ok(()), "others pass");
        assert_eq!(
            brake.check_at(address(1), start + Duration::from_secs(60)),
            Ok(())
        );
    }

    #[test]
    fn blocks_in_a_row_double_up_to_an_hour_and_a_quiet_window_forgives() {
        let brake = Brake::new(FAILURES_ALLOWED);
        let mut now = Instant::now();
        let mut blocks = Vec::new();
        for _ in 0..8 {
            let mut blocked = None;
            for _ in 0..FAILURES_ALLOWED {
                blocked = brake.failed_at(address(1), now);
            }
            let seconds = blocked.expect("the last failure blocks");
            blocks.push(seconds);
            now += Duration::from_secs(seconds);
        }
        assert_eq!(blocks, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        // A window and more with no failure: the next block is a short one again.
        now += WINDOW * 2;
        let mut blocked = None;
        for _ in 0..FAILURES_ALLOWED {
            blocked = brake.failed_at(address(1), now);
        }
        assert_eq!(blocked, Some(60));
    }

    #[test]
    fn a_limit_of_zero_turns_the_brake_off() {
        let brake = Brake::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(brake.failed_at(address(1), now), None);
        }
        assert_eq!(brake.check_at(address(1), now), Ok(()));
    }

    #[test]
    fn failures_spread_over_windows_never_block() {
        let brake = Brake::new(FAILURES_ALLOWED);
        let mut now = Instant::now();
        for _ in 0..5 {
            for _ in 1..FAILURES_ALLOWED {
                assert_eq!(brake.failed_at(address(1), now), None);
            }
            now += WINDOW;
        }
    }
}
