//! Long-running third-party processes (etcd, kube-apiserver, kwok, Pebble, the operator binary)
//! started for a test binary and guaranteed to stop with it.
//!
//! Three layers make sure nothing outlives the tests:
//! - [`ManagedProcess::stop`] (called from `Drop` of the fixture that owns it) stops one process by
//!   PID: SIGTERM, a grace period, then SIGKILL.
//! - An `atexit` hook stops every process still registered when the test binary exits normally,
//!   including after failed or panicking tests (fixtures kept in statics are never dropped).
//! - Every child gets `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it when the test binary dies
//!   without running exit hooks (SIGKILL, abort). The death signal fires when the *thread* that
//!   forked the child ends, so children are forked from one dedicated thread that lives as long as
//!   the process, never from a test's own thread.
//!
//! `tests/tests/process.rs` proves the last layer with the `orphan_parent` helper binary.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Children started by this test binary and not yet stopped, with their names for messages.
static RUNNING: Mutex<Vec<(String, Child)>> = Mutex::new(Vec::new());
/// Directories to remove when the test binary exits (fixtures kept in statics are never dropped).
static EXIT_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static EXIT_HOOK: Once = Once::new();

type SpawnReply = mpsc::Sender<io::Result<Child>>;
static SPAWNER: OnceLock<Mutex<mpsc::Sender<(Command, SpawnReply)>>> = OnceLock::new();

/// A process started by [`ManagedProcess::spawn`]; its output goes to a log file.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with stdout and stderr appended to `log`, registered for cleanup.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, Error> {
        install_exit_hook();
        // Appended, so a component started again (a restart drill) continues its log.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| Error::Io {
                what: format!("creating {}", log.display()),
                source,
            })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            what: format!("opening {}", log.display()),
            source,
        })?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, kill).
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() == 1 {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                Ok(())
            });
        }
        let child = spawn_on_reaper_thread(command).map_err(|source| Error::Spawn {
            name: name.to_owned(),
            source,
        })?;
        let pid = child.id();
        lock(&RUNNING).push((name.to_owned(), child));
        Ok(Self {
            name: name.to_owned(),
            pid,
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Some(exit description)` once the process has exited on its own.
    pub fn exited(&self) -> Option<String> {
        let mut running = lock(&RUNNING);
        let (_, child) = running.iter_mut().find(|(_, c)| c.id() == self.pid)?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Stops the process: SIGTERM, up to five seconds to exit, then SIGKILL. Idempotent.
    pub fn stop(&self) {
        let child = {
            let mut running = lock(&RUNNING);
            running
                .iter()
                .position(|(_, c)| c.id() == self.pid)
                .map(|i| running.swap_remove(i))
        };
        if let Some((name, child)) = child {
            stop_all(vec![(name, child)]);
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes `dir` when the test binary exits, unless it is gone by then.
pub fn remove_at_exit(dir: &Path) {
    install_exit_hook();
    lock(&EXIT_DIRS).push(dir.to_owned());
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_on_reaper_thread(command: Command) -> io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        // This thread never ends while the process lives, so PR_SET_PDEATHSIG only fires when the
        // whole test binary is gone.
        std::thread::Builder::new()
            .name("p2pcamera-tests-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| Mutex::new(tx))
            .unwrap_or_else(|e| {
                // Without the thread, fall back to a channel whose requests fail with this error.
                let (tx, _) = mpsc::channel();
                eprintln!("[p2pcamera-tests] cannot start the spawner thread: {e}");
                Mutex::new(tx)
            })
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(spawner)
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is not running"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

/// SIGTERM to all, wait for all within the grace period, SIGKILL the rest.
fn stop_all(mut children: Vec<(String, Child)>) {
    for (_, child) in &children {
        // The PID is still ours: the child has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !children.is_empty() && Instant::now() < deadline {
        children.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        if !children.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for (name, mut child) in children {
        eprintln!(
            "[p2pcamera-tests] {name} (pid {}) still running {STOP_GRACE:?} after SIGTERM, sending SIGKILL",
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn install_exit_hook() {
    EXIT_HOOK.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_everything_at_exit) };
    });
}

extern "C" fn stop_everything_at_exit() {
    let children: Vec<_> = lock(&RUNNING).drain(..).collect();
    if !children.is_empty() {
        let names: Vec<_> = children
            .iter()
            .map(|(n, c)| format!("{n}({})", c.id()))
            .collect();
        eprintln!("[p2pcamera-tests] stopping {}", names.join(" "));
        // Newest first: clients before the servers they hold connections to (a server waits
        // for its clients' streams to end before it exits).
        for child in children.into_iter().rev() {
            stop_all(vec![child]);
        }
    }
    for dir in lock(&EXIT_DIRS).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_the_process_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let p = ManagedProcess::spawn("sleep", cmd, &dir.path().join("sleep.log")).unwrap();
        let pid = p.pid() as libc::pid_t;
        assert!(p.exited().is_none());
        p.stop();
        // Reaped: the PID no longer names our child.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
        p.stop();
    }
}
