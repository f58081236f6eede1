//! Settings are resolved once, in the `paddock` binary (`crates/cli/src/settings.rs`),
//! and handed to the libraries as typed values: no library parses a command line. The
//! proof is in the dependency graph: only the binary crate depends on clap (and the
//! Kubernetes API simulator, a test tool with a command line of its own).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a panic is the failure report

use serde_json::Value;

/// Packages allowed to depend on clap, and why.
const MAY_PARSE_FLAGS: &[(&str, &str)] = &[
    (
        "paddock-cli",
        "the binary: resolves every subcommand's settings",
    ),
    (
        "paddock-kubesim",
        "a test tool: the Kubernetes API simulator's own binary",
    ),
];

#[test]
fn only_the_binary_crate_depends_on_clap() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    assert!(
        packages.iter().any(|p| p["name"] == "paddock-runtime"),
        "the workspace's packages are listed"
    );
    let mut offenders = Vec::new();
    for p in packages {
        let name = p["name"].as_str().expect("name");
        let uses_clap = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .any(|d| d["name"] == "clap" && d["kind"].is_null());
        if uses_clap && !MAY_PARSE_FLAGS.iter().any(|(n, _)| *n == name) {
            offenders.push(name.to_owned());
        }
    }
    assert!(
        offenders.is_empty(),
        "these crates depend on clap, but only the binary parses flags (settings are \
         resolved in crates/cli/src/settings.rs and passed down as typed options): {offenders:?}"
    );
}
