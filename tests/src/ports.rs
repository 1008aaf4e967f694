//! Loopback ports for the servers the tests start, and retrying a start that lost its port.
//!
//! A port the kernel picks for `bind(…:0)` comes from its ephemeral range, the range it also
//! takes the source port of every outgoing connection from. A child told to listen on such a
//! port can find it taken in the moment between the check and its own `bind`: etcd dialling its
//! own client port, or any other connection on the machine, may have been given it. So ports
//! here are drawn at random from below the ephemeral range, where the kernel never assigns one on
//! its own; each is checked free for TCP and UDP, and none is handed out twice by one process.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use rand::Rng;

use crate::Error;

/// Where the ephemeral range starts when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL_START: u16 = 32768;
/// The lowest port handed out. Ports below are left to the sessions' UDP ports in tests that run
/// real camera-pods, and to the services a machine tends to run.
pub const FIRST_FIXTURE_PORT: u16 = 16384;
/// Draws before giving up when the range is crowded.
const DRAWS: usize = 200;
/// Starts tried before giving up on a child that exited during start-up.
const START_ATTEMPTS: usize = 3;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that is free for TCP and UDP, outside the kernel's ephemeral range, and
/// not handed out before by this process.
pub fn free_port() -> Result<u16, Error> {
    let range = drawing_range(ephemeral_start());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rng = rand::rng();
    for _ in 0..DRAWS {
        let port = rng.random_range(range.clone());
        if !handed_out.contains(&port) && is_free(port) {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: format!("finding a free port in {range:?}"),
        source: std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{DRAWS} ports drawn were all taken"),
        ),
    })
}

/// Runs `start` again, up to three times in all, while it fails because a child exited during
/// start-up: the usual cause is a port taken by someone else, and every start draws new ones.
pub(crate) async fn retry_start<T, F, Fut>(what: &str, mut start: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(error @ Error::Exited { .. }) if attempt < START_ATTEMPTS => {
                eprintln!("[{what}] start-up failed, trying again on other ports: {error}");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The ports drawn from: from [`FIRST_FIXTURE_PORT`] up to the ephemeral range, or, when that range
/// starts too low to leave room, the 4096 ports below it.
fn drawing_range(ephemeral_start: u16) -> Range<u16> {
    let start = if ephemeral_start >= FIRST_FIXTURE_PORT + 4096 {
        FIRST_FIXTURE_PORT
    } else {
        ephemeral_start.saturating_sub(4096).max(1024)
    };
    start..ephemeral_start.max(start + 1)
}

/// The first port of `net.ipv4.ip_local_port_range`.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range() {
        assert_eq!(drawing_range(32768), 16384..32768);
        assert_eq!(drawing_range(49152), 16384..49152);
    }

    #[test]
    fn a_low_ephemeral_range_still_leaves_ports_below_it() {
        assert_eq!(drawing_range(10000), 5904..10000);
        assert_eq!(drawing_range(1024), 1024..1025);
    }

    #[test]
    fn handed_out_ports_are_distinct_bindable_and_not_ephemeral() {
        let ephemeral = ephemeral_start();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        for port in ports {
            assert!(
                port < ephemeral,
                "{port} is in the ephemeral range starting at {ephemeral}"
            );
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[tokio::test]
    async fn a_start_whose_child_exited_is_tried_again_and_other_errors_are_not() {
        let exited = || Error::Exited {
            name: "server".into(),
            status: "exit status: 1".into(),
            log: "bind: address already in use".into(),
        };
        let mut calls = 0;
        let result = retry_start("test", || {
            calls += 1;
            let outcome = if calls < 3 { Err(exited()) } else { Ok(calls) };
            async move { outcome }
        })
        .await;
        assert_eq!(result.unwrap(), 3);

        let mut calls = 0;
        let result: Result<(), Error> = retry_start("test", || {
            calls += 1;
            async { Err(exited()) }
        })
        .await;
        assert!(matches!(result, Err(Error::Exited { .. })));
        assert_eq!(calls, START_ATTEMPTS);

        let mut calls = 0;
        let result: Result<(), Error> = retry_start("test", || {
            calls += 1;
            async { Err(Error::SharedStartFailed("no".into())) }
        })
        .await;
        assert!(matches!(result, Err(Error::SharedStartFailed(_))));
        assert_eq!(calls, 1);
    }
}
