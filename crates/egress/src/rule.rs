//! Destination rules: `example.com`, `*.example.com`, `203.0.113.7`, `10.0.0.0/8`,
//! `[2001:db8::1]`, `2001:db8::/32`, each with optional ports (`example.com:443`,
//! `example.com:8000-8100`, `[2001:db8::1]:443`).
//!
//! Names are compared as DNS names are: case-insensitively, a trailing dot ignored, and a
//! `*.suffix` pattern matches names strictly below the suffix on a label boundary
//! (`*.example.com` matches `a.example.com` and `a.b.example.com`, never `example.com` or
//! `evil-example.com`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A rule that cannot be parsed, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination rule {rule:?}: {reason}")]
pub struct RuleError {
    /// The rule as given.
    pub rule: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// What a rule matches of a destination's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// Any name strictly below this suffix (lower case, no leading `*.`).
    Below(String),
    /// An address in this network (an address alone is a /32 or /128).
    Net {
        /// The network's address (host bits zero).
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
}

/// The ports a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSet {
    /// Every port.
    Any,
    /// `lo..=hi`.
    Range(u16, u16),
}

impl PortSet {
    /// Whether `port` is in the set.
    pub fn contains(self, port: u16) -> bool {
        match self {
            PortSet::Any => true,
            PortSet::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }
}

/// One destination rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The host part.
    pub host: HostPattern,
    /// The ports.
    pub ports: PortSet,
    text: String,
}

/// A DNS name normalised for comparison, or why it is not one.
pub fn normalise_name(name: &str) -> Result<String, &'static str> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 {
        return Err("a name is 1 to 253 characters");
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label of a name is 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a name holds only letters, digits, '-' and '_' (IDNs in their xn-- form)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of a name neither starts nor ends with '-'");
        }
    }
    Ok(n.to_ascii_lowercase())
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl HostPattern {
    /// Whether the pattern matches a destination name (normalised).
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Name(n) => n == name,
            HostPattern::Below(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            HostPattern::Net { .. } => false,
        }
    }

    /// Whether the pattern is a network containing `addr`.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        match self {
            HostPattern::Net { addr: net, prefix } => {
                net.is_ipv4() == addr.is_ipv4() && mask(addr, *prefix) == *net
            }
            _ => false,
        }
    }
}

fn err(rule: &str, reason: &'static str) -> RuleError {
    RuleError {
        rule: rule.to_owned(),
        reason,
    }
}

fn parse_ports(rule: &str, p: &str) -> Result<PortSet, RuleError> {
    let port = |s: &str| -> Result<u16, RuleError> {
        match s.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(err(rule, "a port is a number from 1 to 65535")),
        }
    };
    match p.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                return Err(err(rule, "a port range goes from low to high"));
            }
            Ok(PortSet::Range(lo, hi))
        }
        None => {
            let n = port(p)?;
            Ok(PortSet::Range(n, n))
        }
    }
}

fn parse_net(rule: &str, s: &str) -> Result<Option<HostPattern>, RuleError> {
    let (a, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(addr) = a.parse::<IpAddr>() else {
        return if prefix.is_some() {
            Err(err(
                rule,
                "a network is an IP address, '/' and a prefix length",
            ))
        } else {
            Ok(None)
        };
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(err(
                    rule,
                    "the prefix length is out of range for the address",
                ));
            }
        },
    };
    Ok(Some(HostPattern::Net {
        addr: mask(addr, prefix),
        prefix,
    }))
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if t.is_empty() {
            return Err(err(text, "empty"));
        }
        // Split off ports: `[v6]:port`, `host:port`, `a.b.c.d/n:port`; a bare v6 has no port.
        let (host, ports) = if let Some(rest) = t.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return Err(err(text, "an IPv6 address in brackets needs its ']'"));
            };
            match after {
                "" => (h, PortSet::Any),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, parse_ports(text, p)?),
                    None => return Err(err(text, "after ']' only ':' and ports may follow")),
                },
            }
        } else if t.matches(':').count() == 1 {
            let (h, p) = t.split_once(':').unwrap_or((t, ""));
            (h, parse_ports(text, p)?)
        } else {
            (t, PortSet::Any)
        };
        let pattern = if let Some(net) = parse_net(text, host)? {
            net
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostPattern::Below(normalise_name(suffix).map_err(|r| err(text, r))?)
        } else if host.contains('*') {
            return Err(err(
                text,
                "'*' is only allowed as a whole first label ('*.example.com')",
            ));
        } else {
            HostPattern::Name(normalise_name(host).map_err(|r| err(text, r))?)
        };
        Ok(Rule {
            host: pattern,
            ports,
            text: t.to_owned(),
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_suffixes_match_on_label_boundaries() {
        let exact = r("PyPI.org.");
        assert!(exact.host.matches_name("pypi.org"));
        assert!(!exact.host.matches_name("files.pypi.org"));
        let below = r("*.pythonhosted.org");
        assert!(below.host.matches_name("files.pythonhosted.org"));
        assert!(below.host.matches_name("a.b.pythonhosted.org"));
        assert!(!below.host.matches_name("pythonhosted.org"));
        assert!(!below.host.matches_name("evilpythonhosted.org"));
        assert!(!below.host.matches_name("pythonhosted.org.evil.com"));
    }

    #[test]
    fn addresses_networks_and_ports() {
        assert_eq!(r("example.com:443").ports, PortSet::Range(443, 443));
        assert_eq!(r("example.com:8000-8100").ports, PortSet::Range(8000, 8100));
        let n = r("10.1.2.3/8");
        assert_eq!(
            n.host,
            HostPattern::Net {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            }
        );
        assert!(n.host.contains_addr("10.200.0.1".parse().unwrap()));
        assert!(!n.host.contains_addr("11.0.0.1".parse().unwrap()));
        assert!(!n.host.contains_addr("::ffff:10.0.0.1".parse().unwrap()));
        let v6 = r("[2001:db8::1]:443");
        assert_eq!(v6.ports, PortSet::Range(443, 443));
        assert!(v6.host.contains_addr("2001:db8::1".parse().unwrap()));
        assert!(
            r("2001:db8::/32")
                .host
                .contains_addr("2001:db8:ff::9".parse().unwrap())
        );
        assert_eq!(r("203.0.113.7:80").ports, PortSet::Range(80, 80));
    }

    #[test]
    fn bad_rules_say_why() {
        for bad in [
            "",
            "*",
            "a*.example.com",
            "example.com:0",
            "example.com:70000",
            "example.com:9-1",
            "10.0.0.0/33",
            "::1/129",
            "[::1",
            "[::1]x",
            "exa mple.com",
            "-bad.com",
            "a..b",
            "nope/8",
        ] {
            let e = bad.parse::<Rule>().unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_suffix_never_matches_a_name_that_only_ends_like_it(
            prefix in "[a-z0-9]{1,10}",
            suffix in "[a-z]{1,8}\\.[a-z]{2,4}",
        ) {
            let rule: Rule = format!("*.{suffix}").parse().unwrap();
            // Glued on without a dot: never a match.
            let glued = format!("{prefix}{suffix}");
            prop_assert!(!rule.host.matches_name(&glued));
            let below = format!("{prefix}.{suffix}");
            prop_assert!(rule.host.matches_name(&below));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Rule>();
        }
    }
}
