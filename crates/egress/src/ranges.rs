//! The address ranges no sandbox reaches unless the operator lists them: the host's own
//! loopback, link-local and cloud metadata addresses, private, shared (CGNAT) and unique
//! local networks, multicast and the unspecified and broadcast addresses — in IPv4 and IPv6,
//! including the IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`), which a
//! dual-stack host or a translating network would deliver to the embedded IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    /// `0.0.0.0/8`, `::` — "this host" in practice.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// Cloud metadata endpoints: `169.254.169.254`, `169.254.170.2` (ECS), `fd00:ec2::254`,
    /// `100.100.100.200` (Alibaba).
    Metadata,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT, shared address space).
    SharedCgnat,
    /// `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`, `240.0.0.0/4` (reserved).
    Reserved,
    /// `192.0.0.0/24` (IETF protocol assignments), `198.18.0.0/15` (benchmarking):
    /// never global.
    NotGlobal,
}

impl Blocked {
    /// A short name for logs and API answers.
    pub fn name(self) -> &'static str {
        match self {
            Blocked::Unspecified => "unspecified",
            Blocked::Loopback => "loopback",
            Blocked::Metadata => "metadata",
            Blocked::LinkLocal => "link_local",
            Blocked::Private => "private",
            Blocked::SharedCgnat => "shared_cgnat",
            Blocked::UniqueLocal => "unique_local",
            Blocked::Multicast => "multicast",
            Blocked::Reserved => "reserved",
            Blocked::NotGlobal => "not_global",
        }
    }
}

fn in_v4(a: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(a) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

/// The range an IPv4 address is blocked by, if any.
pub fn classify_v4(a: Ipv4Addr) -> Option<Blocked> {
    let o = a.octets();
    if matches!(
        o,
        [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200]
    ) {
        return Some(Blocked::Metadata);
    }
    let table: [([u8; 4], u32, Blocked); 12] = [
        ([0, 0, 0, 0], 8, Blocked::Unspecified),
        ([127, 0, 0, 0], 8, Blocked::Loopback),
        ([169, 254, 0, 0], 16, Blocked::LinkLocal),
        ([10, 0, 0, 0], 8, Blocked::Private),
        ([172, 16, 0, 0], 12, Blocked::Private),
        ([192, 168, 0, 0], 16, Blocked::Private),
        ([100, 64, 0, 0], 10, Blocked::SharedCgnat),
        ([224, 0, 0, 0], 4, Blocked::Multicast),
        ([255, 255, 255, 255], 32, Blocked::Reserved),
        ([240, 0, 0, 0], 4, Blocked::Reserved),
        ([192, 0, 0, 0], 24, Blocked::NotGlobal),
        ([198, 18, 0, 0], 15, Blocked::NotGlobal),
    ];
    table
        .iter()
        .find(|(net, bits, _)| in_v4(a, *net, *bits))
        .map(|(_, _, b)| *b)
}

/// The IPv4 address an IPv6 address carries and would be delivered to, if any.
pub fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let o = a.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // IPv4-mapped ::ffff:a.b.c.d
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(tail);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it); not :: or ::1.
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    // Teredo 2001:0::/32: the client's address is the last 32 bits, inverted.
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
    }
    None
}

/// The range an IPv6 address is blocked by (its own, or the embedded IPv4 address's).
pub fn classify_v6(a: Ipv6Addr) -> Option<Blocked> {
    let s = a.segments();
    if a.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if a.is_loopback() {
        return Some(Blocked::Loopback);
    }
    if s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
        return Some(Blocked::Metadata);
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some(Blocked::LinkLocal);
    }
    // Site-local fec0::/10 (deprecated, still private in effect).
    if s[0] & 0xffc0 == 0xfec0 {
        return Some(Blocked::Private);
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some(Blocked::UniqueLocal);
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some(Blocked::Multicast);
    }
    embedded_v4(a).and_then(classify_v4)
}

/// The range an address is blocked by, if any.
pub fn classify(a: IpAddr) -> Option<Blocked> {
    match a {
        IpAddr::V4(v) => classify_v4(v),
        IpAddr::V6(v) => classify_v6(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Blocked> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn the_host_and_the_metadata_service_are_out_of_reach_in_every_form() {
        for (addr, want) in [
            ("127.0.0.1", Blocked::Loopback),
            ("127.255.0.9", Blocked::Loopback),
            ("::1", Blocked::Loopback),
            ("::ffff:127.0.0.1", Blocked::Loopback),
            ("::127.0.0.1", Blocked::Loopback),
            ("64:ff9b::7f00:1", Blocked::Loopback),
            ("2002:7f00:1::", Blocked::Loopback),
            ("0.0.0.0", Blocked::Unspecified),
            ("::", Blocked::Unspecified),
            ("169.254.169.254", Blocked::Metadata),
            ("::ffff:169.254.169.254", Blocked::Metadata),
            ("::ffff:a9fe:a9fe", Blocked::Metadata),
            ("64:ff9b::a9fe:a9fe", Blocked::Metadata),
            ("fd00:ec2::254", Blocked::Metadata),
            ("169.254.170.2", Blocked::Metadata),
            ("100.100.100.200", Blocked::Metadata),
            ("169.254.1.1", Blocked::LinkLocal),
            ("fe80::1", Blocked::LinkLocal),
            ("10.1.2.3", Blocked::Private),
            ("172.31.255.255", Blocked::Private),
            ("192.168.0.1", Blocked::Private),
            ("::ffff:10.0.0.1", Blocked::Private),
            ("100.64.0.1", Blocked::SharedCgnat),
            ("fd12:3456::1", Blocked::UniqueLocal),
            ("fc00::1", Blocked::UniqueLocal),
            ("224.0.0.251", Blocked::Multicast),
            ("ff02::fb", Blocked::Multicast),
            ("255.255.255.255", Blocked::Reserved),
            ("198.18.0.1", Blocked::NotGlobal),
            // Teredo carrying 127.0.0.1 inverted.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Blocked::Loopback),
        ] {
            assert_eq!(c(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn public_and_documentation_addresses_are_not_blocked() {
        for addr in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(c(addr), None, "{addr}");
        }
    }
}
