//! Small helpers for the figures the benchmarks print.

/// The `p` quantile (0 to 1) of an ascending list; 0 for an empty one.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `v` rounded to three decimals.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The host's CPU time so far, all of it and the part the hypervisor gave
/// to other guests (`steal` in `/proc/stat`): on a shared virtual machine,
/// time in which this host's threads were ready to run but its virtual CPUs
/// were not running. Linux only.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    total: u64,
    steal: u64,
}

impl CpuClock {
    /// Now, where `/proc/stat` says (`None` elsewhere, or on a kernel too
    /// old to count steal).
    pub fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let mut fields = text.lines().next()?.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        // user nice system idle iowait irq softirq steal (guest time is
        // counted within user and nice already).
        let ticks: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(Self {
            total: ticks.iter().sum(),
            steal: *ticks.get(7)?,
        })
    }

    /// The percentage of the host's CPU time since `earlier` that was
    /// stolen.
    pub fn stolen_pct_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        round3(100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64)
    }
}

/// A run's wall-clock time, and the host's CPU time stolen meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: std::time::Instant,
    clock: Option<CpuClock>,
}

impl Stopwatch {
    /// Started now.
    pub fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
            clock: CpuClock::read(),
        }
    }

    /// Seconds since the start.
    pub fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The percentage of the host's CPU time since the start that the
    /// hypervisor gave to other guests (`None` where it cannot be read).
    pub fn stolen_pct(&self) -> Option<f64> {
        Some(CpuClock::read()?.stolen_pct_since(self.clock.as_ref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stolen_share_of_the_ticks_between_two_readings() {
        let a = CpuClock {
            total: 1_000,
            steal: 10,
        };
        let b = CpuClock {
            total: 1_400,
            steal: 110,
        };
        assert_eq!(b.stolen_pct_since(&a), 25.0);
        assert_eq!(a.stolen_pct_since(&a), 0.0);
    }

    #[test]
    fn this_host_can_be_read_on_linux() {
        if cfg!(target_os = "linux") {
            let clock = CpuClock::read().expect("/proc/stat has a cpu line with steal");
            assert!(clock.steal <= clock.total);
        }
    }
}
