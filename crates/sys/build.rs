//! Builds the two small programs Paddock puts into jails and leaves them in `OUT_DIR` for
//! the crate to embed: the shell preload (`zygote/zygote.rs`, a shared object) and a
//! sandbox's init (`init/init.rs`, a static executable). Each is compiled on its own by the
//! same rustc: a `no_std` artefact needs `panic = "abort"`, which a workspace profile cannot
//! set for one crate.
use std::path::{Path, PathBuf};
use std::process::Command;

fn rustc(out: &Path, name: &str, crate_type: &str, src: &str, extra: &[&str]) {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET");
    let mut c = Command::new(rustc);
    c.args([
        "--edition",
        "2024",
        "--crate-type",
        crate_type,
        "--crate-name",
        name,
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
    .args(extra)
    .arg("-o")
    .arg(out)
    .arg(src);
    let status = c.status().expect("run rustc");
    assert!(status.success(), "building {src} failed: {status}");
}

fn main() {
    for f in [
        "zygote/zygote.rs",
        "zygote/proto.rs",
        "init/init.rs",
        "init/proto.rs",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    rustc(
        &out.join("zygote.so"),
        "paddock_zygote",
        "cdylib",
        "zygote/zygote.rs",
        &[],
    );
    // Static glibc needs libgcc_eh for its own (unused here) cancellation unwinding.
    rustc(
        &out.join("paddock-init"),
        "paddock_init",
        "bin",
        "init/init.rs",
        &[
            "-C",
            "target-feature=+crt-static",
            "-C",
            "link-arg=-lgcc_eh",
        ],
    );
}
