//! The settings of each subcommand, resolved from lines and variables as a user gives them.

use std::collections::HashMap;

use clap::Parser as _;

use super::*;
use crate::args::{Cli, Command};

fn parse<S: AsRef<str>>(line: &[S]) -> Command {
    Cli::try_parse_from(std::iter::once("paddock").chain(line.iter().map(AsRef::as_ref)))
        .expect("parses")
        .command
}

fn file(text: &str) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("paddock.yaml");
    std::fs::write(&p, text).expect("write");
    let p = p.to_string_lossy().into_owned();
    (d, p)
}

/// A lookup over `pairs` only.
fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| m.get(k).cloned()
}

fn exec<S: AsRef<str>>(line: &[S], env: &[(&str, &str)]) -> ExecSettings {
    let Command::Exec(a) = parse(line) else {
        panic!("not exec")
    };
    super::exec(a, &vars(env)).expect("resolves")
}

fn agent<S: AsRef<str>>(line: &[S], env: &[(&str, &str)]) -> Result<AgentSettings, SettingsError> {
    let Command::Agent(a) = parse(line) else {
        panic!("not agent")
    };
    super::agent(a, &vars(env))
}

fn mcp<S: AsRef<str>>(line: &[S], env: &[(&str, &str)]) -> Result<McpSettings, SettingsError> {
    let Command::Mcp(a) = parse(line) else {
        panic!("not mcp")
    };
    super::mcp(a, &vars(env))
}

fn serve<S: AsRef<str>>(line: &[S], env: &[(&str, &str)]) -> ServeSettings {
    let Command::Serve(a) = parse(line) else {
        panic!("not serve")
    };
    super::serve(a, &vars(env)).expect("resolves")
}

fn doctor<S: AsRef<str>>(line: &[S], env: &[(&str, &str)]) -> DoctorSettings {
    let Command::Doctor(a) = parse(line) else {
        panic!("not doctor")
    };
    super::doctor(a, &vars(env)).expect("resolves")
}

fn local_data_dir(s: &McpSettings) -> &Path {
    match &s.options.source {
        paddock_mcp::cli::SandboxSourceOptions::Local { data_dir, .. } => data_dir,
        other => panic!("not local: {other:?}"),
    }
}

/// `data_dir` resolves the same way in every subcommand that uses it: the default,
/// then the file, then `PADDOCK_DATA_DIR`, then `--data-dir`.
#[test]
fn data_dir_resolves_alike_everywhere() {
    let (_d, cfg) = file("data_dir: /from/file\n");
    let env = [("PADDOCK_DATA_DIR", "/from/env")];
    let token = [("PADDOCK_AGENT_TOKEN", "tok")];
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
    let cases: [Case<'_>; 4] = [
        (&[], None, "./.paddock"),
        (&[], Some(cfg.as_str()), "/from/file"),
        (&env, Some(cfg.as_str()), "/from/env"),
        (&env, Some(cfg.as_str()), "/from/flag"),
    ];
    for (i, (env, config, want)) in cases.into_iter().enumerate() {
        let mut line: Vec<&str> = Vec::new();
        if let Some(c) = config {
            line.extend(["--config", c]);
        }
        if i == 3 {
            line.extend(["--data-dir", "/from/flag"]);
        }
        let with = |sub: &[&'static str], tail: &[&'static str]| -> Vec<String> {
            sub.iter()
                .chain(&line)
                .chain(tail)
                .map(|w| (*w).to_owned())
                .collect()
        };
        let mut env_and_token: Vec<(&str, &str)> = env.to_vec();
        env_and_token.extend(token);
        let want = Path::new(want);
        let e = exec(&with(&["exec", "--thread", "t"], &["--", "true"]), env);
        assert_eq!(e.job.data_dir, want, "exec, case {i}");
        let a = agent(&with(&["agent"], &[]), &env_and_token).expect("agent");
        assert_eq!(a.data_dir, want, "agent, case {i}");
        let m = mcp(&with(&["mcp", "--thread", "t"], &[]), env).expect("mcp");
        assert_eq!(local_data_dir(&m), want, "mcp, case {i}");
        let s = serve(&with(&["serve"], &[]), env);
        assert_eq!(s.config.data_dir, want, "serve, case {i}");
        let d = doctor(&with(&["doctor"], &[]), env);
        assert_eq!(d.context.layout.root(), want, "doctor, case {i}");
    }
}

/// A flag given with the default's value still wins over the file.
#[test]
fn a_given_flag_wins_even_with_the_default_value() {
    let (_d, cfg) = file(
        "sandbox:\n  isolation: none\n  network: host\nagent:\n  max_body_bytes: 1000\n  \
         max_upload_bytes: 2000\ntools:\n  bash_timeout_secs: 5\n",
    );
    let token = [("PADDOCK_AGENT_TOKEN", "tok")];
    let a = agent(&["agent", "--config", &cfg], &token).expect("agent");
    assert_eq!(a.sandbox.isolation, paddock_runtime::Isolation::None);
    assert_eq!(a.sandbox.network, paddock_runtime::Network::Host);
    assert_eq!(
        (a.agent.max_body_bytes, a.agent.max_upload_bytes),
        (1000, 2000)
    );
    let a = agent(
        &[
            "agent",
            "--config",
            &cfg,
            "--isolation",
            "isolated",
            "--network",
            "none",
            "--max-body-bytes",
            "67108864",
            "--max-upload-bytes",
            "1073741824",
        ],
        &token,
    )
    .expect("agent");
    assert_eq!(a.sandbox.isolation, paddock_runtime::Isolation::Isolated);
    assert_eq!(a.sandbox.network, paddock_runtime::Network::None);
    assert_eq!(
        (a.agent.max_body_bytes, a.agent.max_upload_bytes),
        (64 << 20, 1 << 30)
    );
    let e = exec(
        &[
            "exec",
            "--config",
            &cfg,
            "--thread",
            "t",
            "--isolation",
            "isolated",
            "--network",
            "none",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(e.sandbox.isolation, paddock_runtime::Isolation::Isolated);
    assert_eq!(e.sandbox.network, paddock_runtime::Network::None);
    let m = mcp(
        &[
            "mcp",
            "--config",
            &cfg,
            "--thread",
            "t",
            "--isolation",
            "isolated",
            "--bash-timeout-secs",
            "600",
        ],
        &[],
    )
    .expect("mcp");
    assert_eq!(m.options.tools.bash_timeout_secs, 600.0);
    let paddock_mcp::cli::SandboxSourceOptions::Local { runtime, .. } = &m.options.source else {
        panic!("local")
    };
    assert_eq!(runtime.isolation, paddock_runtime::Isolation::Isolated);
}

/// `paddock agent` takes its `agent:` and `tools:` sections, and their variables.
#[test]
fn the_agent_reads_its_sections_and_their_variables() {
    let (_d, cfg) = file(
        "agent:\n  max_read_bytes: 4096\n  max_concurrent_heavy_per_sandbox: 3\n\
         tools:\n  grep_max_results: 7\nserver:\n  max_connections: 9\n",
    );
    let a = agent(
        &["agent", "--config", &cfg],
        &[
            ("PADDOCK_AGENT_TOKEN", " tok \n"),
            ("PADDOCK_AGENT_MAX_BODY_BYTES", "12345"),
            ("PADDOCK_BASH_TIMEOUT_SECS", "9"),
        ],
    )
    .expect("agent");
    assert_eq!(a.token.as_deref(), Some("tok"));
    assert_eq!(a.agent.max_body_bytes, 12345);
    assert_eq!(a.agent.max_read_bytes, 4096);
    assert_eq!(a.agent.max_concurrent_heavy_per_sandbox, 3);
    assert_eq!(a.tools.grep_max_results, 7);
    assert_eq!(a.tools.bash_timeout_secs, 9.0);
    assert_eq!(a.listen_limits.max_connections, 9);
    assert!(!format!("{a:?}").contains("tok\""), "the token is redacted");
}

#[test]
fn the_agent_token_comes_from_a_file_or_the_environment_or_nowhere_on_request() {
    let d = tempfile::tempdir().expect("tempdir");
    let f = d.path().join("token");
    std::fs::write(&f, "from-file\n").expect("write");
    let f = f.to_string_lossy().into_owned();
    let env = [("PADDOCK_AGENT_TOKEN", "from-env")];
    let a = agent(&["agent", "--token-file", &f], &env).expect("file");
    assert_eq!(a.token.as_deref(), Some("from-file"));
    let a = agent(&["agent"], &env).expect("env");
    assert_eq!(a.token.as_deref(), Some("from-env"));
    let a = agent(&["agent", "--insecure-no-auth"], &[]).expect("insecure");
    assert_eq!(a.token, None);
    let e = agent(&["agent"], &[]).expect_err("none").to_string();
    assert!(
        e.starts_with("no agent token configured") && e.contains("PADDOCK_AGENT_TOKEN"),
        "{e}"
    );
    let e = agent(&["agent"], &[("PADDOCK_AGENT_TOKEN", "a/b")])
        .expect_err("slash")
        .to_string();
    assert!(e.contains("may not contain '/'"), "{e}");
    let e = agent(&["agent", "--token-file", "/nonexistent/t"], &env)
        .expect_err("missing file")
        .to_string();
    assert!(
        e.starts_with("could not read the token file /nonexistent/t: "),
        "{e}"
    );
    let e = agent(&["agent", "--user", "a b"], &env)
        .expect_err("bad user")
        .to_string();
    assert!(e.contains("user"), "{e}");
}

/// `paddock mcp` reads the file: `sandbox:`, `tools:`, `api_key`.
#[test]
fn mcp_reads_the_file() {
    let (_d, cfg) = file(
        "sandbox:\n  network: host\n  isolation: none\ntools:\n  bash_timeout_secs: 3\n\
         api_key: from-file\n",
    );
    let m = mcp(&["mcp", "--config", &cfg, "--thread", "t"], &[]).expect("local");
    assert_eq!(m.options.tools.bash_timeout_secs, 3.0);
    assert_eq!(m.log, "warn");
    let paddock_mcp::cli::SandboxSourceOptions::Local { runtime, .. } = &m.options.source else {
        panic!("local")
    };
    assert_eq!(
        (runtime.isolation, runtime.network),
        (
            paddock_runtime::Isolation::None,
            paddock_runtime::Network::Host
        )
    );
    let line = [
        "mcp",
        "--config",
        &cfg,
        "--thread",
        "t",
        "--provisioner",
        "http://127.0.0.1:1",
    ];
    let key = |m: &McpSettings| match &m.options.source {
        paddock_mcp::cli::SandboxSourceOptions::Provisioner { api_key, .. } => api_key.clone(),
        other => panic!("not a provisioner: {other:?}"),
    };
    assert_eq!(key(&mcp(&line, &[]).expect("file key")), "from-file");
    let env = [("PADDOCK_API_KEY", "from-env"), ("PADDOCK_LOG", "debug")];
    let m = mcp(&line, &env).expect("env key");
    assert_eq!((key(&m).as_str(), m.log.as_str()), ("from-env", "debug"));
    let mut flagged = line.to_vec();
    flagged.extend(["--api-key", "from-flag"]);
    assert_eq!(key(&mcp(&flagged, &env).expect("flag key")), "from-flag");
    let d = tempfile::tempdir().expect("tempdir");
    let kf = d.path().join("key");
    std::fs::write(&kf, " from-key-file\n").expect("write");
    let (_d2, cfg2) = file(&format!("api_key_file: {}\n", kf.display()));
    let m = mcp(
        &[
            "mcp",
            "--config",
            &cfg2,
            "--thread",
            "t",
            "--provisioner",
            "https://x",
        ],
        &[],
    )
    .expect("key file");
    assert_eq!(key(&m), "from-key-file");
}

/// Bad flags of `paddock mcp` are refused before anything starts, naming the flag.
#[test]
fn mcp_refuses_bad_flags_naming_them() {
    let err = |line: &[&str]| mcp(line, &[]).expect_err("must fail").to_string();
    assert!(err(&["mcp", "--thread", "../x"]).starts_with("--thread: "));
    assert!(err(&["mcp", "--thread", "t", "--user", "a b"]).starts_with("--user: "));
    let p = [
        "mcp",
        "--thread",
        "t",
        "--provisioner",
        "http://127.0.0.1:1",
    ];
    assert!(err(&p).contains("--api-key"));
    let mut a = p.to_vec();
    a.extend(["--api-key", "k", "--sandbox-id", "Not_Valid"]);
    assert!(err(&a).starts_with("--sandbox-id: "));
    assert!(
        err(&[
            "mcp",
            "--thread",
            "t",
            "--provisioner",
            "ftp://x",
            "--api-key",
            "k"
        ])
        .contains("must start with http")
    );
    assert!(
        err(&["mcp", "--thread", "t", "--bash-timeout-secs=-1"]).contains("--bash-timeout-secs")
    );
}

/// The precedence of `paddock serve`: defaults < file < environment < flags.
#[test]
fn serve_layers_in_order() {
    let (_d, cfg) = file("listen: 127.0.0.1:9001\npublic_url: http://file\n");
    let s = serve(&["serve", "--config", &cfg], &[]);
    assert_eq!(s.config.listen.to_string(), "127.0.0.1:9001");
    let env = [
        ("PADDOCK_LISTEN", "127.0.0.1:9002"),
        ("PADDOCK_API_KEY", "env-key"),
    ];
    let s = serve(&["serve", "--config", &cfg], &env);
    assert_eq!(s.config.listen.to_string(), "127.0.0.1:9002");
    assert_eq!(
        (s.config.api_key.as_deref(), s.api_key_on_argv),
        (Some("env-key"), false)
    );
    let s = serve(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:8002",
            "--api-key",
            "flag-key",
            "--public-url",
            "http://flag",
        ],
        &env,
    );
    assert_eq!(s.config.listen.to_string(), "127.0.0.1:8002");
    assert_eq!(
        (s.config.api_key.as_deref(), s.api_key_on_argv),
        (Some("flag-key"), true)
    );
    assert_eq!(s.config.public_url.as_deref(), Some("http://flag"));
}

/// `paddock exec` reads `PADDOCK_LOG` alone, not the file's `log.level`.
#[test]
fn exec_logs_by_the_variable_only() {
    let (_d, cfg) = file("log:\n  level: debug\n");
    let line = ["exec", "--config", &cfg, "--thread", "t", "--", "true"];
    assert_eq!(exec(&line, &[]).log, None);
    assert_eq!(
        exec(&line, &[("PADDOCK_LOG", "info")]).log.as_deref(),
        Some("info")
    );
}

#[test]
fn settings_errors_name_what_is_wrong_and_hint_where_to_look() {
    let (_d, cfg) = file("mounts:\n  custom:\n    - {host_path: /etc, container_path: /x}\n");
    let Command::Serve(a) = parse(&["serve", "--config", &cfg]) else {
        panic!("serve")
    };
    let e = super::serve(a, &vars(&[])).expect_err("mounts");
    assert!(e.to_string().starts_with("invalid mounts.custom: "), "{e}");
    assert!(e.hint().is_some_and(|h| h.contains("allowed_host_roots")));
    let (_d, cfg) = file("deerflow:\n  host_base_dir: /nonexistent/deerflow\n");
    let Command::Serve(a) = parse(&["serve", "--config", &cfg]) else {
        panic!("serve")
    };
    let e = super::serve(a, &vars(&[])).expect_err("gateway");
    assert_eq!(
        e.to_string(),
        "deerflow.host_base_dir (DEER_FLOW_HOST_BASE_DIR) /nonexistent/deerflow is not a directory"
    );
    let Command::Exec(a) = parse(&["exec", "--thread", "t", "--", "true"]) else {
        panic!("exec")
    };
    let e = super::exec(a, &vars(&[("PADDOCK_EXEC_TIMEOUT_SECS", "soon")])).expect_err("env");
    assert!(e.to_string().contains("PADDOCK_EXEC_TIMEOUT_SECS"), "{e}");
    assert_eq!(
        e.hint(),
        Some("every key is documented in docs/configuration.md")
    );
}
