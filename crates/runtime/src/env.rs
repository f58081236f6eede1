//! The environment of a sandboxed command.
//!
//! Isolated mode passes *nothing* from the host: the base is a fixed safe set (PATH, HOME
//! in the workspace, TMPDIR, LANG, TERM, USER/LOGNAME), then the operator's configured
//! variables with secret-looking names dropped, then the caller's variables (already
//! validated). `isolation: none` follows the reference instead: the host environment minus
//! secrets, then operator, then caller. Invariant: no secret-looking name reaches a command
//! unless the caller passed it explicitly for that command.

use std::collections::BTreeMap;

use paddock_core::envpolicy::scrub;

/// The fixed base of every isolated command.
pub const ISOLATED_BASE: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.paddock/bin",
    ),
    ("HOME", paddock_core::mount::WORKSPACE),
    ("TMPDIR", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("TERM", "xterm"),
    ("USER", "sandbox"),
    ("LOGNAME", "sandbox"),
];

/// Environment for an isolated command.
pub fn isolated_env(
    operator: &BTreeMap<String, String>,
    caller: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let base = ISOLATED_BASE
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(operator.iter().map(|(k, v)| (k.clone(), v.clone())));
    scrub(base, caller)
}

/// The locale an isolated command runs in unless its request says otherwise: `LC_ALL`, else
/// `LANG`, of the base and the operator's variables (what a waiting shell loads ahead).
pub fn likely_locale(operator: &BTreeMap<String, String>) -> Option<String> {
    let env = isolated_env(operator, &BTreeMap::new());
    env.get("LC_ALL")
        .or_else(|| env.get("LANG"))
        .filter(|v| !v.is_empty())
        .cloned()
}

/// Environment for an `isolation: none` command: the host's, scrubbed.
pub fn host_env(
    host: impl IntoIterator<Item = (String, String)>,
    operator: &BTreeMap<String, String>,
    caller: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let base = host
        .into_iter()
        .chain(operator.iter().map(|(k, v)| (k.clone(), v.clone())));
    scrub(base, caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn isolated_has_fixed_base_and_no_host_values() {
        let env = isolated_env(&BTreeMap::new(), &BTreeMap::new());
        assert_eq!(env["HOME"], "/mnt/user-data/workspace");
        assert_eq!(
            env["PATH"],
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.paddock/bin"
        );
        assert_eq!(env["TMPDIR"], "/tmp");
        assert_eq!(env.len(), ISOLATED_BASE.len());
        // Nothing of this process's environment leaks in.
        for (k, _) in std::env::vars() {
            if !ISOLATED_BASE.iter().any(|(b, _)| *b == k) {
                assert!(!env.contains_key(&k), "{k} leaked");
            }
        }
    }

    #[test]
    fn operator_secrets_dropped_caller_wins() {
        let op = map(&[
            ("PIP_INDEX_URL", "https://mirror"),
            ("OPENAI_API_KEY", "sk-1"),
            ("LANG", "de_DE.UTF-8"),
        ]);
        let caller = map(&[("MY_TOKEN", "given"), ("HOME", "/tmp")]);
        let env = isolated_env(&op, &caller);
        assert_eq!(env["PIP_INDEX_URL"], "https://mirror");
        assert!(!env.contains_key("OPENAI_API_KEY"));
        assert_eq!(env["LANG"], "de_DE.UTF-8");
        assert_eq!(env["MY_TOKEN"], "given");
        assert_eq!(env["HOME"], "/tmp");
    }

    #[test]
    fn the_likely_locale_is_lc_all_then_lang() {
        assert_eq!(likely_locale(&BTreeMap::new()).as_deref(), Some("C.UTF-8"));
        let op = map(&[("LANG", "de_DE.UTF-8")]);
        assert_eq!(likely_locale(&op).as_deref(), Some("de_DE.UTF-8"));
        let op = map(&[("LANG", "de_DE.UTF-8"), ("LC_ALL", "C")]);
        assert_eq!(likely_locale(&op).as_deref(), Some("C"));
        assert_eq!(likely_locale(&map(&[("LANG", "")])), None);
    }

    #[test]
    fn host_mode_scrubs_the_host() {
        let host = vec![
            ("PATH".to_owned(), "/usr/bin".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "x".to_owned()),
        ];
        let env = host_env(host, &BTreeMap::new(), &map(&[("A", "1")]));
        assert_eq!(env.keys().collect::<Vec<_>>(), ["A", "PATH"]);
    }
}
