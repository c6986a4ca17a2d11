//! Home jail tests: an escape matrix (paths, planted symlinks and hardlinks) and round trips.

use super::*;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

const SECRET: &[u8] = b"outside secret";

/// A home next to an "outside" directory holding `secret`, both in one temp dir (so hardlinks
/// between them are possible).
struct Fixture {
    _tmp: tempfile::TempDir,
    home: Home,
    root: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("homes").join("alice");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).expect("outside dir");
        fs::write(outside.join("secret"), SECRET).expect("secret");
        let home = Home::open(&root).expect("open home");
        Fixture { _tmp: tmp, home, root, outside }
    }

    fn secret(&self) -> PathBuf {
        self.outside.join("secret")
    }

    fn write(&self, rel: &str, data: &[u8]) {
        fs::write(self.root.join(rel), data).expect("write in home");
    }

    fn assert_secret_intact(&self) {
        assert_eq!(fs::read(self.secret()).expect("read secret"), SECRET);
    }
}

fn hp(s: &str) -> HomePath {
    HomePath::resolve(&HomePath::root(), s).expect("valid path")
}

fn read_all(home: &Home, p: &str) -> Vec<u8> {
    let (mut file, size) = home.open_read(&hp(p)).expect("open_read");
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).expect("read");
    assert_eq!(buf.len() as u64, size);
    buf
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

// ---- escape matrix: path rules -------------------------------------------------------------

#[test]
fn rejects_dotdot_beyond_root() {
    let cwd = hp("a/b");
    assert!(matches!(HomePath::resolve(&cwd, "../../../etc/passwd"), Err(PathError::Escapes(_))));
    assert!(matches!(HomePath::resolve(&HomePath::root(), ".."), Err(PathError::Escapes(_))));
}

#[test]
fn accepts_etc_passwd_as_a_path_inside_the_home() {
    let fx = Fixture::new();
    let p = hp("/etc/passwd");
    assert_eq!(p.to_rel_path(), PathBuf::from("etc/passwd"));
    assert!(matches!(fx.home.stat(&p), Err(HomeError::NotFound(s)) if s == "/etc/passwd"));
    fs::create_dir(fx.root.join("etc")).expect("mkdir etc");
    fx.write("etc/passwd", b"not the real one");
    assert_eq!(read_all(&fx.home, "/etc/passwd"), b"not the real one");
}

#[test]
fn rejects_backslash_nul_and_over_long_names() {
    let root = HomePath::root();
    assert!(matches!(HomePath::resolve(&root, "..\\..\\x"), Err(PathError::Invalid(..))));
    assert!(matches!(HomePath::resolve(&root, "a\0b"), Err(PathError::Invalid(..))));
    assert_eq!(HomePath::resolve(&root, &"n".repeat(300)), Err(PathError::TooLong));
}

#[test]
fn rejects_partial_name_over_the_filesystem_limit() {
    let fx = Fixture::new();
    // 250 bytes is a valid name, but ".NAME.xfer-part" is 261: the OS says ENAMETOOLONG.
    let p = hp(&"n".repeat(250));
    assert!(matches!(fx.home.open_partial(&p, false), Err(HomeError::Path(PathError::TooLong))));
}

// ---- escape matrix: planted symlinks -------------------------------------------------------

#[test]
fn rejects_reading_symlink_to_outside_file() {
    let fx = Fixture::new();
    symlink(fx.secret(), fx.root.join("link")).expect("symlink");
    assert!(matches!(fx.home.open_read(&hp("link")), Err(HomeError::Escapes(s)) if s == "/link"));
    let listed = fx.home.list(&HomePath::root()).expect("list");
    assert_eq!(names(&listed), ["link"]);
    assert_eq!(listed[0].kind, EntryKind::Symlink);
    assert_eq!(listed[0].size, 0);
    let st = fx.home.stat(&hp("link")).expect("stat a symlink");
    assert_eq!(st.kind, EntryKind::Symlink);
    assert_eq!(st.name, "link");
}

#[test]
fn rejects_reading_through_symlink_to_outside_dir() {
    let fx = Fixture::new();
    symlink(&fx.outside, fx.root.join("d")).expect("symlink");
    let through = hp("d/secret");
    assert!(matches!(fx.home.open_read(&through), Err(HomeError::Escapes(_))));
    assert!(matches!(fx.home.stat(&through), Err(HomeError::Escapes(_))));
    assert!(matches!(fx.home.list(&hp("d")), Err(HomeError::Escapes(_))));
    assert!(matches!(fx.home.check_dir(&hp("d")), Err(HomeError::Escapes(_))));
    assert_eq!(fx.home.stat(&hp("d")).expect("stat link").kind, EntryKind::Symlink);
}

#[test]
fn rejects_writes_through_symlink_to_outside_dir() {
    let fx = Fixture::new();
    symlink(&fx.outside, fx.root.join("d")).expect("symlink");
    fx.write("mine", b"data");
    let escapes = |r: Result<_, HomeError>| matches!(r, Err(HomeError::Escapes(_)));
    assert!(escapes(fx.home.open_partial(&hp("d/new"), false).map(|_| ())));
    assert!(escapes(fx.home.mkdir(&hp("d/newdir"))));
    assert!(escapes(fx.home.rename(&hp("mine"), &hp("d/mine")).map(|_| ())));
    assert!(escapes(fx.home.remove_file(&hp("d/secret")).map(|_| ())));
    assert!(escapes(fx.home.rename(&hp("d/secret"), &hp("stolen")).map(|_| ())));
    let outside: Vec<_> = fs::read_dir(&fx.outside).expect("ls outside").collect();
    assert_eq!(outside.len(), 1, "nothing created outside");
    fx.assert_secret_intact();
    assert!(fx.root.join("mine").exists());
}

#[test]
fn rejects_relative_symlink_climbing_out() {
    let fx = Fixture::new();
    fs::create_dir(fx.root.join("sub")).expect("mkdir");
    // home is <tmp>/homes/alice, so from alice/sub three levels up is <tmp>.
    symlink("../../../outside/secret", fx.root.join("sub/link")).expect("symlink");
    assert!(fs::read(fx.root.join("sub/link")).is_ok(), "the link does work outside the jail");
    assert!(matches!(fx.home.open_read(&hp("sub/link")), Err(HomeError::Escapes(_))));
    symlink("../../outside", fx.root.join("up")).expect("symlink");
    assert!(matches!(fx.home.list(&hp("up")), Err(HomeError::Escapes(_))));
}

#[test]
fn accepts_symlink_staying_inside() {
    let fx = Fixture::new();
    fs::create_dir(fx.root.join("sub")).expect("mkdir");
    fx.write("real.txt", b"inside");
    symlink("../real.txt", fx.root.join("sub/link")).expect("symlink");
    symlink("sub", fx.root.join("dirlink")).expect("symlink");
    assert_eq!(read_all(&fx.home, "sub/link"), b"inside");
    assert_eq!(read_all(&fx.home, "dirlink/link"), b"inside");
    fx.home.check_dir(&hp("dirlink")).expect("cd through an inside link");
}

#[test]
fn rejects_absolute_symlink_even_to_inside() {
    let fx = Fixture::new();
    fx.write("real.txt", b"inside");
    symlink(fx.root.join("real.txt"), fx.root.join("abs")).expect("symlink");
    assert!(matches!(fx.home.open_read(&hp("abs")), Err(HomeError::Escapes(_))));
}

#[test]
fn accepts_removing_symlink_without_touching_target() {
    let fx = Fixture::new();
    symlink(fx.secret(), fx.root.join("link")).expect("symlink");
    assert_eq!(fx.home.remove_file(&hp("link")).expect("remove link"), 0);
    fx.assert_secret_intact();
    assert!(fx.home.list(&HomePath::root()).expect("list").is_empty());
}

// ---- escape matrix: planted hardlinks ------------------------------------------------------

#[test]
fn rejects_reading_hardlink_to_outside_file() {
    let fx = Fixture::new();
    fs::hard_link(fx.secret(), fx.root.join("hl")).expect("hard_link");
    assert!(matches!(fx.home.open_read(&hp("hl")), Err(HomeError::HardLinked(s)) if s == "/hl"));
}

// ---- escape matrix: planted partials -------------------------------------------------------

#[test]
fn rejects_planted_symlink_partial() {
    let fx = Fixture::new();
    symlink(fx.secret(), fx.root.join(".x.xfer-part")).expect("symlink");
    let x = hp("x");
    for resume in [false, true] {
        let r = fx.home.open_partial(&x, resume);
        assert!(matches!(r, Err(HomeError::NotARegularFile(_))), "resume={resume}");
    }
    assert!(matches!(fx.home.partial_len(&x), Err(HomeError::NotARegularFile(_))));
    assert!(fx.home.finish_partial(&x).is_err());
    fx.assert_secret_intact();
    // Discarding removes the planted link only.
    assert_eq!(fx.home.discard_partial(&x).expect("discard"), 0);
    fx.assert_secret_intact();
    assert!(fx.home.list(&HomePath::root()).expect("list").is_empty());
}

#[test]
fn rejects_planted_dangling_symlink_partial() {
    let fx = Fixture::new();
    let target = fx.outside.join("created-by-upload");
    symlink(&target, fx.root.join(".x.xfer-part")).expect("symlink");
    assert!(fx.home.open_partial(&hp("x"), false).is_err());
    assert!(!target.exists(), "O_CREAT must not follow the link");
}

#[test]
fn rejects_symlink_planted_after_the_partial_precheck() {
    // Simulates losing the race against the lstat pre-check: the open itself must refuse.
    let fx = Fixture::new();
    symlink(fx.secret(), fx.root.join(".x.xfer-part")).expect("symlink");
    let r = fx.home.open_partial_file(&hp(".x.xfer-part"));
    assert!(matches!(r, Err(HomeError::NotARegularFile(_))));
    fx.assert_secret_intact();
}

#[test]
fn rejects_planted_hardlinked_partial() {
    let fx = Fixture::new();
    fs::hard_link(fx.secret(), fx.root.join(".x.xfer-part")).expect("hard_link");
    for resume in [false, true] {
        let r = fx.home.open_partial(&hp("x"), resume);
        assert!(matches!(r, Err(HomeError::HardLinked(_))), "resume={resume}");
    }
    fx.assert_secret_intact();
}

// ---- round trips ---------------------------------------------------------------------------

#[test]
fn accepts_open_creating_missing_home() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("a/b/c");
    let home = Home::open(&root).expect("open");
    assert!(root.is_dir());
    assert_eq!(home.stat(&HomePath::root()).expect("stat root").kind, EntryKind::Dir);
    assert_eq!(home.stat(&HomePath::root()).expect("stat root").name, "/");
}

#[test]
fn accepts_mkdir_list_and_stat_round_trip() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("docs")).expect("mkdir");
    fx.home.mkdir(&hp("docs/sub")).expect("mkdir nested");
    fx.write("docs/b.txt", b"12345");
    fx.write("docs/a.txt", b"1");
    let listed = fx.home.list(&hp("docs")).expect("list");
    assert_eq!(names(&listed), ["a.txt", "b.txt", "sub"]);
    assert_eq!(listed[1].kind, EntryKind::File);
    assert_eq!(listed[1].size, 5);
    assert!(listed[1].mtime > 0);
    assert_eq!(listed[2].kind, EntryKind::Dir);
    let st = fx.home.stat(&hp("docs/b.txt")).expect("stat");
    assert_eq!((st.name.as_str(), st.kind, st.size), ("b.txt", EntryKind::File, 5));
    assert!(matches!(fx.home.mkdir(&hp("docs")), Err(HomeError::AlreadyExists(_))));
    assert!(matches!(fx.home.mkdir(&HomePath::root()), Err(HomeError::AlreadyExists(_))));
    assert!(matches!(fx.home.mkdir(&hp("no/such")), Err(HomeError::NotFound(_))));
    assert!(matches!(fx.home.list(&hp("docs/a.txt")), Err(HomeError::NotADirectory(_))));
    assert!(matches!(fx.home.list(&hp("nope")), Err(HomeError::NotFound(s)) if s == "/nope"));
}

#[test]
fn accepts_non_utf8_names_in_listing_lossily() {
    let fx = Fixture::new();
    let name = OsStr::from_bytes(b"bad\xffname");
    fs::write(fx.root.join(name), b"x").expect("write");
    let listed = fx.home.list(&HomePath::root()).expect("list");
    assert_eq!(names(&listed), ["bad\u{FFFD}name"]);
}

#[test]
fn accepts_check_dir_only_for_directories() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("d")).expect("mkdir");
    fx.write("f", b"");
    fx.home.check_dir(&HomePath::root()).expect("root");
    fx.home.check_dir(&hp("d")).expect("dir");
    assert!(matches!(fx.home.check_dir(&hp("f")), Err(HomeError::NotADirectory(_))));
    assert!(matches!(fx.home.check_dir(&hp("x")), Err(HomeError::NotFound(_))));
}

#[test]
fn accepts_rename_round_trip_and_reports_replaced_size() {
    let fx = Fixture::new();
    fx.write("a", b"aaa");
    fx.write("b", b"bbbbbbb");
    assert_eq!(fx.home.rename(&hp("a"), &hp("c")).expect("rename"), None);
    assert_eq!(read_all(&fx.home, "c"), b"aaa");
    assert_eq!(fx.home.rename(&hp("c"), &hp("b")).expect("replace"), Some(7));
    assert_eq!(read_all(&fx.home, "b"), b"aaa");
    // Renaming onto itself is a no-op that frees nothing.
    assert_eq!(fx.home.rename(&hp("b"), &hp("b")).expect("self"), None);
    assert_eq!(read_all(&fx.home, "b"), b"aaa");
    assert!(matches!(fx.home.rename(&hp("zz"), &hp("y")), Err(HomeError::NotFound(_))));
}

#[test]
fn rejects_meaningless_renames() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("d")).expect("mkdir");
    fx.write("f", b"x");
    let invalid = |r: Result<Option<u64>, HomeError>| matches!(r, Err(HomeError::Path(PathError::Invalid(..))));
    assert!(invalid(fx.home.rename(&HomePath::root(), &hp("x"))));
    assert!(invalid(fx.home.rename(&hp("f"), &HomePath::root())));
    assert!(invalid(fx.home.rename(&hp("d"), &hp("d/inner"))));
    assert!(matches!(fx.home.rename(&hp("f"), &hp("d")), Err(HomeError::IsADirectory(_))));
}

#[test]
fn accepts_remove_round_trip() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("d")).expect("mkdir");
    fx.write("d/f", b"12345");
    assert!(matches!(fx.home.remove_dir(&hp("d")), Err(HomeError::DirectoryNotEmpty(_))));
    assert!(matches!(fx.home.remove_file(&hp("d")), Err(HomeError::IsADirectory(_))));
    assert!(matches!(fx.home.remove_dir(&hp("d/f")), Err(HomeError::NotADirectory(_))));
    assert_eq!(fx.home.remove_file(&hp("d/f")).expect("rm"), 5);
    fx.home.remove_dir(&hp("d")).expect("rmdir");
    assert!(fx.home.list(&HomePath::root()).expect("list").is_empty());
    assert!(matches!(fx.home.remove_file(&hp("d/f")), Err(HomeError::NotFound(_))));
}

#[test]
fn rejects_removing_the_root_or_a_dir_symlink_as_dir() {
    let fx = Fixture::new();
    let root = HomePath::root();
    assert!(matches!(fx.home.remove_dir(&root), Err(HomeError::Path(PathError::Invalid(..)))));
    assert!(matches!(fx.home.remove_file(&root), Err(HomeError::Path(PathError::Invalid(..)))));
    symlink(&fx.outside, fx.root.join("l")).expect("symlink");
    assert!(matches!(fx.home.remove_dir(&hp("l")), Err(HomeError::NotADirectory(_))));
    fx.assert_secret_intact();
}

#[test]
fn rejects_reading_directories_and_special_files() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("d")).expect("mkdir");
    assert!(matches!(fx.home.open_read(&hp("d")), Err(HomeError::IsADirectory(_))));
    assert!(matches!(fx.home.open_read(&HomePath::root()), Err(HomeError::IsADirectory(_))));
    assert!(matches!(fx.home.open_read(&hp("none")), Err(HomeError::NotFound(_))));
    let _sock = std::os::unix::net::UnixListener::bind(fx.root.join("sock")).expect("socket");
    assert!(matches!(fx.home.open_read(&hp("sock")), Err(HomeError::NotARegularFile(_))));
    let status = std::process::Command::new("mkfifo").arg(fx.root.join("fifo")).status();
    if status.is_ok_and(|s| s.success()) {
        // Must not block waiting for a writer.
        assert!(matches!(fx.home.open_read(&hp("fifo")), Err(HomeError::NotARegularFile(_))));
        let listed = fx.home.list(&HomePath::root()).expect("list");
        assert_eq!(listed.iter().find(|e| e.name == "fifo").map(|e| e.kind), Some(EntryKind::Other));
    }
}

#[test]
fn rejects_reading_file_hardlinked_within_home() {
    let fx = Fixture::new();
    fx.write("a", b"x");
    fs::hard_link(fx.root.join("a"), fx.root.join("b")).expect("hard_link");
    assert!(matches!(fx.home.open_read(&hp("a")), Err(HomeError::HardLinked(_))));
}

#[test]
fn accepts_partial_lifecycle() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("up")).expect("mkdir");
    let p = hp("up/file.bin");
    assert_eq!(fx.home.partial_len(&p).expect("len"), None);

    let (mut f, len) = fx.home.open_partial(&p, true).expect("create");
    assert_eq!(len, 0);
    f.write_all(b"hello").expect("write");
    drop(f);
    assert_eq!(fx.home.partial_len(&p).expect("len"), Some(5));
    assert!(fx.root.join("up/.file.bin.xfer-part").is_file());

    // Resume continues at the end.
    let (mut f, len) = fx.home.open_partial(&p, true).expect("resume");
    assert_eq!(len, 5);
    f.write_all(b" world").expect("write");
    f.sync_all().expect("fsync");
    drop(f);

    assert_eq!(fx.home.finish_partial(&p).expect("finish"), None);
    assert_eq!(read_all(&fx.home, "up/file.bin"), b"hello world");
    assert_eq!(fx.home.partial_len(&p).expect("len"), None);
    assert!(matches!(fx.home.finish_partial(&p), Err(HomeError::NotFound(_))));

    // A second upload replaces the first and reports the replaced size.
    let (mut f, _) = fx.home.open_partial(&p, false).expect("create again");
    f.write_all(b"v2").expect("write");
    drop(f);
    assert_eq!(fx.home.finish_partial(&p).expect("finish"), Some(11));
    assert_eq!(read_all(&fx.home, "up/file.bin"), b"v2");
}

#[test]
fn accepts_restart_truncating_partial() {
    let fx = Fixture::new();
    let p = hp("f");
    let (mut f, _) = fx.home.open_partial(&p, false).expect("create");
    f.write_all(b"stale data").expect("write");
    drop(f);
    let (_f, len) = fx.home.open_partial(&p, false).expect("restart");
    assert_eq!(len, 0);
    assert_eq!(fx.home.partial_len(&p).expect("len"), Some(0));
}

#[test]
fn accepts_discarding_partial_and_reports_freed_bytes() {
    let fx = Fixture::new();
    let p = hp("f");
    assert_eq!(fx.home.discard_partial(&p).expect("nothing"), 0);
    let (mut f, _) = fx.home.open_partial(&p, false).expect("create");
    f.write_all(b"1234").expect("write");
    drop(f);
    assert_eq!(fx.home.discard_partial(&p).expect("discard"), 4);
    assert_eq!(fx.home.partial_len(&p).expect("len"), None);
    assert_eq!(fx.home.discard_partial(&HomePath::root()).expect("root"), 0);
}

#[test]
fn rejects_bad_upload_targets() {
    let fx = Fixture::new();
    fx.home.mkdir(&hp("d")).expect("mkdir");
    fx.write("f", b"x");
    let open = |s: &str| fx.home.open_partial(&hp(s), false).map(|_| ());
    assert!(matches!(open("/"), Err(HomeError::IsADirectory(_))));
    assert!(matches!(open("d"), Err(HomeError::IsADirectory(_))));
    assert!(matches!(open("missing/x"), Err(HomeError::NotFound(s)) if s == "/missing"));
    assert!(matches!(open("f/x"), Err(HomeError::NotADirectory(_))));
    // A directory appearing at the target after the upload started is not replaced.
    let (_f, _) = fx.home.open_partial(&hp("late"), false).expect("create");
    fx.home.mkdir(&hp("late")).expect("mkdir");
    assert!(matches!(fx.home.finish_partial(&hp("late")), Err(HomeError::IsADirectory(_))));
    assert!(matches!(fx.home.finish_partial(&HomePath::root()), Err(HomeError::IsADirectory(_))));
}

#[test]
fn accepts_usage_counting_files_partials_and_directories_not_symlinks() {
    let fx = Fixture::new();
    assert_eq!(fx.home.usage().expect("empty"), Usage::default());
    fx.home.mkdir(&hp("a")).expect("mkdir");
    fx.home.mkdir(&hp("a/b")).expect("mkdir");
    fx.write("top", b"123");
    fx.write("a/mid", b"4567");
    fx.write("a/b/low", b"89");
    let (mut f, _) = fx.home.open_partial(&hp("a/up"), false).expect("partial");
    f.write_all(b"p").expect("write");
    drop(f);
    symlink(fx.secret(), fx.root.join("to-secret")).expect("symlink");
    symlink(&fx.outside, fx.root.join("to-outside")).expect("symlink");
    // QUOTA-5: two directories and four regular files (one of them a partial) are entries.
    let want = Usage { bytes: 3 + 4 + 2 + 1, entries: 6, partial_bytes: 1, partials: 1 };
    assert_eq!(fx.home.usage().expect("usage"), want);
    // Repeatable: the walk does not consume the home handle's directory position.
    assert_eq!(fx.home.usage().expect("usage again"), want);
    let partials = fx.home.partials().expect("partials");
    assert_eq!(partials.iter().map(|p| (p.target.to_string(), p.len)).collect::<Vec<_>>(), [("/a/up".to_string(), 1)]);
}

#[test]
fn accepts_usage_of_deep_trees() {
    let fx = Fixture::new();
    let mut path = fx.root.clone();
    for _ in 0..400 {
        path.push("d");
    }
    fs::create_dir_all(&path).expect("deep tree");
    fs::write(path.join("leaf"), b"leaf").expect("leaf");
    assert_eq!(fx.home.usage().expect("usage"), Usage { bytes: 4, entries: 401, ..Usage::default() });
}
