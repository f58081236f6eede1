//! Every operation closes what it opens, on success and on refusal: the agent serves many
//! requests from one long-lived process, so a leaked fd per request would exhaust it.
//! (Alone in its binary so no concurrent test opens fds meanwhile.)

mod common;

use std::io::Cursor;

use common::{WS, fixture};
use paddock_core::sandbox::{Glob, Grep, List, ReadText, StrReplace, WriteBytes, WriteText};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn operations_do_not_leak_descriptors() {
    let f = fixture();
    let round = |force_walk: bool, i: usize| {
        let ops = f.ops(force_walk);
        let _ = ops.read_text(&ReadText::new(format!("{WS}/rel_ok")));
        let _ = ops.read_text(&ReadText::new(format!("{WS}/etc_link/passwd")));
        let _ = ops.read_text(&ReadText::new(format!("{WS}/fifo")));
        let _ = ops.stat(&format!("{WS}/loop_a"));
        let _ = ops.list(&List::new(WS));
        let _ = ops.glob(&Glob::new(WS, "**/*.txt"));
        let _ = ops.grep(&Grep::new(WS, "needle"));
        let _ = ops.write_text(&WriteText {
            path: format!("{WS}/w/{i}.txt"),
            content: "x".into(),
            append: false,
        });
        let _ = ops.write_from_reader(
            &WriteBytes {
                path: format!("{WS}/up.bin"),
                append: false,
                max_bytes: Some(2),
            },
            &mut Cursor::new(b"too big".to_vec()),
        );
        let _ = ops.str_replace(&StrReplace {
            path: format!("{WS}/w/{i}.txt"),
            old: "x".into(),
            new: "y".into(),
            ..Default::default()
        });
    };
    round(false, 0);
    round(true, 0);
    let before = open_fds();
    for i in 1..200 {
        round(i % 2 == 0, i);
    }
    let after = open_fds();
    assert!(after <= before, "fds before {before}, after {after}");
}
