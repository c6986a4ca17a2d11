//! The per-user home jail, attacked through the client protocol and through links planted on
//! disk inside the home.

use crate::support;

use std::os::unix::fs::symlink;

use support::*;
use xfer::client::Client;
use xfer::proto::{EntryKind, ErrorCode};
use xfer::transfer::progress::no_progress;

const PW: &str = "jail-pw";
const SECRET: &[u8] = b"TOP SECRET CONTENT OUTSIDE THE HOME\n";

struct Jail {
    env: TestEnv,
    srv: TestServer,
    /// A directory outside every home, holding `secret.txt` and `sub/`.
    outside: tempfile::TempDir,
    c: Client,
}

async fn jail() -> Jail {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 10 * MIB, None);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), SECRET).unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::write(outside.path().join("sub/inner.txt"), SECRET).unwrap();
    let c = srv.connect("alice", PW).await;
    Jail { env, srv, outside, c }
}

impl Jail {
    fn home(&self) -> std::path::PathBuf {
        self.srv.home("alice")
    }

    fn upload_source(&self) -> std::path::PathBuf {
        let p = self.env.local("upload.bin");
        std::fs::write(&p, b"uploaded bytes").unwrap();
        p
    }

    /// `get` must fail with `code` and leave nothing locally (no final file, no partial with
    /// the secret).
    async fn get_refused(&mut self, remote: &str, code: ErrorCode) {
        let local = self.env.local("stolen");
        let r = self.c.get(remote, &local, false, no_progress()).await;
        assert_eq!(code_of(r), code, "get {remote:?}");
        for p in [local.clone(), partial_path(&local)] {
            if let Ok(bytes) = std::fs::read(&p) {
                assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET), "secret leaked into {}", p.display());
            }
        }
        assert!(!local.exists(), "get {remote:?} created the local file");
    }

    /// Nothing was created or changed outside the home.
    fn assert_outside_untouched(&self) {
        assert_eq!(dir_names(self.outside.path()), ["secret.txt", "sub"]);
        assert_eq!(dir_names(&self.outside.path().join("sub")), ["inner.txt"]);
        assert_eq!(std::fs::read(self.outside.path().join("secret.txt")).unwrap(), SECRET);
        assert_eq!(std::fs::read(self.outside.path().join("sub/inner.txt")).unwrap(), SECRET);
    }
}

#[tokio::test]
async fn rejects_dotdot_beyond_home_root() {
    guard(async {
        let mut j = jail().await;
        let src = j.upload_source();
        assert_eq!(code_of(j.c.list("..").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.list("../..").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.stat("/../alice").await), ErrorCode::PathEscapes);
        j.get_refused("../../xfer.db", ErrorCode::PathEscapes).await;
        j.get_refused("../../../../../../etc/passwd", ErrorCode::PathEscapes).await;
        assert_eq!(code_of(j.c.put(&src, "../escaped.bin", false, no_progress()).await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.mkdir("../newdir").await), ErrorCode::PathEscapes);
        assert!(!j.env.root.join("homes/escaped.bin").exists());
        assert!(!j.env.root.join("homes/newdir").exists());
        // Going down and back up past the root is still an escape.
        j.c.mkdir("d").await.unwrap();
        assert_eq!(code_of(j.c.list("d/../../alice").await), ErrorCode::PathEscapes);
        j.srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn rejects_cd_above_root_and_keeps_cwd() {
    guard(async {
        let mut j = jail().await;
        assert_eq!(code_of(j.c.cd("..").await), ErrorCode::PathEscapes);
        assert_eq!(j.c.pwd().await.unwrap(), "/");
        j.c.mkdir("a").await.unwrap();
        j.c.cd("a").await.unwrap();
        assert_eq!(code_of(j.c.cd("../..").await), ErrorCode::PathEscapes);
        assert_eq!(j.c.pwd().await.unwrap(), "/a");
        assert_eq!(j.c.cd("..").await.unwrap(), "/");
    })
    .await
}

#[tokio::test]
async fn maps_absolute_paths_into_the_home() {
    guard(async {
        let mut j = jail().await;
        // "/etc/passwd" is the home's /etc/passwd, which does not exist: never the real file.
        j.get_refused("/etc/passwd", ErrorCode::NotFound).await;
        assert_eq!(code_of(j.c.stat("/etc/passwd").await), ErrorCode::NotFound);
        let src = j.upload_source();
        j.c.mkdir("/etc").await.unwrap();
        j.c.put(&src, "/etc/passwd", false, no_progress()).await.unwrap();
        assert_eq!(std::fs::read(j.home().join("etc/passwd")).unwrap(), b"uploaded bytes");
        let back = j.env.local("passwd");
        j.c.get("/etc/passwd", &back, false, no_progress()).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"uploaded bytes");
    })
    .await
}

#[tokio::test]
async fn rejects_backslash_nul_control_and_overlong_names() {
    guard(async {
        let mut j = jail().await;
        let src = j.upload_source();
        j.get_refused("..\\..\\etc\\passwd", ErrorCode::InvalidPath).await;
        assert_eq!(code_of(j.c.mkdir("a\\b").await), ErrorCode::InvalidPath);
        assert_eq!(code_of(j.c.stat("a\0b").await), ErrorCode::InvalidPath);
        assert_eq!(code_of(j.c.put(&src, "x\0y", false, no_progress()).await), ErrorCode::InvalidPath);
        assert_eq!(code_of(j.c.mkdir("line\nbreak").await), ErrorCode::InvalidPath);
        let long = "n".repeat(300);
        assert_eq!(code_of(j.c.put(&src, &long, false, no_progress()).await), ErrorCode::InvalidPath);
        assert_eq!(code_of(j.c.mkdir(&long).await), ErrorCode::InvalidPath);
        assert_eq!(code_of(j.c.rename("x", &long).await), ErrorCode::InvalidPath);
        assert!(dir_names(&j.home()).is_empty(), "nothing was created: {:?}", dir_names(&j.home()));
    })
    .await
}

#[tokio::test]
async fn rejects_symlink_to_outside_file() {
    guard(async {
        let mut j = jail().await;
        let target = j.outside.path().join("secret.txt");
        symlink(&target, j.home().join("abs-link")).unwrap();
        // A relative link that climbs out of the home.
        let rel = pathdiff(&target, &j.home());
        symlink(&rel, j.home().join("rel-link")).unwrap();
        assert!(std::fs::read(j.home().join("rel-link")).unwrap() == SECRET, "test setup: link resolves");

        for link in ["abs-link", "rel-link"] {
            j.get_refused(link, ErrorCode::PathEscapes).await;
            let r = j.c.sum(link).await;
            assert_eq!(code_of(r), ErrorCode::PathEscapes, "sum {link}");
            // Listing describes the link itself, without following it.
            let st = j.c.stat(link).await.unwrap();
            assert_eq!((st.kind, st.size), (EntryKind::Symlink, 0), "stat {link}");
        }
        // Uploading onto the link's name replaces the link, never writes through it.
        let src = j.upload_source();
        j.c.put(&src, "abs-link", false, no_progress()).await.unwrap();
        assert_eq!(std::fs::read(j.home().join("abs-link")).unwrap(), b"uploaded bytes");
        assert!(!std::fs::symlink_metadata(j.home().join("abs-link")).unwrap().file_type().is_symlink());
        // Removing a link removes only the link.
        j.c.remove("rel-link").await.unwrap();
        j.assert_outside_untouched();
    })
    .await
}

#[tokio::test]
async fn rejects_symlink_to_outside_directory() {
    guard(async {
        let mut j = jail().await;
        symlink(j.outside.path(), j.home().join("out")).unwrap();
        let src = j.upload_source();

        // `ls out` may describe the link, but must never list the outside directory.
        match j.c.list("out").await {
            Ok(entries) => {
                assert_eq!(entries.len(), 1, "{entries:?}");
                assert_eq!((entries[0].name.as_str(), entries[0].kind), ("out", EntryKind::Symlink));
            }
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::PathEscapes), "{e}"),
        }
        assert_eq!(code_of(j.c.list("out/sub").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.stat("out/secret.txt").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.cd("out").await), ErrorCode::PathEscapes);
        assert_eq!(j.c.pwd().await.unwrap(), "/");
        j.get_refused("out/secret.txt", ErrorCode::PathEscapes).await;
        j.get_refused("out/sub/inner.txt", ErrorCode::PathEscapes).await;
        assert_eq!(code_of(j.c.put(&src, "out/planted.txt", false, no_progress()).await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.put(&src, "out/secret.txt", false, no_progress()).await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.mkdir("out/newdir").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.remove("out/secret.txt").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.rmdir("out/sub").await), ErrorCode::PathEscapes);
        std::fs::write(j.home().join("mine.txt"), b"mine").unwrap();
        assert_eq!(code_of(j.c.rename("mine.txt", "out/moved.txt").await), ErrorCode::PathEscapes);
        assert_eq!(code_of(j.c.rename("out/secret.txt", "stolen.txt").await), ErrorCode::PathEscapes);
        assert!(!j.home().join("stolen.txt").exists());
        j.assert_outside_untouched();
        j.srv.assert_no_panics();
    })
    .await
}

#[tokio::test]
async fn rejects_hardlink_to_outside_file() {
    guard(async {
        let mut j = jail().await;
        let target = j.outside.path().join("secret.txt");
        std::fs::hard_link(&target, j.home().join("hl")).unwrap();
        j.get_refused("hl", ErrorCode::PermissionDenied).await;
        assert_eq!(code_of(j.c.sum("hl").await), ErrorCode::PermissionDenied);
        // Resuming an "upload" onto a hard-linked partial must not write through it either.
        std::fs::hard_link(&target, j.home().join(".up.xfer-part")).unwrap();
        // Longer than the linked file, so a resume gets as far as opening the partial.
        let src = j.env.local("long.bin");
        make_file(&src, 1000, 4);
        for resume in [true, false] {
            let r = j.c.put(&src, "up", resume, no_progress()).await;
            assert_eq!(code_of(r), ErrorCode::PermissionDenied, "upload via a hard-linked partial, resume={resume}");
        }
        assert!(!j.home().join("up").exists());
        j.assert_outside_untouched();
    })
    .await
}

#[tokio::test]
async fn rejects_planted_symlink_as_partial_file() {
    guard(async {
        let mut j = jail().await;
        symlink(j.outside.path().join("secret.txt"), j.home().join(".x.xfer-part")).unwrap();
        let src = j.upload_source();
        for resume in [false, true] {
            let r = j.c.put(&src, "x", resume, no_progress()).await;
            assert_eq!(code_of(r), ErrorCode::PermissionDenied, "resume={resume}");
        }
        j.assert_outside_untouched();
        assert!(!j.home().join("x").exists());
    })
    .await
}

#[tokio::test]
async fn rejects_reaching_another_users_home() {
    guard(async {
        let mut j = jail().await;
        j.srv.add_user("bob", "bob-pw", MIB, None);
        std::fs::write(j.srv.home("bob").join("file"), b"bob's data").unwrap();
        j.get_refused("../bob/file", ErrorCode::PathEscapes).await;
        j.get_refused("/../bob/file", ErrorCode::PathEscapes).await;
        assert_eq!(code_of(j.c.list("../bob").await), ErrorCode::PathEscapes);
        // bob's home is not visible by name from inside alice's.
        j.get_refused("/bob/file", ErrorCode::NotFound).await;
        assert_eq!(code_of(j.c.remove("../bob/file").await), ErrorCode::PathEscapes);
        assert!(j.c.list("/").await.unwrap().is_empty(), "alice sees only her (empty) home");
        assert_eq!(std::fs::read(j.srv.home("bob").join("file")).unwrap(), b"bob's data");
        // And bob sees his own file, not alice's.
        let mut b = j.srv.connect("bob", "bob-pw").await;
        let names: Vec<_> = b.list("/").await.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["file"]);
    })
    .await
}

/// `target` expressed relative to `from` (both absolute).
fn pathdiff(target: &std::path::Path, from: &std::path::Path) -> std::path::PathBuf {
    let t: Vec<_> = target.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[tokio::test]
async fn rejects_overlong_and_overdeep_paths() {
    guard(async {
        let mut j = jail().await;
        // One 255-byte component is fine as a directory name.
        let name255 = "d".repeat(255);
        j.c.mkdir(&name255).await.unwrap();
        assert_eq!(code_of(j.c.mkdir(&"d".repeat(256)).await), ErrorCode::InvalidPath);
        // An input over 4096 bytes, even if it normalizes to something short.
        let long = format!("{}a", "./".repeat(2100));
        assert_eq!(code_of(j.c.stat(&long).await), ErrorCode::InvalidPath);
        // More than 256 components.
        let deep = vec!["x"; 257].join("/");
        assert_eq!(code_of(j.c.stat(&deep).await), ErrorCode::InvalidPath);
        // A component over 255 bytes that a later ".." would remove is still refused.
        let sneaky = format!("{}/..", "y".repeat(300));
        assert_eq!(code_of(j.c.stat(&sneaky).await), ErrorCode::InvalidPath);
        assert_eq!(dir_names(&j.home()), [name255]);
    })
    .await
}

#[tokio::test]
async fn lists_planted_links_without_following_them() {
    guard(async {
        let mut j = jail().await;
        symlink(j.outside.path(), j.home().join("out")).unwrap();
        symlink(j.outside.path().join("secret.txt"), j.home().join("sec")).unwrap();
        let entries = j.c.list("/").await.unwrap();
        let shown: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind, e.size)).collect();
        assert_eq!(shown, [("out", EntryKind::Symlink, 0), ("sec", EntryKind::Symlink, 0)]);
        j.assert_outside_untouched();
    })
    .await
}
