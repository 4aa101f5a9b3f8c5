//! Hostile layers: each must fail with a clear error and write nothing outside the root.

mod common;

use std::fs;
use std::io::Cursor;

use berth_diff::{apply_layer, ApplyOptions, ErrorKind, WhiteoutMode};
use common::{Layer, Sandbox, TAR};
use tar::EntryType;

fn apply(
    sb: &Sandbox,
    tar: Vec<u8>,
    mode: WhiteoutMode,
) -> berth_diff::Result<berth_diff::Applied> {
    let opts = ApplyOptions {
        whiteouts: mode,
        parents: Vec::new(),
    };
    apply_layer(Cursor::new(tar), TAR, &sb.root(), &opts)
}

/// Runs the layer in both whiteout modes and checks the error kind and the sentinel.
fn expect_rejected(build: impl Fn(&Sandbox) -> Vec<u8>, kind: ErrorKind) {
    for mode in [WhiteoutMode::Remove, WhiteoutMode::Overlay] {
        let sb = Sandbox::new();
        let err = apply(&sb, build(&sb), mode).expect_err("hostile layer accepted");
        assert_eq!(err.kind(), kind, "{mode:?}: {err}");
        assert!(!err.to_string().is_empty());
        sb.assert_untouched();
    }
}

#[test]
fn dotdot_entry_name() {
    expect_rejected(
        |_| {
            Layer::new()
                .raw(EntryType::Regular, b"../sentinel/evil", None, b"x")
                .build()
        },
        ErrorKind::Escape,
    );
    expect_rejected(
        |_| {
            Layer::new()
                .raw(EntryType::Regular, b"a/../../sentinel/evil", None, b"x")
                .build()
        },
        ErrorKind::Escape,
    );
    expect_rejected(
        |_| {
            Layer::new()
                .raw(EntryType::Directory, b"/../sentinel/d", None, b"")
                .build()
        },
        ErrorKind::Escape,
    );
}

#[test]
fn relative_symlink_escape_in_parent() {
    expect_rejected(
        |_| {
            Layer::new()
                .symlink("up", "../sentinel")
                .file("up/evil", b"x")
                .build()
        },
        ErrorKind::Escape,
    );
    // Deeper: a symlink whose `..` climbs above the root from a subdirectory.
    expect_rejected(
        |_| {
            Layer::new()
                .dir("a", 0o755)
                .symlink("a/b", "../../sentinel")
                .file("a/b/evil", b"x")
                .build()
        },
        ErrorKind::Escape,
    );
}

#[test]
fn absolute_symlink_in_parent() {
    expect_rejected(
        |sb| {
            let target = sb.sentinel().display().to_string();
            Layer::new()
                .symlink("abs", &target)
                .file("abs/evil", b"x")
                .build()
        },
        ErrorKind::Escape,
    );
    expect_rejected(
        |_| {
            Layer::new()
                .symlink("etc", "/etc")
                .file("etc/berth-diff-test-evil", b"x")
                .build()
        },
        ErrorKind::Escape,
    );
    assert!(!std::path::Path::new("/etc/berth-diff-test-evil").exists());
    // A root symlink: every later path through it resolves to the host's `/`.
    expect_rejected(
        |_| {
            Layer::new()
                .symlink("r", "/")
                .dir("r/tmp/berth-evil", 0o755)
                .build()
        },
        ErrorKind::Escape,
    );
    assert!(!std::path::Path::new("/tmp/berth-evil").exists());
}

#[test]
fn hardlink_escapes() {
    expect_rejected(
        |_| {
            Layer::new()
                .raw(EntryType::Link, b"stolen", Some(b"../sentinel/keep"), b"")
                .build()
        },
        ErrorKind::Escape,
    );
    // Through a symlinked parent.
    expect_rejected(
        |_| {
            Layer::new()
                .symlink("s", "../sentinel")
                .hardlink("stolen", "s/keep")
                .build()
        },
        ErrorKind::Escape,
    );
    // Absolute targets name paths inside the layer; /etc/passwd is not there.
    expect_rejected(
        |_| Layer::new().hardlink("passwd", "/etc/passwd").build(),
        ErrorKind::InvalidArgument,
    );
    expect_rejected(
        |_| Layer::new().hardlink("nothing", "missing").build(),
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn oversized_pax_header_is_refused_before_buffering() {
    let sb = Sandbox::new();
    let huge = vec![b'a'; 2 << 20];
    let tar = Layer::new().pax(&[("path", &huge)]).file("f", b"x").build();
    let err = apply(&sb, tar, WhiteoutMode::Remove).expect_err("accepted");
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn oversized_pax_header() {
    let huge = vec![b'a'; 2 << 20];
    expect_rejected(
        |_| {
            Layer::new()
                .pax(&[("SCHILY.xattr.user.big", &huge)])
                .file("f", b"x")
                .build()
        },
        ErrorKind::InvalidArgument,
    );
    // GNU long names are bounded the same way.
    expect_rejected(
        |_| {
            let name = vec![b'n'; 2 << 20];
            Layer::new()
                .raw(EntryType::GNULongName, b"././@LongLink", None, &name)
                .build()
        },
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn bad_whiteout_names() {
    expect_rejected(
        |_| {
            Layer::new()
                .raw(EntryType::Regular, b"d/.wh...", None, b"")
                .build()
        },
        ErrorKind::InvalidArgument,
    );
    expect_rejected(
        |_| {
            Layer::new()
                .raw(EntryType::Regular, b".wh.", None, b"")
                .build()
        },
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn whiteout_through_escaping_symlink() {
    expect_rejected(
        |_| {
            Layer::new()
                .symlink("s", "../sentinel")
                .file("s/.wh.keep", b"")
                .build()
        },
        ErrorKind::Escape,
    );
}

#[test]
fn garbage_and_truncation() {
    expect_rejected(|_| vec![0x42; 4096], ErrorKind::InvalidArgument);
    expect_rejected(
        |_| {
            let mut t = Layer::new().file("f", &[1u8; 5000]).build();
            t.truncate(2048);
            t
        },
        ErrorKind::InvalidArgument,
    );
    // Gzip magic followed by junk.
    expect_rejected(
        |_| vec![0x1f, 0x8b, 0, 0, 1, 2, 3],
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn unsupported_media_type() {
    let sb = Sandbox::new();
    let err = apply_layer(
        Cursor::new(Layer::new().build()),
        "application/vnd.example.layer.v1.tar+bz2",
        &sb.root(),
        &ApplyOptions::default(),
    )
    .expect_err("unknown media type accepted");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err
        .to_string()
        .contains("application/vnd.example.layer.v1.tar+bz2"));
}

#[test]
fn final_symlink_is_replaced_not_followed() {
    let sb = Sandbox::new();
    let target = sb.sentinel().join("keep").display().to_string();
    let tar = Layer::new()
        .symlink("f", &target)
        .file("f", b"mine")
        .symlink("d", "../sentinel")
        .dir("d", 0o755)
        .file("d/inside", b"in")
        .build();
    apply(&sb, tar, WhiteoutMode::Remove).expect("apply");
    sb.assert_untouched();
    assert_eq!(fs::read(sb.root().join("f")).expect("f"), b"mine");
    assert!(fs::symlink_metadata(sb.root().join("d"))
        .expect("d")
        .is_dir());
    assert_eq!(fs::read(sb.root().join("d/inside")).expect("inside"), b"in");
}

#[test]
fn symlink_inside_root_is_followed_for_parents() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("real", 0o755)
        .symlink("alias", "real")
        .dir("x", 0o755)
        .symlink("x/up", "../real")
        .file("alias/a", b"1")
        .file("x/up/b", b"2")
        .build();
    apply(&sb, tar, WhiteoutMode::Remove).expect("apply");
    assert_eq!(fs::read(sb.root().join("real/a")).expect("a"), b"1");
    assert_eq!(fs::read(sb.root().join("real/b")).expect("b"), b"2");
    sb.assert_untouched();
}
