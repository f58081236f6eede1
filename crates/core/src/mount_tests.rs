//! Tests of the mount table: resolution rules, custom-mount validation, reverse mapping.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::error::SandboxError;
use crate::ids::{ThreadId, UserId};
use crate::layout::DataLayout;
use crate::mount::*;
use crate::vpath::VirtualPath;

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    table: MountTable,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let layout = DataLayout::new(root.join("data"));
    let table = MountTable::for_thread(
        &layout,
        &UserId::new("u1").unwrap(),
        &ThreadId::new("t1").unwrap(),
        vec![],
    )
    .unwrap();
    Fx {
        _tmp: tmp,
        root,
        table,
    }
}

fn ws(f: &Fx) -> PathBuf {
    f.root.join("data/users/u1/threads/t1/user-data/workspace")
}

fn code(r: Result<impl std::fmt::Debug, SandboxError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

const FOLLOW: WalkOptions = WalkOptions {
    follow_final: true,
    create_parents: false,
};

#[test]
fn longest_prefix_on_segments() {
    let f = fx();
    let l = f.table.locate("/mnt/user-data/workspace/a.txt").unwrap();
    assert_eq!(l.mount.kind, MountKind::Workspace);
    assert_eq!(l.rel, "a.txt");
    let l = f.table.locate("/mnt/user-data/notes.txt").unwrap();
    assert_eq!(l.mount.kind, MountKind::UserData);
    let l = f.table.locate("/mnt/skills/custom/x").unwrap();
    assert_eq!(l.mount.kind, MountKind::CustomSkills);
    assert_eq!(code(f.table.locate("/mnt/user-data-x/a")), "access_denied");
    assert!(matches!(
        f.table.locate("/mnt/user-data-x/a"),
        Err(SandboxError::Unmapped { .. })
    ));
    assert_eq!(code(f.table.locate("/mnt/skillsx")), "access_denied");
    assert_eq!(code(f.table.locate("/etc/passwd")), "access_denied");
    assert_eq!(code(f.table.locate("/mnt")), "access_denied");
}

#[test]
fn dotdot_may_not_leave_the_starting_mount() {
    let f = fx();
    assert!(f.table.locate("/mnt/user-data/workspace/a/../b").is_ok());
    for p in [
        "/mnt/user-data/workspace/../uploads/x",
        "/mnt/user-data/workspace/..",
        "/mnt/../mnt/user-data/workspace",
        "/mnt/user-data/workspace/../../../etc/passwd",
        "/..",
    ] {
        assert!(
            matches!(f.table.locate(p), Err(SandboxError::Escape { .. })),
            "{p}"
        );
    }
}

#[test]
fn invalid_paths_are_refused() {
    let f = fx();
    assert_eq!(code(f.table.locate("relative")), "invalid_path");
    assert_eq!(code(f.table.locate("/mnt/user-data/\0x")), "invalid_path");
    assert_eq!(code(f.table.locate("")), "invalid_path");
}

#[test]
fn walk_follows_symlinks_inside_the_mount() {
    let f = fx();
    std::fs::create_dir_all(ws(&f).join("d")).unwrap();
    std::fs::write(ws(&f).join("d/f.txt"), "x").unwrap();
    symlink("d/f.txt", ws(&f).join("rel")).unwrap();
    symlink("/mnt/user-data/workspace/d", ws(&f).join("abs")).unwrap();
    let (host, w) = f
        .table
        .resolve_host("/mnt/user-data/workspace/rel", FOLLOW)
        .unwrap();
    assert_eq!(host, ws(&f).join("d/f.txt"));
    assert_eq!(w.vpath.as_str(), "/mnt/user-data/workspace/d/f.txt");
    let (host, _) = f
        .table
        .resolve_host("/mnt/user-data/workspace/abs/f.txt", FOLLOW)
        .unwrap();
    assert_eq!(host, ws(&f).join("d/f.txt"));
    // Not following the final symlink names the link itself.
    let (_, w) = f
        .table
        .resolve_host("/mnt/user-data/workspace/rel", WalkOptions::default())
        .unwrap();
    assert!(matches!(
        w.target,
        Target::Entry {
            node: Node::Symlink(_),
            ..
        }
    ));
}

#[test]
fn walk_refuses_symlink_escapes() {
    let f = fx();
    symlink("/etc", ws(&f).join("etc")).unwrap();
    symlink("../../../../../../../../etc/passwd", ws(&f).join("up")).unwrap();
    symlink("/mnt/user-data/uploads", ws(&f).join("other-mount")).unwrap();
    symlink(f.root.join("data"), ws(&f).join("hostabs")).unwrap();
    symlink("loop2", ws(&f).join("loop1")).unwrap();
    symlink("loop1", ws(&f).join("loop2")).unwrap();
    for (p, want) in [
        ("/mnt/user-data/workspace/etc/passwd", "access_denied"),
        ("/mnt/user-data/workspace/up", "access_denied"),
        ("/mnt/user-data/workspace/other-mount/x", "access_denied"),
        ("/mnt/user-data/workspace/hostabs/users", "access_denied"),
        ("/mnt/user-data/workspace/loop1", "symlink_loop"),
        ("/mnt/user-data/workspace/missing/x", "not_found"),
    ] {
        assert_eq!(code(f.table.resolve_host(p, FOLLOW)), want, "{p}");
    }
}

#[test]
fn read_only_through_symlink_into_nested_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    std::fs::create_dir_all(base.join("outer/inner")).unwrap();
    std::fs::create_dir_all(base.join("ro")).unwrap();
    std::fs::write(base.join("ro/f"), "x").unwrap();
    let table = MountTable::new(vec![
        Mount {
            container: VirtualPath::parse("/data").unwrap(),
            host: base.join("outer"),
            read_only: false,
            kind: MountKind::Custom,
        },
        Mount {
            container: VirtualPath::parse("/data/ro").unwrap(),
            host: base.join("ro"),
            read_only: true,
            kind: MountKind::Custom,
        },
    ])
    .unwrap();
    symlink("ro/f", base.join("outer/link")).unwrap();
    let (host, w) = table.resolve_host("/data/link", FOLLOW).unwrap();
    // The nested mount shadows outer/ro: the link lands in the read-only mount.
    assert_eq!(host, base.join("ro/f"));
    assert_eq!(w.mount.container.as_str(), "/data/ro");
    assert!(matches!(
        MountTable::check_writable(&w),
        Err(SandboxError::ReadOnly { .. })
    ));
    let (_, w) = table.resolve_host("/data/inner", FOLLOW).unwrap();
    assert!(MountTable::check_writable(&w).is_ok());
}

#[test]
fn create_parents_refused_in_read_only_mount() {
    let f = fx();
    let opts = WalkOptions {
        follow_final: true,
        create_parents: true,
    };
    let r = f.table.resolve_host("/mnt/skills/new/dir/f", opts);
    assert!(matches!(r, Err(SandboxError::ReadOnly { .. })));
    let (host, _) = f
        .table
        .resolve_host("/mnt/user-data/outputs/a/b/c.txt", opts)
        .unwrap();
    assert!(host.parent().unwrap().is_dir());
}

#[test]
fn errors_never_show_host_paths() {
    let f = fx();
    symlink("/etc", ws(&f).join("etc")).unwrap();
    let host = f.root.to_string_lossy().to_string();
    for p in [
        "/mnt/user-data/workspace/etc/x",
        "/mnt/user-data/workspace/nope/x",
        &format!("{host}/data"),
    ] {
        let e = f.table.resolve_host(p, FOLLOW).unwrap_err().to_string();
        assert!(!e.contains(&format!("{host}/data/users")), "{e}");
    }
}

#[test]
fn custom_mount_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(allowed.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, allowed.join("sneaky")).unwrap();
    let policy = MountPolicy {
        allowed_host_roots: vec![allowed.clone()],
        max_mounts: 0,
    };
    let spec = |host: &Path, c: &str| MountSpec {
        host_path: host.to_string_lossy().into_owned(),
        container_path: c.into(),
        read_only: false,
    };
    let ok = validate_custom_mounts(&[spec(&allowed.join("d"), "/mnt/data")], &policy).unwrap();
    assert_eq!(ok[0].container.as_str(), "/mnt/data");
    let rule = |specs: Vec<MountSpec>| validate_custom_mounts(&specs, &policy).unwrap_err().rule;
    let d = allowed.join("d");
    assert_eq!(
        rule(vec![spec(&outside, "/mnt/x")]),
        MountRule::HostPathNotAllowed
    );
    assert_eq!(
        rule(vec![spec(&allowed.join("sneaky"), "/mnt/x")]),
        MountRule::HostPathNotAllowed
    );
    assert_eq!(
        rule(vec![spec(&allowed.join("missing"), "/mnt/x")]),
        MountRule::HostPathMissing
    );
    assert_eq!(
        rule(vec![spec(Path::new("rel"), "/mnt/x")]),
        MountRule::HostPathNotAbsolute
    );
    assert_eq!(rule(vec![spec(&d, "/")]), MountRule::ContainerPathTooBroad);
    assert_eq!(
        rule(vec![spec(&d, "/mnt")]),
        MountRule::ContainerPathTooBroad
    );
    assert_eq!(
        rule(vec![spec(&d, "/mnt/user-data/x")]),
        MountRule::ContainerPathReserved(USER_DATA)
    );
    assert_eq!(
        rule(vec![spec(&d, "/mnt/skills")]),
        MountRule::ContainerPathReserved(SKILLS)
    );
    assert_eq!(
        rule(vec![spec(&d, "/mnt/acp-workspace/y")]),
        MountRule::ContainerPathReserved(ACP_WORKSPACE)
    );
    assert_eq!(
        rule(vec![spec(&d, "/usr/local")]),
        MountRule::ContainerPathSystem("/usr".into())
    );
    assert_eq!(
        rule(vec![spec(&d, "/lib64")]),
        MountRule::ContainerPathSystem("/lib64".into())
    );
    assert_eq!(
        rule(vec![spec(&d, "/tmp")]),
        MountRule::ContainerPathSystem("/tmp".into())
    );
    assert!(matches!(
        rule(vec![spec(&d, "relative")]),
        MountRule::ContainerPathInvalid(_)
    ));
    assert!(matches!(
        rule(vec![spec(&d, "/mnt/a/../user-data")]),
        MountRule::ContainerPathInvalid(_)
    ));
    assert_eq!(
        rule(vec![spec(&d, "/mnt/a"), spec(&d, "/mnt/a/")]),
        MountRule::Duplicate
    );
    let many: Vec<MountSpec> = (0..17).map(|i| spec(&d, &format!("/mnt/m{i}"))).collect();
    assert_eq!(rule(many), MountRule::TooMany { max: 16 });
    let none = MountPolicy::default();
    let e = validate_custom_mounts(&[spec(&d, "/mnt/data")], &none).unwrap_err();
    assert_eq!(e.rule, MountRule::NoAllowedRoots);
    assert!(
        e.to_string()
            .starts_with("mount 0 (/mnt/data): no allowed_host_roots"),
        "{e}"
    );
}

#[test]
fn masking_host_paths() {
    let f = fx();
    let w = ws(&f);
    let data = f.root.join("data/users/u1/threads/t1/user-data");
    let text = format!(
        "see {}/a.txt and {} and {}-old/x and {}/uploads/y\n",
        w.display(),
        w.display(),
        w.display(),
        data.display()
    );
    let masked = f.table.mask_host_paths(&text);
    assert_eq!(
        masked,
        "see /mnt/user-data/workspace/a.txt and /mnt/user-data/workspace and \
         /mnt/user-data/workspace-old/x and /mnt/user-data/uploads/y\n"
    );
    assert!(matches!(
        f.table.mask_host_paths("nothing here"),
        std::borrow::Cow::Borrowed(_)
    ));
    // Multi-byte text around and between roots; a letter right after a root is no boundary.
    let w = w.display();
    assert_eq!(
        f.table.mask_host_paths(&format!("é{w}/ü {w}é ✓{w}")),
        "é/mnt/user-data/workspace/ü /mnt/user-data/workspaceé ✓/mnt/user-data/workspace"
    );
}

#[test]
fn host_to_virtual_round_trip() {
    let f = fx();
    let v = f.table.host_to_virtual(&ws(&f).join("a/b.txt")).unwrap();
    assert_eq!(v.as_str(), "/mnt/user-data/workspace/a/b.txt");
    assert_eq!(f.table.host_to_virtual(Path::new("/etc/passwd")), None);
}

#[test]
fn command_rewriting_for_host_mode() {
    let f = fx();
    let cmd = f
        .table
        .rewrite_command(
            "cat /mnt/user-data/workspace/a.txt > /mnt/user-data/outputs/b; echo /mnt/user-data-x",
        )
        .unwrap();
    let w = ws(&f);
    assert!(cmd.contains(&format!("cat {}/a.txt", w.display())), "{cmd}");
    assert!(cmd.ends_with("echo /mnt/user-data-x"), "{cmd}");
    assert!(
        f.table
            .rewrite_command("cat /mnt/user-data/workspace/../../../etc/passwd")
            .is_err()
    );
}

#[test]
fn duplicate_mounts_refused() {
    let m = Mount {
        container: VirtualPath::parse("/a").unwrap(),
        host: PathBuf::from("/tmp"),
        read_only: false,
        kind: MountKind::Custom,
    };
    let e = MountTable::new(vec![m.clone(), m]).unwrap_err();
    assert_eq!(e.rule, MountRule::Duplicate);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No generated path ever resolves outside its mount root (lexically), and the mount
    /// chosen is the longest whole-segment prefix.
    #[test]
    fn locate_stays_inside(segs in proptest::collection::vec(
        prop_oneof![
            Just("..".to_string()), Just(".".to_string()), Just("".to_string()),
            Just("mnt".to_string()), Just("user-data".to_string()), Just("workspace".to_string()),
            Just("skills".to_string()), Just("custom".to_string()), Just("user-data-x".to_string()),
            "[a-z]{1,4}",
        ], 0..10)) {
        let f = fx();
        let raw = format!("/{}", segs.join("/"));
        if let Ok(loc) = f.table.locate(&raw) {
            prop_assert!(loc.vpath.starts_with(&loc.mount.container));
            let host = if loc.rel.is_empty() { loc.mount.host.clone() } else { loc.mount.host.join(&loc.rel) };
            prop_assert!(host.starts_with(&loc.mount.host));
            prop_assert!(!loc.rel.split('/').any(|s| s == ".."));
            for m in f.table.mounts() {
                if loc.vpath.starts_with(&m.container) {
                    prop_assert!(m.container.depth() <= loc.mount.container.depth());
                }
            }
            // A path and its reverse mapping round-trip.
            prop_assert_eq!(f.table.host_to_virtual(&host), Some(loc.vpath.clone()));
            let shown = host.to_string_lossy().into_owned();
            prop_assert_eq!(f.table.mask_host_paths(&shown).into_owned(), loc.vpath.to_string());
        }
    }
}

#[test]
fn planted_symlinks_in_a_threads_directories_are_refused_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    // The data directory itself may be reached through a symlink (an operator's choice).
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("data")).unwrap();
    let layout = DataLayout::new(tmp.path().join("data"));
    let (u, t) = (UserId::new("u1").unwrap(), ThreadId::new("t1").unwrap());
    let table = MountTable::for_thread(&layout, &u, &t, vec![]).unwrap();
    let ws = table
        .mounts()
        .iter()
        .find(|m| m.kind == MountKind::Workspace)
        .unwrap();
    let real = std::fs::canonicalize(&real).unwrap();
    assert_eq!(
        ws.host,
        real.join("users/u1/threads/t1/user-data/workspace")
    );
    // An agent-made symlink in place of a thread directory is refused.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    for name in ["workspace", "uploads", "outputs"] {
        let d = real.join("users/u1/threads/t1/user-data").join(name);
        std::fs::remove_dir(&d).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &d).unwrap();
        let e = MountTable::for_thread(&layout, &u, &t, vec![]).unwrap_err();
        let MountTableError::Resolve { what, source } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*what, name);
        assert!(source.to_string().contains("symbolic link"), "{source}");
        std::fs::remove_file(&d).unwrap();
        std::fs::create_dir(&d).unwrap();
    }
    assert!(MountTable::for_thread(&layout, &u, &t, vec![]).is_ok());
}

/// A DeerFlow state root with the directories the gateway makes for `u1`/`t1`.
fn gateway() -> (tempfile::TempDir, PathBuf, DataLayout) {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let g = root.join("deer-flow");
    for d in [
        "users/u1/threads/t1/user-data/workspace",
        "users/u1/threads/t1/acp-workspace",
        "users/u1/skills_view/custom",
        "users/u1/skills_view/integrations",
        "users/u1/integrations/lark-cli/config/locks",
        "users/u2/skills_view/custom",
        "skills_view/public",
    ] {
        std::fs::create_dir_all(g.join(d)).unwrap();
    }
    let layout = DataLayout::new(root.join("paddock")).with_gateway_root(Some(g.clone()));
    (tmp, g, layout)
}

fn spec(host: &Path, container: &str, read_only: bool) -> MountSpec {
    MountSpec {
        host_path: host.display().to_string(),
        container_path: container.into(),
        read_only,
    }
}

fn gw(specs: &[MountSpec], g: Option<&Path>) -> Result<Vec<Mount>, MountRule> {
    let indexed: Vec<(usize, &MountSpec)> = specs.iter().enumerate().collect();
    validate_gateway_mounts(&indexed, &UserId::new("u1").unwrap(), g).map_err(|e| e.rule)
}

#[test]
fn gateway_mounts_are_accepted_as_deerflows_provisioner_accepts_them() {
    let (_tmp, g, _) = gateway();
    let u = g.join("users/u1");
    let lark = u.join("integrations/lark-cli");
    let all = [
        spec(
            &u.join("threads/t1/acp-workspace"),
            "/mnt/acp-workspace",
            true,
        ),
        spec(&u.join("skills_view/custom"), "/mnt/skills/custom", true),
        spec(
            &u.join("skills_view/integrations"),
            "/mnt/skills/integrations",
            true,
        ),
        spec(
            &lark.join("config"),
            "/mnt/integrations/lark-cli/config",
            true,
        ),
        spec(
            &lark.join("config/locks"),
            "/mnt/integrations/lark-cli/config/locks",
            false,
        ),
        spec(&lark.join("data"), "/mnt/integrations/lark-cli/data", false),
    ];
    let ok = gw(&all, Some(&g)).unwrap();
    assert_eq!(ok.len(), 6);
    assert!(ok.iter().all(|m| m.kind == MountKind::Gateway));
    // A missing read-write directory is made, as DeerFlow's DirectoryOrCreate.
    assert!(lark.join("data").is_dir());
    // Refusals, each named.
    let one = |s: MountSpec| gw(&[s], Some(&g)).unwrap_err();
    assert_eq!(
        one(spec(&g.join("users/u1"), "/mnt/user-data", false)),
        MountRule::ContainerPathInvalid("is not a gateway mount path".into())
    );
    assert_eq!(
        one(spec(Path::new("/etc"), "/mnt/acp-workspace", true)),
        MountRule::OutsideGatewayRoot
    );
    assert_eq!(
        one(spec(&g, "/mnt/acp-workspace", true)),
        MountRule::OutsideGatewayRoot,
        "the root itself is not a mount"
    );
    assert_eq!(
        one(spec(
            &g.join("users/u2/skills_view/custom"),
            "/mnt/skills/custom",
            true
        )),
        MountRule::OtherUsersDirectory
    );
    for inside in ["user-data", "user-data/workspace/x"] {
        assert_eq!(
            one(spec(
                &g.join("users/u1/threads/t1").join(inside),
                "/mnt/skills/custom",
                true
            )),
            MountRule::InsideThreadData,
            "{inside}"
        );
    }
    assert_eq!(
        one(MountSpec {
            host_path: format!("{}/users/u1/../u2/skills_view/custom", g.display()),
            container_path: "/mnt/skills/custom".into(),
            read_only: true,
        }),
        MountRule::HostPathNotNormalised
    );
    assert_eq!(
        one(spec(&u.join("nope"), "/mnt/acp-workspace", true)),
        MountRule::HostPathMissing,
        "a read-only mount must exist"
    );
    std::os::unix::fs::symlink("/etc", u.join("link")).unwrap();
    assert_eq!(
        one(spec(&u.join("link"), "/mnt/acp-workspace", true)),
        MountRule::HostPathSymlink
    );
    assert_eq!(
        gw(&[all[0].clone(), all[0].clone()], Some(&g)).unwrap_err(),
        MountRule::Duplicate
    );
    let eleven: Vec<MountSpec> = (0..11).map(|_| all[0].clone()).collect();
    assert_eq!(
        gw(&eleven, Some(&g)).unwrap_err(),
        MountRule::TooMany { max: 10 }
    );
    assert_eq!(gw(&all[..1], None).unwrap_err(), MountRule::NoGatewayRoot);
}

#[test]
fn gateway_mounts_replace_built_ins_and_user_data_comes_from_the_gateway() {
    let (_tmp, g, layout) = gateway();
    let u = UserId::new("u1").unwrap();
    let t = ThreadId::new("t1").unwrap();
    let extra = gw(
        &[
            spec(
                &g.join("users/u1/skills_view/custom"),
                "/mnt/skills/custom",
                true,
            ),
            spec(
                &g.join("users/u1/skills_view/integrations"),
                "/mnt/skills/integrations",
                true,
            ),
        ],
        Some(&g),
    )
    .unwrap();
    let table = MountTable::for_thread(&layout, &u, &t, extra).unwrap();
    let at = |p: &str| {
        table
            .mount_at(&VirtualPath::parse(p).unwrap())
            .map(|m| (m.host.clone(), m.kind))
    };
    assert_eq!(
        at("/mnt/user-data/workspace"),
        Some((
            g.join("users/u1/threads/t1/user-data/workspace"),
            MountKind::Workspace
        ))
    );
    assert_eq!(
        at("/mnt/skills/custom"),
        Some((g.join("users/u1/skills_view/custom"), MountKind::Gateway))
    );
    assert_eq!(
        at("/mnt/skills"),
        Some((g.join("skills_view"), MountKind::Skills))
    );
    assert_eq!(
        at("/mnt/skills/legacy").map(|(_, k)| k),
        Some(MountKind::LegacySkills)
    );
    assert!(at("/mnt/skills/integrations").is_some());
    assert_eq!(
        table
            .mounts()
            .iter()
            .filter(|m| m.container.as_str() == "/mnt/skills/custom")
            .count(),
        1
    );
}
