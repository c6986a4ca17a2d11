//! Test data and file helpers: pseudo-random contents, md5, disk usage, waiting for a condition.

use super::*;

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes `n` pseudo-random bytes to `path`; returns them.
pub fn make_file(path: &Path, n: usize, seed: u64) -> Vec<u8> {
    let data = pseudo_random(n, seed);
    std::fs::write(path, &data).unwrap();
    data
}

/// Writes a big file quickly: one random MiB block repeated, each copy stamped with its index
/// so no two MiB are equal. Returns the md5.
pub fn make_big_file(path: &Path, n: u64, seed: u64) -> [u8; 16] {
    let block = pseudo_random(MIB as usize, seed);
    let mut f = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut h = Md5::new();
    let mut written = 0u64;
    let mut i = 0u64;
    let mut buf = block.clone();
    while written < n {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let take = (n - written).min(MIB) as usize;
        f.write_all(&buf[..take]).unwrap();
        h.update(&buf[..take]);
        written += take as u64;
        i += 1;
    }
    f.flush().unwrap();
    h.finalize().into()
}

pub fn md5_bytes(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

pub fn md5_file(path: &Path) -> [u8; 16] {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

pub fn hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names in a directory on disk, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Bytes of regular files, regular files and directories under `dir`, measured on disk without
/// following symlinks.
fn disk_walk(dir: &Path) -> (u64, u64, u64) {
    let (mut bytes, mut files, mut dirs) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // A server may rename or remove entries while a test samples the tree: an entry that
        // vanished between the listing and its stat is skipped, any other error is a failure.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if gone(&e) && d != dir => continue,
            Err(e) => panic!("{}: {e}", d.display()),
        };
        for e in entries {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs += 1;
                stack.push(e.path());
            } else if ft.is_file() {
                match e.metadata() {
                    Ok(m) => bytes += m.len(),
                    Err(err) if gone(&err) => continue,
                    Err(err) => panic!("{}: {err}", e.path().display()),
                }
                files += 1;
            }
        }
    }
    (bytes, files, dirs)
}

/// Bytes of regular files and entries (regular files plus directories, QUOTA-5) under `dir`.
pub fn disk_entries(dir: &Path) -> (u64, u64) {
    let (bytes, files, dirs) = disk_walk(dir);
    (bytes, files + dirs)
}

/// Bytes and regular-file count under `dir` on disk, symlinks not followed.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let (bytes, files, _) = disk_walk(dir);
    (bytes, files)
}

pub fn file_len(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.len())
}

/// Polls `cond` every 10 ms (async) until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`wait_until`] with a 5 ms poll interval.
pub fn wait_until_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
