//! `paddock exec`'s arguments in their plain form, read without clap.
//!
//! A one-shot `paddock exec` is a fresh process per command, and clap's first parse in a
//! process costs about 0.23 ms (it is mostly the first touch of clap's code and tables; a
//! second parse takes 0.06 ms) of a command that takes 9. The plain forms —
//! `--name value` or `--name=value`, each flag at most once, `--thread` given, then `--`
//! and the command — are read here; anything else (help, version, a missing or repeated
//! flag, an unknown one, a value that starts with `-`, text that is not UTF-8) returns
//! `None` and clap parses and reports it as ever. So the two can only agree, and a property
//! test holds them to it: whatever this accepts, clap parses the same. (Neither reads the
//! environment: [`crate::settings`] does, after either.)

use std::ffi::OsString;
use std::path::PathBuf;

use clap::ValueEnum as _;

use crate::args::{ExecArgs, IsolationArg, NetworkArg};

/// `args` are the arguments after `argv[0]`, starting with `exec`.
pub fn parse_exec(args: &[OsString]) -> Option<ExecArgs> {
    let (first, rest) = args.split_first()?;
    if first != "exec" {
        return None;
    }
    let mut config = None;
    let mut data_dir = None;
    let mut user = None;
    let mut thread = None;
    let mut timeout = None;
    let mut network = None;
    let mut isolation = None;
    let mut i = 0;
    let command = loop {
        let arg = rest.get(i)?.to_str()?;
        i += 1;
        if arg == "--" {
            break &rest[i..];
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                rest.get(i - 1)?.to_str()?
            }
        };
        if value.is_empty() || value.starts_with('-') {
            return None;
        }
        let slot_taken = match name {
            "--config" => config.replace(PathBuf::from(value)).is_some(),
            "--data-dir" => data_dir.replace(PathBuf::from(value)).is_some(),
            "--user" => user.replace(value.to_owned()).is_some(),
            "--thread" => thread.replace(value.to_owned()).is_some(),
            "--timeout" => timeout.replace(value.parse::<f64>().ok()?).is_some(),
            "--network" => network
                .replace(NetworkArg::from_str(value, false).ok()?)
                .is_some(),
            "--isolation" => isolation
                .replace(IsolationArg::from_str(value, false).ok()?)
                .is_some(),
            _ => return None,
        };
        if slot_taken {
            return None;
        }
    };
    if command.is_empty() {
        return None;
    }
    let command = command
        .iter()
        .map(|w| w.to_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()?;
    Some(ExecArgs {
        config,
        data_dir,
        user: user.unwrap_or_else(|| "default".to_owned()),
        thread: thread?,
        timeout,
        network,
        isolation,
        command,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use proptest::prelude::*;

    use super::*;

    fn os(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    /// What clap makes of `paddock {args}`, as the front parses it.
    fn by_clap(args: &[OsString]) -> Option<String> {
        let argv = std::iter::once(OsString::from("paddock")).chain(args.iter().cloned());
        crate::front::FrontCli::try_parse_from(argv)
            .ok()
            .map(|c| format!("{:?}", c.exec()))
    }

    #[test]
    fn the_plain_forms_are_read_as_clap_reads_them() {
        for a in [
            &["exec", "--data-dir", "/d", "--thread", "t", "--", "true"][..],
            &[
                "exec",
                "--data-dir=/d",
                "--thread=t",
                "--user",
                "u",
                "--",
                "echo",
                "a b",
                "--x",
            ],
            &[
                "exec",
                "--config",
                "p.yaml",
                "--data-dir",
                "/d",
                "--thread",
                "t",
                "--timeout",
                "1.5",
                "--network",
                "none",
                "--isolation",
                "none",
                "--",
                "ls -l",
            ],
            &[
                "exec",
                "--thread",
                "t",
                "--data-dir",
                "/d",
                "--timeout=30",
                "--",
                "-",
            ],
            // The data directory may come from the config file or the environment.
            &["exec", "--thread", "t", "--", "true"],
        ] {
            let args = os(a);
            let fast = parse_exec(&args).unwrap_or_else(|| panic!("not read: {a:?}"));
            assert_eq!(Some(format!("{fast:?}")), by_clap(&args), "{a:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        // One argument per word (none of these needs a space).
        for line in [
            "exec --help",
            "exec --version",
            "exec --data-dir /d --thread t",
            "exec --data-dir /d --thread t --",
            "exec --data-dir /d -- true",
            "exec --data-dir /d --thread t --thread u -- true",
            "exec --data-dir /d --thread -t -- true",
            "exec --data-dir /d --thread= -- true",
            "exec --data-dir /d --thread t --timeout soon -- true",
            "exec --data-dir /d --thread t --network wifi -- true",
            "exec --data-dir /d --thread t --bogus x -- true",
            "exec --data-dir /d --thread t true",
            "serve",
        ] {
            let a: Vec<&str> = line.split(' ').collect();
            assert!(parse_exec(&os(&a)).is_none(), "{line}");
        }
        use std::os::unix::ffi::OsStringExt;
        let mut args = os(&["exec", "--data-dir", "/d", "--thread", "t", "--"]);
        args.push(OsString::from_vec(vec![0xff, b'x']));
        assert!(parse_exec(&args).is_none(), "not UTF-8");
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("--".to_owned()),
            Just("--data-dir".to_owned()),
            Just("--thread".to_owned()),
            Just("--user".to_owned()),
            Just("--config".to_owned()),
            Just("--timeout".to_owned()),
            Just("--network".to_owned()),
            Just("--isolation".to_owned()),
            Just("--help".to_owned()),
            Just("-h".to_owned()),
            Just("--data-dir=".to_owned()),
            Just("--thread=t".to_owned()),
            Just("--timeout=1e3".to_owned()),
            Just("--network=host".to_owned()),
            Just("--isolation=isolated".to_owned()),
            Just("none".to_owned()),
            Just("loopback".to_owned()),
            Just("NONE".to_owned()),
            Just("inf".to_owned()),
            Just("-1".to_owned()),
            Just("=".to_owned()),
            "[a-z0-9/._=-]{0,6}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("none".to_owned()),
            Just("loopback".to_owned()),
            Just("host".to_owned()),
            Just("isolated".to_owned()),
            Just("1.5".to_owned()),
            Just("inf".to_owned()),
            Just("7".to_owned()),
            Just("-2".to_owned()),
            Just("a=b".to_owned()),
            "[a-zA-Z0-9/._-]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn well_formed_lines_are_read_as_clap_reads_them(
            flags in proptest::sample::subsequence(
                vec!["--user", "--config", "--timeout", "--network", "--isolation", "--data-dir"],
                0..=6,
            )
            .prop_map(|mut f| {
                f.push("--thread");
                f
            })
            .prop_shuffle(),
            values in proptest::collection::vec((value(), any::<bool>()), 7),
            words in proptest::collection::vec("[ -~]{0,8}", 1..4),
        ) {
            let mut a = vec!["exec".to_owned()];
            for (f, (v, inline)) in flags.iter().zip(&values) {
                if *inline {
                    a.push(format!("{f}={v}"));
                } else {
                    a.push((*f).to_owned());
                    a.push(v.clone());
                }
            }
            a.push("--".to_owned());
            a.extend(words);
            let os: Vec<OsString> = a.iter().map(OsString::from).collect();
            let fast = parse_exec(&os);
            if let Some(fast) = &fast {
                prop_assert_eq!(Some(format!("{fast:?}")), by_clap(&os), "{:?}", a);
            }
            // And what clap takes with plain values, this reads too (no needless clap).
            let plain = values.iter().take(flags.len()).all(|(v, _)| !v.is_empty() && !v.starts_with('-'));
            if plain && by_clap(&os).is_some() {
                prop_assert!(fast.is_some(), "{:?}", a);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn whatever_is_read_here_clap_reads_the_same(
            body in proptest::collection::vec(token(), 0..12),
            lead in proptest::collection::vec(token(), 0..3),
        ) {
            // Mostly well-formed lines with noise around them, and pure noise.
            let mut args = vec!["exec".to_owned()];
            args.extend(lead);
            args.extend(["--data-dir".to_owned(), "/d".to_owned(), "--thread".to_owned(), "t".to_owned()]);
            args.extend(body);
            for a in [args.clone(), args[..args.len().min(3)].to_vec()] {
                let os: Vec<OsString> = a.iter().map(OsString::from).collect();
                if let Some(fast) = parse_exec(&os) {
                    prop_assert_eq!(Some(format!("{fast:?}")), by_clap(&os), "{:?}", a);
                }
            }
        }
    }
}
