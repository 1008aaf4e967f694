//! Helper of `tests/tests/process.rs`: starts `sleep 600` as a [`ManagedProcess`], writes the
//! sleep's PID to the file named by its one argument, then waits to be killed. The test kills it
//! with SIGKILL (no exit hooks run) and checks that the kernel killed the sleep with it.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use p2pcamera_tests::ManagedProcess;

fn main() -> anyhow::Result<()> {
    let pid_file = std::env::args_os()
        .nth(1)
        .context("usage: orphan_parent <pid file>")?;
    let dir = tempfile::tempdir()?;
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let child = ManagedProcess::spawn("sleep", sleep, &dir.path().join("sleep.log"))?;
    std::fs::write(&pid_file, child.pid().to_string()).context("writing the pid file")?;
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}
