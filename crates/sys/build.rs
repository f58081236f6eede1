//! Builds the shell preload (`zygote/zygote.rs`, see its docs) as a shared object and
//! leaves it in `OUT_DIR` for `jail.rs` to embed. It is compiled on its own by the same
//! rustc: a `no_std` cdylib needs `panic = "abort"`, which a workspace profile cannot set
//! for one crate.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=zygote/zygote.rs");
    println!("cargo:rerun-if-changed=zygote/proto.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET");
    let mut c = Command::new(rustc);
    c.args([
        "--edition",
        "2024",
        "--crate-type",
        "cdylib",
        "--crate-name",
        "paddock_zygote",
    ])
    .args([
        "-C",
        "panic=abort",
        "-C",
        "opt-level=2",
        "-C",
        "strip=symbols",
    ])
    .args(["-C", "debuginfo=0", "--target", &target])
    .arg("-o")
    .arg(out.join("zygote.so"))
    .arg("zygote/zygote.rs");
    let status = c.status().expect("run rustc for the shell preload");
    assert!(
        status.success(),
        "building the shell preload failed: {status}"
    );
}
