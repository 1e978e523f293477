//! Every escape named in the confinement requirement, tried against real files: `..`,
//! absolute paths, symlinks (directory, chain, dangling, final component on write), hard links,
//! `/proc/self`, a sibling sharing the root's prefix, and a directory swapped for a symlink,
//! including while reads race the swap.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use agent_host::confine::{FsError, MAX_READ, MAX_WRITE, Workspace};

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    ws: Workspace,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("ws");
    let outside = base.join("outside");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "SECRET").unwrap();
    fs::write(root.join("sub/file.txt"), "inside").unwrap();
    let ws = Workspace::open(std::slice::from_ref(&root)).unwrap();
    Setup { _dir: dir, root, outside, ws }
}

fn outside(r: Result<impl std::fmt::Debug, FsError>) {
    assert!(matches!(r, Err(FsError::OutsideWorkspace(_))), "expected OutsideWorkspace, got {r:?}");
}

#[test]
fn plain_reads_and_writes_work() {
    let s = setup();
    assert_eq!(s.ws.read(Path::new("sub/file.txt")).unwrap(), b"inside");
    assert_eq!(s.ws.read(&s.root.join("sub/file.txt")).unwrap(), b"inside");
    s.ws.write(Path::new("sub/new.txt"), b"hello").unwrap();
    assert_eq!(fs::read(s.root.join("sub/new.txt")).unwrap(), b"hello");
    // `..` that stays inside is fine.
    assert_eq!(s.ws.read(Path::new("sub/../sub/file.txt")).unwrap(), b"inside");
    let names: Vec<_> = s.ws.list(Path::new("sub")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["file.txt", "new.txt"]);
}

#[test]
fn dot_dot_and_absolute_paths_cannot_leave() {
    let s = setup();
    outside(s.ws.read(Path::new("../outside/secret")));
    outside(s.ws.read(Path::new("sub/../../outside/secret")));
    outside(s.ws.read(&s.outside.join("secret")));
    outside(s.ws.read(Path::new("/etc/passwd")));
    outside(s.ws.write(Path::new("../outside/new"), b"x"));
    outside(s.ws.list(Path::new("..")));
    assert!(!s.outside.join("new").exists());
}

#[test]
fn a_sibling_sharing_the_prefix_is_outside() {
    let s = setup();
    let evil = PathBuf::from(format!("{}-evil", s.root.display()));
    fs::create_dir_all(&evil).unwrap();
    fs::write(evil.join("secret"), "SECRET").unwrap();
    outside(s.ws.read(&evil.join("secret")));
    outside(s.ws.write(&evil.join("x"), b"x"));
}

#[test]
fn symlinks_cannot_lead_out() {
    let s = setup();
    // A directory link.
    symlink(&s.outside, s.root.join("dirlink")).unwrap();
    outside(s.ws.read(Path::new("dirlink/secret")));
    outside(s.ws.write(Path::new("dirlink/new"), b"x"));
    outside(s.ws.list(Path::new("dirlink")));
    // A relative link climbing out.
    symlink("../outside", s.root.join("rel")).unwrap();
    outside(s.ws.read(Path::new("rel/secret")));
    // A chain: inside → inside → outside.
    symlink("hop2", s.root.join("hop1")).unwrap();
    symlink(&s.outside, s.root.join("hop2")).unwrap();
    outside(s.ws.read(Path::new("hop1/secret")));
    // A final-component link is not followed, even to a file inside.
    symlink(s.outside.join("secret"), s.root.join("filelink")).unwrap();
    assert!(matches!(s.ws.read(Path::new("filelink")), Err(FsError::Symlink(_))));
    symlink("sub/file.txt", s.root.join("innerlink")).unwrap();
    assert!(matches!(s.ws.read(Path::new("innerlink")), Err(FsError::Symlink(_))));
    assert!(!s.outside.join("new").exists());
}

#[test]
fn writing_through_a_final_symlink_is_refused() {
    let s = setup();
    // Dangling: the target does not exist yet; writing must not create it.
    symlink(s.outside.join("created"), s.root.join("dangling")).unwrap();
    assert!(matches!(s.ws.write(Path::new("dangling"), b"x"), Err(FsError::Symlink(_))));
    assert!(!s.outside.join("created").exists());
    // Existing target: it must not change.
    symlink(s.outside.join("secret"), s.root.join("link")).unwrap();
    assert!(matches!(s.ws.write(Path::new("link"), b"owned"), Err(FsError::Symlink(_))));
    assert!(matches!(s.ws.edit(Path::new("link"), "SECRET", "owned"), Err(FsError::Symlink(_))));
    assert_eq!(fs::read(s.outside.join("secret")).unwrap(), b"SECRET");
}

#[test]
fn hard_links_are_not_read_and_writes_do_not_travel_through_them() {
    let s = setup();
    fs::hard_link(s.outside.join("secret"), s.root.join("hard")).unwrap();
    assert!(matches!(s.ws.read(Path::new("hard")), Err(FsError::HardLinked(_, 2))));
    assert!(matches!(s.ws.edit(Path::new("hard"), "SECRET", "x"), Err(FsError::HardLinked(_, 2))));
    // A write replaces the name; the shared inode outside is untouched.
    s.ws.write(Path::new("hard"), b"replaced").unwrap();
    assert_eq!(fs::read(s.outside.join("secret")).unwrap(), b"SECRET");
    assert_eq!(fs::read(s.root.join("hard")).unwrap(), b"replaced");
}

#[test]
fn proc_self_is_unreachable() {
    let s = setup();
    outside(s.ws.read(Path::new("/proc/self/environ")));
    symlink("/proc/self", s.root.join("proc")).unwrap();
    outside(s.ws.read(Path::new("proc/environ")));
    symlink("/proc/self/root/etc", s.root.join("rootlink")).unwrap();
    outside(s.ws.read(Path::new("rootlink/passwd")));
}

#[test]
fn a_directory_swapped_for_a_symlink_is_resolved_at_use() {
    let s = setup();
    // Checked as a directory, swapped before use.
    fs::create_dir(s.root.join("swap")).unwrap();
    fs::write(s.root.join("swap/secret"), "inside").unwrap();
    assert_eq!(s.ws.read(Path::new("swap/secret")).unwrap(), b"inside");
    fs::rename(s.root.join("swap"), s.root.join("swapped-away")).unwrap();
    symlink(&s.outside, s.root.join("swap")).unwrap();
    outside(s.ws.read(Path::new("swap/secret")));
}

#[test]
fn reads_racing_a_swap_never_see_outside() {
    let s = setup();
    let flip = s.root.join("flip");
    let real = s.root.join("flip-real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("secret"), "inside").unwrap();
    let link = s.root.join("flip-link");
    symlink(&s.outside, &link).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let tmp = flip.with_extension("tmp");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Atomically point `flip` at the real directory, then at the escaping link.
                for target in [&real, &link] {
                    let _ = fs::remove_file(&tmp);
                    symlink(target, &tmp).unwrap();
                    fs::rename(&tmp, &flip).unwrap();
                }
            }
        })
    };
    let (mut inside, mut refused) = (0, 0);
    for _ in 0..3000 {
        match s.ws.read(Path::new("flip/secret")) {
            Ok(bytes) => {
                assert_eq!(bytes, b"inside", "a racing read escaped the workspace");
                inside += 1;
            }
            Err(_) => refused += 1,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(inside + refused, 3000);
}

#[test]
fn sizes_are_limited() {
    let s = setup();
    let big = fs::File::create(s.root.join("big")).unwrap();
    big.set_len(MAX_READ + 1).unwrap();
    assert!(matches!(s.ws.read(Path::new("big")), Err(FsError::TooLarge { .. })));
    let content = vec![b'x'; MAX_WRITE + 1];
    assert!(matches!(s.ws.write(Path::new("w"), &content), Err(FsError::TooLarge { .. })));
    assert!(!s.root.join("w").exists());
}

#[test]
fn edits_need_exactly_one_occurrence_and_are_atomic() {
    let s = setup();
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(s.root.join("code.rs"), "fn a() {}\nfn b() {}\nfn a() {}\n").unwrap();
    fs::set_permissions(s.root.join("code.rs"), fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        s.ws.edit(Path::new("code.rs"), "fn c", "x"),
        Err(FsError::OldTextMissing(_))
    ));
    assert!(matches!(
        s.ws.edit(Path::new("code.rs"), "fn a() {}", "x"),
        Err(FsError::OldTextNotUnique(_, 2))
    ));
    s.ws.edit(Path::new("code.rs"), "fn b() {}", "fn b() { todo!() }").unwrap();
    assert_eq!(
        fs::read_to_string(s.root.join("code.rs")).unwrap(),
        "fn a() {}\nfn b() { todo!() }\nfn a() {}\n"
    );
    let mode = fs::metadata(s.root.join("code.rs")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "an edit keeps the file's mode");
    let leftovers: Vec<_> = fs::read_dir(&s.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    fs::write(s.root.join("bin"), [0xff, 0xfe]).unwrap();
    assert!(matches!(s.ws.edit(Path::new("bin"), "a", "b"), Err(FsError::NotText(_))));
}

#[test]
fn directories_and_devices_are_not_files() {
    let s = setup();
    assert!(matches!(s.ws.read(Path::new("sub")), Err(FsError::WrongType(..))));
    assert!(matches!(s.ws.list(Path::new("sub/file.txt")), Err(FsError::Io { .. })));
    assert!(matches!(s.ws.write(Path::new("sub"), b"x"), Err(FsError::WrongType(..))));
}

#[test]
fn path_traversal_corpora_never_read_outside() {
    // Every payload of the PayloadsAllTheThings traversal lists (dotdotpwn, deep, exotic
    // encodings, Windows forms), with `{FILE}` aimed at a secret beside the workspace, read
    // through the workspace from its root and from a subdirectory; the payloads that climb
    // (`..`) are also written. (Writes of the others would only create oddly named files inside,
    // each with an fsync.)
    let s = setup();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/traversal");
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    let mut tried = 0;
    for file in [
        "traversal-dotdotpwn.txt",
        "traversal-deep_traversal.txt",
        "traversal-traversals-8-deep-exotic-encoding.txt",
        "traversal-directory_traversal.txt",
    ] {
        for payload in fs::read_to_string(dir.join(file)).unwrap().lines() {
            for target in ["outside/secret", "etc/passwd"] {
                let payload = payload.replace("{FILE}", target);
                for base in ["", "sub/"] {
                    let path = PathBuf::from(format!("{base}{payload}"));
                    if let Ok(bytes) = s.ws.read(&path) {
                        assert_ne!(bytes, b"SECRET", "{path:?} read the secret");
                        assert!(passwd.is_empty() || bytes != passwd, "{path:?} read /etc/passwd");
                    }
                    if payload.contains("..") && file != "traversal-dotdotpwn.txt" {
                        let _ = s.ws.write(&path, b"pwned");
                    }
                    tried += 1;
                }
            }
        }
    }
    assert_eq!(fs::read(s.outside.join("secret")).unwrap(), b"SECRET");
    assert!(fs::read_dir(&s.outside).unwrap().count() == 1, "a write escaped");
    println!("traversal corpora: {tried} attempts, none left the workspace");
}

/// `usable` answers before an operation what the operation would refuse for where it leads.
#[test]
fn usable_says_where_a_path_leads_without_touching_it() {
    let s = setup();
    s.ws.usable(Path::new("sub/file.txt")).unwrap();
    s.ws.usable(Path::new("sub/not-yet.txt")).unwrap();
    s.ws.usable(Path::new("sub")).unwrap();
    outside(s.ws.usable(Path::new("../outside/secret")));
    outside(s.ws.usable(Path::new("/etc/passwd")));
    symlink(&s.outside, s.root.join("dirlink")).unwrap();
    outside(s.ws.usable(Path::new("dirlink/secret")));
    outside(s.ws.usable(Path::new("dirlink/new")));
    symlink(s.root.join("sub/file.txt"), s.root.join("filelink")).unwrap();
    assert!(matches!(s.ws.usable(Path::new("filelink")), Err(FsError::Symlink(_))));
    assert!(s.ws.usable(Path::new("missing-dir/new")).is_err());
}

#[test]
fn a_working_directory_is_a_directory_inside() {
    let s = setup();
    s.ws.is_dir(Path::new(".")).unwrap();
    s.ws.is_dir(Path::new("sub")).unwrap();
    s.ws.is_dir(&s.root.join("sub")).unwrap();
    assert!(s.ws.is_dir(Path::new("sub/file.txt")).is_err(), "a file is not a directory");
    assert!(s.ws.is_dir(Path::new("missing")).is_err());
    outside(s.ws.is_dir(Path::new("..")));
    outside(s.ws.is_dir(&s.outside));
    symlink(&s.outside, s.root.join("out")).unwrap();
    outside(s.ws.is_dir(Path::new("out")));
    // However many entries it holds (listing stops at MAX_ENTRIES; this does not list).
    for i in 0..=agent_host::confine::MAX_ENTRIES {
        fs::write(s.root.join(format!("f{i}")), "").unwrap();
    }
    s.ws.is_dir(Path::new(".")).unwrap();
}
