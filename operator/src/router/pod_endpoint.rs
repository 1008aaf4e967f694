//! Which camera pod endpoints the router connects to.
//!
//! `status.endpoint` of a CameraSession is written by the operator, but anyone allowed to patch
//! `camerasessions/status` can write it too, and the router sends the session's token wherever it
//! points. So the router reads it as untrusted text and connects only to what the operator writes:
//! `https://<IP address>:<port>` (an IPv6 address in brackets), with the port in the camera pods'
//! port range (`--port-range`) and equal to `status.udpPort` when that is set, with no user
//! information, no path other than `/`, no query and no fragment. The host must be an address
//! literal in its plain form: no host names (no DNS lookups decided by the status), no numeric
//! shorthands such as `0x7f.1` that URL parsers turn into addresses, no zone index, no
//! unspecified, broadcast or multicast address. The router connects to the parsed address, never
//! to the text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::ports::PortRange;

/// Why an endpoint was refused; logged with the session, never shown to the browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the scheme is not https")]
    NotHttps,
    #[error("it carries user information")]
    UserInfo,
    #[error("it has a path, query or fragment")]
    PathQueryOrFragment,
    #[error("the host is not an IP address literal")]
    HostNotAnAddress,
    #[error("the address {0} cannot be a camera pod's")]
    UnusableAddress(IpAddr),
    #[error("the port is missing or not a number")]
    BadPort,
    #[error("port {port} is outside the camera pods' range {range}")]
    PortOutOfRange { port: u16, range: PortRange },
    #[error("port {port} is not the session's udpPort {udp_port}")]
    PortMismatch { port: u16, udp_port: i64 },
}

/// Checks `endpoint` (the session's `status.endpoint`) against the rules above and returns the
/// address to connect to.
pub fn check(
    endpoint: &str,
    udp_port: Option<i64>,
    range: PortRange,
) -> Result<SocketAddr, EndpointError> {
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or(EndpointError::NotHttps)?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(EndpointError::UserInfo);
    }
    if !(tail.is_empty() || tail == "/") {
        return Err(EndpointError::PathQueryOrFragment);
    }
    let (host, port) = split_host_port(authority)?;
    if !usable(host) {
        return Err(EndpointError::UnusableAddress(host));
    }
    if !range.contains(port) {
        return Err(EndpointError::PortOutOfRange { port, range });
    }
    if let Some(udp_port) = udp_port
        && udp_port != i64::from(port)
    {
        return Err(EndpointError::PortMismatch { port, udp_port });
    }
    Ok(SocketAddr::new(host, port))
}

/// `10.0.0.7:40000` or `[fd00::7]:40000`; the port is required.
fn split_host_port(authority: &str) -> Result<(IpAddr, u16), EndpointError> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (inside, after) = bracketed
                .split_once(']')
                .ok_or(EndpointError::HostNotAnAddress)?;
            let address = inside
                .parse::<Ipv6Addr>()
                .map_err(|_| EndpointError::HostNotAnAddress)?;
            let port = after.strip_prefix(':').ok_or(EndpointError::BadPort)?;
            (IpAddr::V6(address), port)
        }
        None => {
            let (host, port) = authority.rsplit_once(':').ok_or(EndpointError::BadPort)?;
            // Rust's IPv4 parser takes exactly four decimal octets: no `0x7f.1`, no `127.1`.
            let address = host
                .parse::<Ipv4Addr>()
                .map_err(|_| EndpointError::HostNotAnAddress)?;
            (IpAddr::V4(address), port)
        }
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::BadPort);
    }
    let port = port.parse::<u16>().map_err(|_| EndpointError::BadPort)?;
    Ok((host, port))
}

/// An address a node (and so a host-network camera pod) can have.
fn usable(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_multicast() || v6.to_ipv4_mapped().is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: PortRange = PortRange {
        first: 40000,
        last: 40999,
    };

    fn accepted(endpoint: &str, udp_port: Option<i64>) -> SocketAddr {
        check(endpoint, udp_port, RANGE).unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    #[test]
    fn what_the_operator_writes_is_accepted() {
        assert_eq!(
            accepted("https://10.0.0.5:40010", Some(40010)),
            "10.0.0.5:40010".parse().unwrap()
        );
        assert_eq!(
            accepted("https://10.0.0.5:40010/", None),
            "10.0.0.5:40010".parse().unwrap()
        );
        assert_eq!(
            accepted("https://[fd00::1]:40000", Some(40000)),
            "[fd00::1]:40000".parse().unwrap()
        );
        // Test nodes are loopback addresses.
        assert_eq!(
            accepted("https://127.0.0.1:40999", None),
            "127.0.0.1:40999".parse().unwrap()
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        for endpoint in [
            "http://10.0.0.5:40010",
            "HTTPS://10.0.0.5:40010",
            "ftp://10.0.0.5:40010",
            "//10.0.0.5:40010",
            "10.0.0.5:40010",
            "",
        ] {
            assert_eq!(
                check(endpoint, None, RANGE),
                Err(EndpointError::NotHttps),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn host_names_and_address_shorthands_are_refused() {
        for endpoint in [
            "https://camera.example:40010",
            "https://localhost:40010",
            "https://0x7f.1:40010",
            "https://127.1:40010",
            "https://2130706433:40010",
            "https://010.0.0.5:40010",
            "https://[fe80::1%25eth0]:40010",
            "https://[10.0.0.5]:40010",
            "https://fd00::1:40010",
            "https://[fd00::1:40010",
            "https://:40010",
        ] {
            assert_eq!(
                check(endpoint, None, RANGE),
                Err(EndpointError::HostNotAnAddress),
                "{endpoint}"
            );
        }
        for endpoint in [
            "https://0.0.0.0:40010",
            "https://255.255.255.255:40010",
            "https://224.0.0.1:40010",
            "https://[::]:40010",
            "https://[ff02::1]:40010",
            "https://[::ffff:10.0.0.5]:40010",
        ] {
            assert!(
                matches!(
                    check(endpoint, None, RANGE),
                    Err(EndpointError::UnusableAddress(_))
                ),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn ports_outside_the_range_or_other_than_the_sessions_are_refused() {
        assert_eq!(
            check("https://10.0.0.5:443", None, RANGE),
            Err(EndpointError::PortOutOfRange {
                port: 443,
                range: RANGE
            })
        );
        assert_eq!(
            check("https://10.0.0.5:41000", None, RANGE),
            Err(EndpointError::PortOutOfRange {
                port: 41000,
                range: RANGE
            })
        );
        assert_eq!(
            check("https://10.0.0.5:40010", Some(40011), RANGE),
            Err(EndpointError::PortMismatch {
                port: 40010,
                udp_port: 40011
            })
        );
        for endpoint in [
            "https://10.0.0.5",
            "https://10.0.0.5:",
            "https://10.0.0.5:+40010",
            "https://10.0.0.5:40010:1",
            "https://10.0.0.5:4001O",
            "https://10.0.0.5:400100",
            "https://10.0.0.5:99999",
            "https://[fd00::1]",
            "https://[fd00::1]40010",
        ] {
            assert!(
                matches!(
                    check(endpoint, None, RANGE),
                    Err(EndpointError::BadPort | EndpointError::HostNotAnAddress)
                ),
                "{endpoint}: {:?}",
                check(endpoint, None, RANGE)
            );
        }
    }

    #[test]
    fn user_information_paths_queries_and_fragments_are_refused() {
        for endpoint in [
            "https://user@10.0.0.5:40010",
            "https://user:pass@10.0.0.5:40010",
            "https://evil.example@10.0.0.5:40010",
            "https://10.0.0.5:40010@evil.example:40010",
        ] {
            assert_eq!(
                check(endpoint, None, RANGE),
                Err(EndpointError::UserInfo),
                "{endpoint}"
            );
        }
        for endpoint in [
            "https://10.0.0.5:40010/admin",
            "https://10.0.0.5:40010//",
            "https://10.0.0.5:40010/offer?x=1",
            "https://10.0.0.5:40010?redirect=https://evil.example",
            "https://10.0.0.5:40010#fragment",
            "https://10.0.0.5:40010/#",
            "https://10.0.0.5:40010/../status",
        ] {
            assert_eq!(
                check(endpoint, None, RANGE),
                Err(EndpointError::PathQueryOrFragment),
                "{endpoint}"
            );
        }
    }
}
