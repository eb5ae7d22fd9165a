//! Trusted networks: PAM_RHOST as an IP literal, matched against CIDR blocks.
//!
//! Only an IP literal can be trusted. A host name (sshd with `UseDNS yes`
//! puts the reverse-resolved name in PAM_RHOST, and whoever controls the
//! reverse zone chooses it) or an empty rhost is never trusted.

use std::net::IpAddr;

use ipnet::IpNet;

/// Parses PAM_RHOST as an IP address, folding `::ffff:a.b.c.d` to IPv4 so
/// that IPv4 blocks match clients that reach a dual-stack socket.
/// Returns `None` for host names, empty strings and anything else.
pub fn rhost_ip(rhost: &str) -> Option<IpAddr> {
    let ip: IpAddr = rhost.parse().ok()?;
    Some(canonical(ip))
}

/// Folds an IPv4-mapped IPv6 address to plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// True when `rhost` is an IP literal inside one of `trusted`.
pub fn is_trusted(rhost: Option<&str>, trusted: &[IpNet]) -> bool {
    match rhost.and_then(rhost_ip) {
        Some(ip) => trusted.iter().any(|net| net.contains(&ip)),
        None => false,
    }
}

/// Parses one entry of `trusted=`: a CIDR block, or a bare address meaning
/// that one host. A block with host bits set (`10.1.2.3/16`) is refused
/// rather than silently widened: it is usually a typo, and guessing what
/// the admin meant could trust more addresses than intended.
pub fn parse_block(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty network".to_string());
    }
    if !text.contains('/') {
        return text
            .parse::<IpAddr>()
            .map(|ip| IpNet::from(canonical(ip)))
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("{text:?} is not a valid CIDR block"))?;
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| parse_block(s).expect("valid block"))
            .collect()
    }

    #[test]
    fn ipv4_and_ipv6_blocks_match() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(is_trusted(Some("10.1.2.3"), &trusted));
        assert!(is_trusted(Some("2001:db8::42"), &trusted));
        assert!(!is_trusted(Some("11.0.0.1"), &trusted));
        assert!(!is_trusted(Some("2001:db9::1"), &trusted));
    }

    #[test]
    fn v4_mapped_addresses_are_folded() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert!(is_trusted(Some("::ffff:10.1.2.3"), &trusted));
        assert_eq!(
            rhost_ip("::ffff:192.0.2.1"),
            Some("192.0.2.1".parse().expect("ip"))
        );
    }

    #[test]
    fn hostnames_and_empty_rhost_are_never_trusted() {
        let trusted = nets(&["0.0.0.0/0", "::/0"]);
        assert!(!is_trusted(Some("login.example.org"), &trusted));
        assert!(!is_trusted(Some("10.0.0.1.evil.example"), &trusted));
        assert!(!is_trusted(Some(""), &trusted));
        assert!(!is_trusted(None, &trusted));
        assert!(!is_trusted(Some(" 10.0.0.1"), &trusted));
    }

    #[test]
    fn bare_addresses_are_single_hosts() {
        let trusted = nets(&["192.0.2.7", "::1"]);
        assert!(is_trusted(Some("192.0.2.7"), &trusted));
        assert!(!is_trusted(Some("192.0.2.8"), &trusted));
        assert!(is_trusted(Some("::1"), &trusted));
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.org",
            "",
            "10.1.2.3/16",
            "10.0.0.0/-1",
        ] {
            assert!(parse_block(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
