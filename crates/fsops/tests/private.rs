//! What the file API creates in a thread's data is private to the sandbox's uid when asked
//! (`private_user_data`): files 0600, directories 0700, uploads' temp files included; in
//! other mounts (the operator's) and with the option off (another program's data) modes are
//! as before.

mod common;

use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{WS, fixture};
use paddock_core::sandbox::{WriteBytes, WriteText};
use paddock_fsops::{FsOps, FsOptions};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("lstat").mode() & 0o777
}

#[test]
fn new_files_and_directories_in_a_thread_s_data_are_private() {
    // The modes below are those asked for, less the umask: make the umask not matter.
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let f = fixture();
    for private in [true, false] {
        let ops = FsOps::new(
            f.table.clone(),
            FsOptions {
                private_user_data: private,
                ..FsOptions::default()
            },
        );
        let sub = if private { "p" } else { "o" };
        ops.write_text(&WriteText {
            path: format!("{WS}/{sub}/a/b.txt"),
            content: "x".into(),
            append: false,
        })
        .expect("write");
        ops.write_from_reader(
            &WriteBytes {
                path: format!("/mnt/user-data/uploads/{sub}.bin"),
                ..Default::default()
            },
            &mut Cursor::new(b"bytes".to_vec()),
        )
        .expect("upload");
        ops.write_text(&WriteText {
            path: format!("/srv/rw/{sub}/c.txt"),
            content: "x".into(),
            append: false,
        })
        .expect("write in a custom mount");
        let (file, dir) = if private {
            (0o600, 0o700)
        } else {
            (0o644, 0o755)
        };
        assert_eq!(mode(&f.ws.join(sub)), dir, "private: {private}");
        assert_eq!(mode(&f.ws.join(sub).join("a")), dir, "private: {private}");
        assert_eq!(
            mode(&f.ws.join(sub).join("a/b.txt")),
            file,
            "private: {private}"
        );
        assert_eq!(mode(&f.uploads.join(format!("{sub}.bin"))), file);
        // The operator's mounts keep the usual modes either way.
        assert_eq!(mode(&f.srv.join(sub)), 0o755);
        assert_eq!(mode(&f.srv.join(sub).join("c.txt")), 0o644);
    }
    rustix::process::umask(old);
}

#[test]
fn a_mount_with_its_own_owner_gets_what_is_created_in_it() {
    if !common::have_root("per-mount owners") {
        return;
    }
    let f = fixture();
    let ops = FsOps::new(
        f.table.clone(),
        FsOptions {
            owner: Some((951_501, 951_502)),
            mount_owners: vec![(
                paddock_core::VirtualPath::parse("/srv/rw").expect("vp"),
                (4242, 4243),
            )],
            ..FsOptions::default()
        },
    );
    let owner = |p: &Path| {
        let m = std::fs::symlink_metadata(p).expect("lstat");
        (m.uid(), m.gid())
    };
    for (dir, host, want) in [
        (WS.to_owned(), f.ws.clone(), (951_501, 951_502)),
        ("/srv/rw".to_owned(), f.srv.clone(), (4242, 4243)),
    ] {
        ops.write_text(&WriteText {
            path: format!("{dir}/made/t.txt"),
            content: "x".into(),
            append: false,
        })
        .expect("write");
        ops.write_from_reader(
            &WriteBytes {
                path: format!("{dir}/made/u.bin"),
                ..Default::default()
            },
            &mut Cursor::new(b"bytes".to_vec()),
        )
        .expect("upload");
        for p in ["made", "made/t.txt", "made/u.bin"] {
            assert_eq!(owner(&host.join(p)), want, "{dir}/{p}");
        }
    }
}
