//! A network namespace of a test's own: its own loopback and its own firewall (nftables), so a
//! test can take UDP away from a client without touching the machine's network.
//!
//! The namespace lives as long as its holder process (`unshare --net sleep infinity`) or any
//! process started in it; processes enter it with `nsenter --net`, which keeps their PID (what
//! [`ManagedProcess`] stops). The test binary reaches into it from a thread of its own that
//! joined it ([`NetworkNamespace::on_thread`]). Needs root.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::ManagedProcess;

/// A network namespace with `lo` up; dropping it stops the holder (the namespace goes once the
/// processes started in it are stopped too).
pub struct NetworkNamespace {
    holder: ManagedProcess,
    dir: PathBuf,
}

impl NetworkNamespace {
    /// Why this machine cannot make namespaces for a test (`None`: it can): not root, or no
    /// `unshare`/`nsenter` (util-linux).
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some(
                "not root: creating a network namespace and its firewall needs root".into(),
            );
        }
        ["unshare", "nsenter"]
            .into_iter()
            .find(|program| {
                Command::new(program)
                    .arg("--version")
                    .output()
                    .map(|output| !output.status.success())
                    .unwrap_or(true)
            })
            .map(|program| format!("`{program}` (util-linux) is not available"))
    }

    /// Makes a namespace whose logs and files go in `dir`, with only its loopback up (no
    /// multicast route, as on a locked-down host).
    pub fn create(dir: &Path) -> Result<Self, Error> {
        let mut command = Command::new("unshare");
        command.args(["--net", "--", "sleep", "infinity"]);
        let holder = ManagedProcess::spawn("netns-holder", command, &dir.join("netns.log"))?;
        let namespace = Self {
            holder,
            dir: dir.to_owned(),
        };
        // `unshare` execs `sleep` once the namespace is made: wait for the holder to be in it.
        let ours = std::fs::read_link("/proc/self/ns/net").ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(namespace.path()).ok() == ours {
            if let Some(status) = namespace.holder.exited() {
                return Err(Error::Exited {
                    name: "unshare --net".into(),
                    status,
                    log: namespace.holder.log_tail(10),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "the namespace holder to enter its namespace".into(),
                    timeout: Duration::from_secs(10),
                    last: "still in the test's namespace".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Only loopback, no multicast route: camera-pod must not need one (it does no mDNS).
        namespace.run("ip", &["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// `/proc/<holder>/ns/net`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.pid()))
    }

    /// A command for `program` that runs inside the namespace (with the same PID).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `program args` in the namespace to completion; a failure carries its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<(), Error> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .map_err(|source| Error::Spawn {
                name: program.into(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Exited {
                name: format!("{program} {}", args.join(" ")),
                status: output.status.to_string(),
                log: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }

    /// Loads an nftables ruleset (`nft -f` syntax) into the namespace's firewall.
    pub fn apply_nftables(&self, name: &str, ruleset: &str) -> Result<(), Error> {
        let file = self.dir.join(format!("{name}.nft"));
        std::fs::write(&file, ruleset).map_err(|source| Error::Io {
            what: format!("writing {}", file.display()),
            source,
        })?;
        self.run("nft", &["-f", &file.to_string_lossy()])
    }

    /// Runs `work` on a new thread that joined the namespace: sockets it opens are the
    /// namespace's. Blocking code only (the thread has no async runtime).
    pub fn on_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let file = File::open(self.path()).map_err(|source| Error::Io {
            what: format!("opening {}", self.path().display()),
            source,
        })?;
        std::thread::spawn(move || {
            // SAFETY: a valid namespace file descriptor; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Io {
                    what: "joining the test's network namespace".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(work())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}
