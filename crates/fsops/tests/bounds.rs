//! What one request may make the server hold or write: a `str_replace` result is sized from
//! its match count and refused over the cap before it exists, a text read honours the
//! request's own bound, and an upload fed in pieces keeps its cap and leaves nothing behind
//! when abandoned.

mod common;

use common::{WS, fixture, w};
use paddock_core::SandboxError;
use paddock_core::sandbox::{ReadText, StrReplace, WriteBytes};
use paddock_fsops::{FsOps, FsOptions};

fn replace(path: &str, old: &str, new: &str, all: bool, max: Option<u64>) -> StrReplace {
    StrReplace {
        path: format!("{WS}/{path}"),
        old: old.into(),
        new: new.into(),
        replace_all: all,
        expect_unique: false,
        max_bytes: max,
    }
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part"))
        .collect()
}

#[test]
fn replace_all_blow_up_is_refused_before_it_is_built() {
    let f = fixture();
    // 100,000 one-byte matches, each to become 1,000 bytes: a 100 MB result from 100 KB.
    let original = "a".repeat(100_000);
    w(&f.ws.join("bomb.txt"), &original);
    let ops = FsOps::new(
        f.table.clone(),
        FsOptions {
            text_cap_bytes: 1 << 20,
            ..FsOptions::default()
        },
    );
    let e = ops
        .str_replace(&replace("bomb.txt", "a", &"b".repeat(1000), true, None))
        .expect_err("blow-up");
    assert_eq!(
        e,
        SandboxError::ResultTooLarge {
            path: format!("{WS}/bomb.txt"),
            field: "new".into(),
            size: 100_000_000,
            limit: 1 << 20,
        }
    );
    assert_eq!(e.code(), "too_large");
    assert!(
        e.to_string().contains("over the limit of 1048576 bytes"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(f.ws.join("bomb.txt")).expect("read"),
        original,
        "the file is unchanged"
    );
    assert!(leftovers(&f.ws).is_empty());

    // The request's own bound is lower still; the upload cap holds too.
    let e = ops
        .str_replace(&replace("bomb.txt", "a", "bb", true, Some(150_000)))
        .expect_err("request bound");
    assert!(
        matches!(
            e,
            SandboxError::ResultTooLarge {
                size: 200_000,
                limit: 150_000,
                ..
            }
        ),
        "{e:?}"
    );
    let upload_capped = FsOps::new(
        f.table.clone(),
        FsOptions {
            upload_cap_bytes: 150_000,
            ..FsOptions::default()
        },
    );
    let e = upload_capped
        .str_replace(&replace("bomb.txt", "a", "bb", true, None))
        .expect_err("write cap");
    assert!(
        matches!(e, SandboxError::ResultTooLarge { limit: 150_000, .. }),
        "{e:?}"
    );

    // Within the cap, growth and shrinking both work and are exact.
    let out = ops
        .str_replace(&replace("bomb.txt", "a", "xyz", true, None))
        .expect("grow");
    assert_eq!(out.replacements, 100_000);
    let grown = std::fs::read_to_string(f.ws.join("bomb.txt")).expect("read");
    assert_eq!(grown.len(), 300_000);
    assert_eq!(grown, "xyz".repeat(100_000));
    let out = ops
        .str_replace(&replace("bomb.txt", "xyz", "", true, None))
        .expect("shrink");
    assert_eq!(out.replacements, 100_000);
    assert_eq!(
        std::fs::metadata(f.ws.join("bomb.txt")).expect("md").len(),
        0
    );
    // Exactly at the cap is allowed; one byte over is not.
    w(&f.ws.join("edge.txt"), "abc");
    ops.str_replace(&replace("edge.txt", "b", "BB", false, Some(4)))
        .expect("exactly at the cap");
    assert_eq!(
        std::fs::read_to_string(f.ws.join("edge.txt")).expect("read"),
        "aBBc"
    );
    let e = ops
        .str_replace(&replace("edge.txt", "c", "cc", false, Some(4)))
        .expect_err("one over");
    assert!(
        matches!(
            e,
            SandboxError::ResultTooLarge {
                size: 5,
                limit: 4,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_file_over_the_request_bound_is_not_loaded() {
    let f = fixture();
    w(&f.ws.join("big.txt"), &"x".repeat(5000));
    let ops = f.ops(false);
    let req = ReadText {
        max_bytes: Some(4096),
        ..ReadText::new(format!("{WS}/big.txt"))
    };
    assert_eq!(
        ops.read_text(&req).expect_err("over"),
        SandboxError::TooLarge {
            path: format!("{WS}/big.txt"),
            size: 5000,
            limit: 4096
        }
    );
    // A request cannot raise the server's cap.
    let small = FsOps::new(
        f.table.clone(),
        FsOptions {
            text_cap_bytes: 1000,
            ..FsOptions::default()
        },
    );
    let req = ReadText {
        max_bytes: Some(1 << 30),
        ..ReadText::new(format!("{WS}/big.txt"))
    };
    assert!(matches!(
        small.read_text(&req).expect_err("server cap"),
        SandboxError::TooLarge { limit: 1000, .. }
    ));
    let e = ops
        .str_replace(&replace("big.txt", "x", "y", false, Some(4096)))
        .expect_err("source over the bound");
    assert!(
        matches!(
            e,
            SandboxError::TooLarge {
                size: 5000,
                limit: 4096,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn uploads_fed_in_pieces_keep_their_cap_and_leave_nothing_when_abandoned() {
    let f = fixture();
    w(&f.ws.join("keep.txt"), "old");
    for (i, ops) in [f.ops(false), f.ops(true)].into_iter().enumerate() {
        let one = format!("up/one-{i}.bin");
        let req = |p: &str, append, max| WriteBytes {
            path: format!("{WS}/{p}"),
            append,
            max_bytes: max,
        };
        // Byte by byte, as a trickling client would send it.
        let mut up = ops.begin_write(&req(&one, false, None)).expect("begin");
        for b in b"trickle" {
            up.write(&[*b]).expect("byte");
        }
        assert_eq!(up.written(), 7);
        assert!(
            !f.ws.join(&one).exists(),
            "nothing visible before the finish"
        );
        let out = up.finish().expect("finish");
        assert_eq!(out.bytes_written, 7);
        assert_eq!(out.path, format!("{WS}/{one}"));
        assert_eq!(std::fs::read(f.ws.join(&one)).expect("read"), b"trickle");

        // Past the cap: refused, and dropping the upload leaves the target as it was.
        let mut up = ops
            .begin_write(&req("keep.txt", false, Some(5)))
            .expect("begin");
        up.write(b"abc").expect("within");
        let e = up.write(b"def").expect_err("over the cap");
        assert_eq!(
            e,
            SandboxError::TooLarge {
                path: format!("{WS}/keep.txt"),
                size: 6,
                limit: 5
            }
        );
        drop(up);
        assert_eq!(
            std::fs::read_to_string(f.ws.join("keep.txt")).expect("read"),
            "old"
        );
        assert!(leftovers(&f.ws).is_empty(), "{:?}", leftovers(&f.ws));

        // An abandoned append (the client went away) is cut back.
        let mut up = ops
            .begin_write(&req("keep.txt", true, None))
            .expect("begin");
        up.write(b" and more").expect("append");
        drop(up);
        assert_eq!(
            std::fs::read_to_string(f.ws.join("keep.txt")).expect("read"),
            "old"
        );
        // A finished append stays.
        let mut up = ops
            .begin_write(&req("keep.txt", true, None))
            .expect("begin");
        up.write(b"!").expect("append");
        up.finish().expect("finish");
        assert_eq!(
            std::fs::read_to_string(f.ws.join("keep.txt")).expect("read"),
            "old!"
        );
        std::fs::write(f.ws.join("keep.txt"), "old").expect("reset");
    }
}
