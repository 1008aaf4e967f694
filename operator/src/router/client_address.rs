//! Which address a request comes from, for the per-client rate limit.
//!
//! Without trusted proxies it is the TCP peer. Behind a load balancer or ingress that terminates
//! the connection, every request would share the proxy's address; naming the proxy's networks with
//! `--trusted-proxies` makes the router read `X-Forwarded-For` instead. Only hops appended by
//! trusted proxies are believed: the list is read from the right (the hop closest to the router),
//! skipping trusted addresses, and the first address that is not trusted is the client. Whatever a
//! client writes into the header itself sits to the left of that and is never used.

use std::net::IpAddr;

use ipnet::IpNet;

/// The header proxies name the client in.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request from `peer` carrying the given `X-Forwarded-For` header
/// values (in order), given the networks of trusted proxies.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An entry that is no address ends the trustworthy part of the chain: the last proxy
        // that wrote a valid hop is as far as the router can see.
        let Some(address) = parse_hop(hop) else { break };
        client = address;
        if !is_trusted(&address) {
            break;
        }
    }
    client
}

/// A trusted-proxy network from the command line: `10.0.0.0/8`, or one address (`10.0.0.7`).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither a network (10.0.0.0/8, fd00::/8) nor an address"))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub(super) fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly in brackets or with a port
/// (`203.0.113.9`, `203.0.113.9:5000`, `[2001:db8::1]:5000`, `2001:db8::1`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, _port) = rest.split_once(']')?;
        return inside.parse::<IpAddr>().ok().map(canonical);
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn networks_and_single_addresses_parse() {
        assert_eq!(parse_network("10.0.0.0/8"), Ok(nets(&["10.0.0.0/8"])[0]));
        assert_eq!(parse_network(" 10.0.0.7 "), Ok(nets(&["10.0.0.7/32"])[0]));
        assert_eq!(parse_network("fd00::1"), Ok(nets(&["fd00::1/128"])[0]));
        assert!(
            parse_network("10.0.0.0/33")
                .unwrap_err()
                .contains("neither")
        );
        assert!(parse_network("proxy.example").is_err());
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("198.51.100.1"), ["203.0.113.9"], &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(ip("198.51.100.1"), ["203.0.113.9"], &[]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("10.1.2.3"), ["203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // Two proxies: the client's own claim (left) is ignored.
        assert_eq!(
            client_address(ip("10.1.2.3"), ["1.2.3.4, 203.0.113.9, 10.9.9.9"], &trusted),
            ip("203.0.113.9")
        );
        // Several header lines count as one list, in order.
        assert_eq!(
            client_address(ip("10.1.2.3"), ["1.2.3.4", "203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn missing_or_broken_header_falls_back_to_the_last_valid_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_address(ip("10.1.2.3"), [], &trusted), ip("10.1.2.3"));
        assert_eq!(
            client_address(ip("10.1.2.3"), ["not-an-ip"], &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), ["203.0.113.9, junk, 10.0.0.7"], &trusted),
            ip("10.0.0.7")
        );
        // Only trusted hops: the farthest one is the best guess.
        assert_eq!(
            client_address(ip("10.1.2.3"), ["10.0.0.5, 10.0.0.6"], &trusted),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn hops_with_ports_brackets_and_mapped_addresses() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(
            client_address(ip("fd00::1"), ["203.0.113.9:5555"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), ["[2001:db8::1]:443"], &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), ["2001:db8::2"], &trusted),
            ip("2001:db8::2")
        );
        // A dual-stack listener sees IPv4 proxies as mapped IPv6 peers.
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), ["203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), ["::ffff:203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
    }
}
