//! The `tributary worker` child processes (started, SIGKILLed, their logs) and the configuration
//! they load.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use sandbox::Sandbox;

use crate::{CONCURRENCY, DISPATCH_LEASE_SECS, FETCH_LEASE_SECS, PARTNER};

/// The `tributary worker` child processes; all are SIGKILLed when this is dropped (also while a
/// failed assertion unwinds), and their logs are printed then if the test is failing.
pub struct Workers {
    dir: PathBuf,
    config: PathBuf,
    children: Vec<(u32, String, Child)>,
}

impl Workers {
    pub fn new(dir: &Path, config: PathBuf) -> Self {
        Self {
            dir: dir.to_owned(),
            config,
            children: Vec::new(),
        }
    }

    /// Starts one worker; returns its pid. Its stdout and stderr go to `<name>.log`.
    pub fn spawn(&mut self, name: &str) -> u32 {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("worker")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // The test's own TRIBUTARY_TEST_POSTGRES_URL would be read as an unknown config key.
        for (var, _) in std::env::vars_os() {
            if var
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("TRIBUTARY_")
            {
                command.env_remove(var);
            }
        }
        let child = command.spawn().expect("start a worker process");
        let pid = child.id();
        self.children.push((pid, name.to_owned(), child));
        pid
    }

    /// SIGKILL (`Child::kill` on Unix) and reap.
    pub fn kill(&mut self, pid: u32) {
        let (_, _, child) = self
            .children
            .iter_mut()
            .find(|(p, _, _)| *p == pid)
            .expect("a child of ours");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn log(&self, pid: u32) -> String {
        let name = self
            .children
            .iter()
            .find(|(p, _, _)| *p == pid)
            .map_or("?", |(_, name, _)| name.as_str());
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The last lines of every worker's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (pid, name, _) in &self.children {
            let log = self.log(*pid);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            let _ = writeln!(out, "--- worker {name} (pid {pid}), last lines:");
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for (_, _, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration every worker process loads: the test database and key, the sandbox CGM
/// partner at the in-process sandbox with one-day windows, short leases, fast polling.
pub fn write_worker_config(dir: &Path, url: &str, key: &[u8; 32], sandbox: &Sandbox) -> PathBuf {
    let workers = format!(
        "concurrency = {CONCURRENCY}\nbatch_size = {CONCURRENCY}\npoll_interval_ms = 50\n\
         dispatch_batch = 10\ndispatch_lease_secs = {DISPATCH_LEASE_SECS}\n\
         fetch_lease_secs = {FETCH_LEASE_SECS}\nmax_run_secs = 60"
    );
    let toml = tributary::bench::worker_config_toml(
        url,
        key,
        sandbox,
        &tributary::bench::WorkerToml {
            partner: PARTNER,
            database: "max_connections = 8",
            workers: &workers,
            log_filter: "info,sqlx=warn",
            partner_settings: "max_window_days = 1\nrequests_per_second = 1000.0",
        },
    )
    .unwrap();
    let path = dir.join("worker.toml");
    std::fs::write(&path, toml).unwrap();
    path
}
