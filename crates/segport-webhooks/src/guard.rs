//! Which addresses webhook deliveries may call. By default only public unicast addresses:
//! loopback, private, link-local, shared (CGNAT), unique-local, unspecified, multicast,
//! broadcast, documentation and IPv4-mapped or -translated IPv6 addresses are refused, unless
//! the operator allows a network holding them (`--webhook-allow-network 127.0.0.0/8`).
//!
//! The check runs on the addresses a name resolves to for each request, inside the client's
//! resolver, so the address connected to is the one checked: a name that resolves elsewhere on
//! the next lookup (DNS rebinding) gains nothing. Address literals in URLs, which the client
//! does not resolve, are checked before the request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The networks an operator allows beyond public addresses.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Arc<Vec<IpNet>>,
}

/// Why an address may not be called.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{address} is a {kind} address, which webhooks may not call (an operator can allow it with --webhook-allow-network)")]
pub struct Refused {
    pub address: IpAddr,
    pub kind: &'static str,
}

impl AddressPolicy {
    /// Public addresses, and `allowed` networks besides.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed: Arc::new(allowed) }
    }

    /// Parses `--webhook-allow-network` values: CIDR networks (`10.0.0.0/8`) or single addresses.
    pub fn parse(networks: &[String]) -> Result<Self, String> {
        let nets = networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{n:?} is neither a network (10.0.0.0/8) nor an address"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::new(nets))
    }

    /// Whether `address` may be called.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        if self.allowed.iter().any(|n| n.contains(&address)) {
            return Ok(());
        }
        match special_kind(address) {
            Some(kind) => Err(Refused { address, kind }),
            None => Ok(()),
        }
    }

    /// The permitted addresses of `resolved`, or the refusal of the first when none is.
    pub fn filter(&self, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        let mut first_refusal = None;
        let mut permitted = Vec::with_capacity(resolved.len());
        for address in resolved {
            match self.check(address.ip()) {
                Ok(()) => permitted.push(address),
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        match (permitted.is_empty(), first_refusal) {
            (true, Some(refused)) => Err(refused),
            _ => Ok(permitted),
        }
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn special_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return Some("IPv4-mapped IPv6");
            }
            let segments = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("unique-local (private)")
            } else if segments[0] == 0x64 && segments[1] == 0xff9b {
                Some("IPv4-translated IPv6")
            } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn v4_kind(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, _, _] = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if v4.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if v4.is_broadcast() {
        Some("broadcast")
    } else if v4.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else if v4.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_non_public_kind() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(policy.check(ip).is_err(), "{refused} was allowed");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"] {
            assert!(policy.check(public.parse().unwrap()).is_ok(), "{public} was refused");
        }
    }

    #[test]
    fn operators_allow_networks() {
        let policy = AddressPolicy::parse(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::1".parse().unwrap()).is_ok());
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(AddressPolicy::parse(&["nope".into()]).is_err());
        let resolved = vec!["10.0.0.1:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()];
        assert_eq!(policy.filter(resolved).unwrap().len(), 1);
        let refused = AddressPolicy::default().filter(vec!["10.0.0.1:80".parse().unwrap()]);
        assert_eq!(refused.unwrap_err().kind, "private");
    }
}
