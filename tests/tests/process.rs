//! Children started through [`p2pcamera_tests::ManagedProcess`] die with the process that
//! started them, even when it is killed with SIGKILL and runs no exit hooks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn is_zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the PID exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn children_die_with_the_spawning_process() {
    // The helper spawns `sleep` through ManagedProcess and is then killed with SIGKILL: the
    // kernel must kill the sleep through PR_SET_PDEATHSIG.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut parent = Command::new(env!("CARGO_BIN_EXE_orphan_parent"))
        .arg(&pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sleep_pid: libc::pid_t = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        if let Ok(Some(status)) = parent.try_wait() {
            panic!("orphan_parent exited ({status}) before reporting its child");
        }
        assert!(
            Instant::now() < deadline,
            "orphan_parent never reported its child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        alive(sleep_pid),
        "the child should run while its parent lives"
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(sleep_pid) && !is_zombie(sleep_pid) {
        assert!(
            Instant::now() < deadline,
            "child {sleep_pid} survived its parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
