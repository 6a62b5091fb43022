//! Where the CPU goes during the measured interval: the bench process (the sandbox partner and,
//! with webhooks, the receiver), the `tributary worker` processes, and PostgreSQL's processes
//! (SQLite runs inside the workers). Read from `/proc/<pid>/stat` (user + system time), so a
//! process that exits within the interval is not counted; PostgreSQL's pooled backends live as
//! long as the workers do.

/// CPU seconds used so far, by side.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuTimes {
    pub bench: f64,
    pub workers: f64,
    pub postgres: f64,
}

/// CPU milliseconds per completed cycle, by side.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuPerCycle {
    pub bench: f64,
    pub workers: f64,
    pub postgres: f64,
}

impl CpuTimes {
    /// Now, for every process on the machine this bench can tell apart.
    pub(super) fn now() -> Self {
        let me = std::process::id();
        let mut times = Self::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return times;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((comm, secs)) = stat(pid) else {
                continue;
            };
            if pid == me {
                times.bench += secs;
            } else if comm == "tributary" {
                times.workers += secs;
            } else if comm == "postgres" {
                times.postgres += secs;
            }
        }
        times
    }

    /// What was used since `earlier`, per completed cycle.
    pub(super) fn per_cycle(&self, earlier: &Self, cycles: u64) -> CpuPerCycle {
        let per = |now: f64, then: f64| (now - then) * 1000.0 / cycles.max(1) as f64;
        CpuPerCycle {
            bench: per(self.bench, earlier.bench),
            workers: per(self.workers, earlier.workers),
            postgres: per(self.postgres, earlier.postgres),
        }
    }
}

/// A process's command name and its user + system CPU seconds.
fn stat(pid: u32) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 11 and 12 after the state.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((comm, ticks / clock_ticks()))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`: 100 on Linux's every common configuration).
fn clock_ticks() -> f64 {
    100.0
}
