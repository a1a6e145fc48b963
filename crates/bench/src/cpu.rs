//! The load generator's own CPU time.
//!
//! Client and servers share one small machine, so every published number
//! comes with what the client itself burned: user + system time of this
//! process (all threads) from `getrusage`, over the measured wall time.

use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use serde::{Deserialize, Serialize};

/// CPU times and wall clock at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    user: Duration,
    sys: Duration,
    at: Instant,
}

impl CpuSnapshot {
    /// Reads this process's CPU times now (zeros if the kernel refuses,
    /// which it does not on Linux).
    pub fn now() -> Self {
        let (user, sys) = match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(usage) => (
                timeval(usage.user_time().tv_sec(), usage.user_time().tv_usec()),
                timeval(usage.system_time().tv_sec(), usage.system_time().tv_usec()),
            ),
            Err(_) => (Duration::ZERO, Duration::ZERO),
        };
        Self {
            user,
            sys,
            at: Instant::now(),
        }
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUsage {
        let user = later.user.saturating_sub(self.user).as_secs_f64();
        let sys = later.sys.saturating_sub(self.sys).as_secs_f64();
        let wall = later.at.saturating_duration_since(self.at).as_secs_f64();
        CpuUsage {
            user_s: user,
            sys_s: sys,
            wall_s: wall,
            percent_of_one_core: if wall > 0.0 {
                (user + sys) * 100.0 / wall
            } else {
                0.0
            },
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

fn timeval(sec: i64, usec: i64) -> Duration {
    Duration::from_secs(u64::try_from(sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(usec).unwrap_or(0))
}

/// The client's CPU use over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// User-mode CPU seconds.
    pub user_s: f64,
    /// Kernel-mode CPU seconds (the socket work is mostly here).
    pub sys_s: f64,
    /// Wall-clock seconds of the window.
    pub wall_s: f64,
    /// (user + sys) / wall × 100: 100 means one core fully busy.
    pub percent_of_one_core: f64,
    /// Cores the machine has, to read the percentage against.
    pub cores: usize,
}

impl std::fmt::Display for CpuUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}% of one core (user {:.2} s + sys {:.2} s over {:.2} s; {} cores)",
            self.percent_of_one_core, self.user_s, self.sys_s, self.wall_s, self.cores
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_up() {
        // Spin until the OS has charged 20 ms of CPU (on a loaded machine
        // that takes longer than 20 ms of wall time): what is asserted is
        // the accounting, not how fast this machine is.
        let before = CpuSnapshot::now();
        let start = Instant::now();
        let mut x = 0u64;
        let mut usage = before.until(&CpuSnapshot::now());
        while usage.user_s + usage.sys_s < 0.02 && start.elapsed() < Duration::from_secs(30) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            usage = before.until(&CpuSnapshot::now());
        }
        assert!(usage.user_s + usage.sys_s >= 0.02, "{usage:?}");
        assert!(usage.wall_s >= usage.user_s * 0.5, "{usage:?}");
        assert!(usage.percent_of_one_core > 0.0, "{usage:?}");
    }
}
