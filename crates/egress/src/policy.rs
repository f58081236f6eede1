//! A sandbox's egress policy and the decisions it makes.
//!
//! The egress path asks twice: [`Policy::decide_name`] for the name the sandbox asked for
//! (so a name outside an allowlist is refused without a DNS query), then
//! [`Policy::decide_addr`] for each address the name resolved to, right before connecting
//! to it. Only an address that passes is ever connected to, so a name that resolves to a
//! blocked address (at once, or on a later lookup: DNS rebinding) reaches nothing.

use std::net::IpAddr;

use crate::ranges::{self, Blocked};
use crate::rule::{HostPattern, PortSet, Rule, normalise_name};

/// How much of the network a sandbox reaches.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only the sandbox's own loopback.
    #[default]
    None,
    /// Only the listed destinations.
    Allowlist,
    /// Public addresses, never the blocked ranges (unless listed).
    Open,
    /// The host's network, unfiltered (operator opt-in for trusted use).
    Host,
}

/// A policy: the mode and its destination rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The mode.
    #[serde(default)]
    pub mode: Mode,
    /// Destinations: with `allowlist` the only ones reachable; with `open`, IP/CIDR rules
    /// that open blocked ranges (e.g. a private network the operator wants reachable).
    #[serde(default)]
    pub allow: Vec<Rule>,
}

/// What decided, for logs, metrics and the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Decision {
    /// A rule of the policy (shown as written).
    Rule {
        /// The rule.
        rule: String,
    },
    /// The mode itself (`open`, `host`).
    Mode {
        /// The mode.
        mode: Mode,
    },
    /// The mode allows nothing (`none`).
    NoNetwork,
    /// No rule of an allowlist matches.
    NotListed,
    /// The address is in a blocked range.
    Blocked {
        /// Which.
        range: Blocked,
    },
    /// The address is one of this host's own (its interfaces, Paddock's listeners).
    ThisHost,
}

/// Allowed or not, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Whether the connection may go ahead.
    pub allowed: bool,
    /// What decided.
    pub decision: Decision,
}

impl Verdict {
    fn allow(decision: Decision) -> Self {
        Self {
            allowed: true,
            decision,
        }
    }

    fn deny(decision: Decision) -> Self {
        Self {
            allowed: false,
            decision,
        }
    }

    /// A short text for log lines: `allow rule=*.pypi.org`, `deny blocked=loopback`.
    pub fn describe(&self) -> String {
        let verdict = if self.allowed { "allow" } else { "deny" };
        let why = match &self.decision {
            Decision::Rule { rule } => format!("rule={rule}"),
            Decision::Mode { mode } => format!("mode={}", mode_name(*mode)),
            Decision::NoNetwork => "mode=none".into(),
            Decision::NotListed => "not_listed".into(),
            Decision::Blocked { range } => format!("blocked={}", range.name()),
            Decision::ThisHost => "this_host".into(),
        };
        format!("{verdict} {why}")
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::None => "none",
        Mode::Allowlist => "allowlist",
        Mode::Open => "open",
        Mode::Host => "host",
    }
}

/// A policy a sandbox asked for that is wider than the operator allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A mode beyond the operator's.
    #[error("network mode {asked} is wider than the operator allows ({max})")]
    ModeTooWide {
        /// Asked for.
        asked: &'static str,
        /// The operator's widest.
        max: &'static str,
    },
    /// A rule no operator rule covers.
    #[error("destination {rule} is not within what the operator allows")]
    RuleNotAllowed {
        /// The rule.
        rule: String,
    },
    /// `host` is the operator's alone.
    #[error("network mode host can only be set by the operator")]
    HostIsOperatorOnly,
}

fn covers(outer: &Rule, inner: &Rule) -> bool {
    let ports = match (outer.ports, inner.ports) {
        (PortSet::Any, _) => true,
        (PortSet::Range(..), PortSet::Any) => false,
        (PortSet::Range(a, b), PortSet::Range(c, d)) => a <= c && d <= b,
    };
    let host = match (&outer.host, &inner.host) {
        (HostPattern::Name(a), HostPattern::Name(b)) => a == b,
        (HostPattern::Below(_), HostPattern::Name(b)) => outer.host.matches_name(b),
        (HostPattern::Below(a), HostPattern::Below(b)) => a == b || outer.host.matches_name(b),
        (HostPattern::Net { prefix: pa, .. }, HostPattern::Net { addr, prefix }) => {
            pa <= prefix && outer.host.contains_addr(*addr)
        }
        _ => false,
    };
    ports && host
}

impl Policy {
    /// A policy of `mode` with no rules.
    pub fn of(mode: Mode) -> Self {
        Self {
            mode,
            allow: Vec::new(),
        }
    }

    /// Checks that a policy a sandbox asked for is within `max`, the operator's widest.
    /// `open` under an operator's `allowlist` is too wide; an allowlist is within an
    /// operator's `open` when none of its rules names a blocked address range the operator
    /// did not list, and within an operator's allowlist when each rule is covered by one of
    /// the operator's.
    pub fn within(&self, max: &Policy) -> Result<(), PolicyError> {
        if self.mode == Mode::Host && max.mode != Mode::Host {
            return Err(PolicyError::HostIsOperatorOnly);
        }
        if self.mode > max.mode {
            return Err(PolicyError::ModeTooWide {
                asked: mode_name(self.mode),
                max: mode_name(max.mode),
            });
        }
        if max.mode == Mode::Host {
            return Ok(());
        }
        for r in &self.allow {
            let ok = match max.mode {
                Mode::Allowlist => max.allow.iter().any(|o| covers(o, r)),
                // Under `open` a name is fine (its addresses are checked anyway); a network
                // must not open a blocked range the operator did not.
                Mode::Open => match r.host {
                    HostPattern::Net { addr, .. } => {
                        ranges::classify(addr).is_none() || max.allow.iter().any(|o| covers(o, r))
                    }
                    _ => true,
                },
                Mode::None | Mode::Host => false,
            };
            if !ok {
                return Err(PolicyError::RuleNotAllowed {
                    rule: r.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The decision on a name the sandbox asked to reach, before it is resolved. An IP
    /// literal given as a name is decided as an address.
    pub fn decide_name(&self, name: &str, port: u16) -> Verdict {
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if let Ok(addr) = literal.parse::<IpAddr>() {
            return self.decide_addr(None, addr, port, &[]);
        }
        match self.mode {
            Mode::None => Verdict::deny(Decision::NoNetwork),
            Mode::Host | Mode::Open => Verdict::allow(Decision::Mode { mode: self.mode }),
            Mode::Allowlist => {
                let Ok(n) = normalise_name(name) else {
                    return Verdict::deny(Decision::NotListed);
                };
                match self.name_rule(&n, port) {
                    Some(r) => Verdict::allow(Decision::Rule {
                        rule: r.to_string(),
                    }),
                    None => Verdict::deny(Decision::NotListed),
                }
            }
        }
    }

    fn name_rule(&self, name: &str, port: u16) -> Option<&Rule> {
        self.allow
            .iter()
            .find(|r| r.ports.contains(port) && r.host.matches_name(name))
    }

    fn addr_rule(&self, addr: IpAddr, port: u16) -> Option<&Rule> {
        self.allow
            .iter()
            .find(|r| r.ports.contains(port) && r.host.contains_addr(addr))
    }

    /// The decision on one address, right before connecting to it. `name` is the name it
    /// was resolved from, if any; `this_host` the host's own addresses (its interfaces and
    /// Paddock's listeners), which only an explicit address rule opens.
    pub fn decide_addr(
        &self,
        name: Option<&str>,
        addr: IpAddr,
        port: u16,
        this_host: &[IpAddr],
    ) -> Verdict {
        if self.mode == Mode::None {
            return Verdict::deny(Decision::NoNetwork);
        }
        if self.mode == Mode::Host {
            return Verdict::allow(Decision::Mode { mode: Mode::Host });
        }
        // An address rule is the operator's explicit word: it opens even blocked ranges.
        if let Some(r) = self.addr_rule(addr, port) {
            return Verdict::allow(Decision::Rule {
                rule: r.to_string(),
            });
        }
        if let Some(range) = ranges::classify(addr) {
            return Verdict::deny(Decision::Blocked { range });
        }
        let canonical = match addr {
            IpAddr::V6(v6) => ranges::embedded_v4(v6).map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        if this_host.iter().any(|h| *h == addr || *h == canonical) {
            return Verdict::deny(Decision::ThisHost);
        }
        match self.mode {
            Mode::Open => Verdict::allow(Decision::Mode { mode: Mode::Open }),
            Mode::Allowlist => {
                match name
                    .and_then(|n| normalise_name(n).ok())
                    .and_then(|n| self.name_rule(&n, port).map(|r| r.to_string()))
                {
                    Some(rule) => Verdict::allow(Decision::Rule { rule }),
                    None => Verdict::deny(Decision::NotListed),
                }
            }
            Mode::None | Mode::Host => Verdict::deny(Decision::NoNetwork),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: Mode, rules: &[&str]) -> Policy {
        Policy {
            mode,
            allow: rules.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn none_allows_nothing_and_host_everything() {
        let none = Policy::of(Mode::None);
        assert!(!none.decide_name("pypi.org", 443).allowed);
        assert!(!none.decide_addr(None, ip("1.1.1.1"), 443, &[]).allowed);
        let host = Policy::of(Mode::Host);
        assert!(host.decide_addr(None, ip("127.0.0.1"), 22, &[]).allowed);
    }

    #[test]
    fn an_allowlist_allows_listed_names_on_listed_ports_only() {
        let p = policy(
            Mode::Allowlist,
            &["pypi.org:443", "*.pythonhosted.org", "203.0.113.0/24:80"],
        );
        let v = p.decide_name("PYPI.org", 443);
        assert!(v.allowed);
        assert_eq!(v.describe(), "allow rule=pypi.org:443");
        assert!(!p.decide_name("pypi.org", 80).allowed);
        assert!(p.decide_name("files.pythonhosted.org", 443).allowed);
        assert!(!p.decide_name("example.com", 443).allowed);
        // The addresses a listed name resolves to: public ones pass, blocked ones never.
        assert!(
            p.decide_addr(Some("pypi.org"), ip("151.101.0.223"), 443, &[])
                .allowed
        );
        let v = p.decide_addr(Some("pypi.org"), ip("127.0.0.1"), 443, &[]);
        assert!(!v.allowed);
        assert_eq!(v.describe(), "deny blocked=loopback");
        assert!(
            !p.decide_addr(Some("pypi.org"), ip("::ffff:169.254.169.254"), 443, &[])
                .allowed
        );
        // An address not reached through a listed name.
        assert!(
            !p.decide_addr(Some("example.com"), ip("151.101.0.223"), 443, &[])
                .allowed
        );
        assert!(!p.decide_addr(None, ip("151.101.0.223"), 443, &[]).allowed);
        // An address rule.
        assert!(p.decide_addr(None, ip("203.0.113.5"), 80, &[]).allowed);
        assert!(!p.decide_addr(None, ip("203.0.113.5"), 81, &[]).allowed);
        assert!(p.decide_name("203.0.113.5", 80).allowed);
        assert!(p.decide_name("[203.0.113.5]", 80).allowed);
    }

    #[test]
    fn open_reaches_public_addresses_but_never_the_host_or_private_ranges() {
        let me = [ip("198.51.100.20")];
        let p = Policy::of(Mode::Open);
        assert!(p.decide_name("anything.example", 443).allowed);
        assert!(
            p.decide_addr(Some("x"), ip("198.51.100.7"), 443, &me)
                .allowed
        );
        for blocked in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "fd00:ec2::254",
            "::1",
            "fe80::1",
            "100.64.1.1",
            "224.0.0.1",
        ] {
            assert!(
                !p.decide_addr(Some("x"), ip(blocked), 443, &me).allowed,
                "{blocked}"
            );
        }
        let v = p.decide_addr(None, ip("198.51.100.20"), 22, &me);
        assert_eq!(v.decision, Decision::ThisHost);
        assert!(
            !p.decide_addr(None, ip("::ffff:198.51.100.20"), 22, &me)
                .allowed
        );
        // The operator opens one private network explicitly.
        let p = policy(Mode::Open, &["10.20.0.0/16"]);
        assert!(
            p.decide_addr(Some("db.internal"), ip("10.20.3.4"), 5432, &[])
                .allowed
        );
        assert!(
            !p.decide_addr(Some("db.internal"), ip("10.21.3.4"), 5432, &[])
                .allowed
        );
    }

    #[test]
    fn a_sandbox_never_asks_for_more_than_the_operator_allows() {
        let op = policy(Mode::Allowlist, &["*.example.com:443", "203.0.113.0/24"]);
        assert!(
            policy(Mode::Allowlist, &["api.example.com:443"])
                .within(&op)
                .is_ok()
        );
        assert!(
            policy(Mode::Allowlist, &["*.a.example.com:443"])
                .within(&op)
                .is_ok()
        );
        assert!(
            policy(Mode::Allowlist, &["203.0.113.8/29"])
                .within(&op)
                .is_ok()
        );
        assert!(Policy::of(Mode::None).within(&op).is_ok());
        assert_eq!(
            policy(Mode::Allowlist, &["api.example.com"]).within(&op),
            Err(PolicyError::RuleNotAllowed {
                rule: "api.example.com".into()
            }),
            "all ports is wider than 443"
        );
        assert!(
            policy(Mode::Allowlist, &["example.com:443"])
                .within(&op)
                .is_err()
        );
        assert!(
            policy(Mode::Allowlist, &["203.0.112.0/23"])
                .within(&op)
                .is_err()
        );
        assert!(matches!(
            Policy::of(Mode::Open).within(&op),
            Err(PolicyError::ModeTooWide { .. })
        ));
        let open = Policy::of(Mode::Open);
        assert!(
            policy(Mode::Allowlist, &["pypi.org", "198.51.100.0/24"])
                .within(&open)
                .is_ok()
        );
        assert!(
            policy(Mode::Open, &["10.0.0.0/8"]).within(&open).is_err(),
            "a private range the operator did not open"
        );
        assert_eq!(
            Policy::of(Mode::Host).within(&open),
            Err(PolicyError::HostIsOperatorOnly)
        );
    }

    #[test]
    fn policies_read_from_config() {
        let p: Policy =
            serde_json::from_str(r#"{"mode":"allowlist","allow":["pypi.org:443","*.npmjs.org"]}"#)
                .unwrap();
        assert_eq!(p.mode, Mode::Allowlist);
        assert_eq!(p.allow.len(), 2);
        let e =
            serde_json::from_str::<Policy>(r#"{"mode":"allowlist","allow":["a*.b"]}"#).unwrap_err();
        assert!(e.to_string().contains("'*'"), "{e}");
        let e = serde_json::from_str::<Policy>(r#"{"mode":"wide"}"#).unwrap_err();
        assert!(e.to_string().contains("wide"), "{e}");
    }
}
