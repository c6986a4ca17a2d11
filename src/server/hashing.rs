//! Password checks off the async workers, bounded in number and memory (CTRL-AUTH-4).
//!
//! At most `max_parallel_hashes` checks run at once, each in `spawn_blocking` with one of as
//! many argon2 workspaces, allocated on first use and reused while checks keep coming: the
//! server's argon2 memory is `max_parallel_hashes` × 19 MiB however many logins arrive. Once no
//! check has run for [`IDLE_RELEASE`], the workspaces are freed and the allocator is asked to
//! give the pages back to the system, so a burst of logins leaves no lasting footprint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::session::lock;
use crate::auth::password::{verify_with_memory, Workspace};

/// How long hashing must be idle before its workspaces are freed.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_millis(500);

pub(crate) struct Hashing {
    slots: Arc<Semaphore>,
    spaces: Arc<Mutex<Spaces>>,
    /// File digests asked for by `Sum` (CTRL-SUM-1): as many at once as password checks.
    files: Arc<Semaphore>,
}

#[derive(Default)]
struct Spaces {
    free: Vec<Workspace>,
    /// Checks running now.
    busy: usize,
    /// Counts checks ended, so a release scheduled at one idle moment sees whether another
    /// check ran since.
    ended: u64,
}

impl Hashing {
    pub fn new(parallel: usize) -> Hashing {
        let parallel = parallel.max(1);
        Hashing {
            slots: Arc::new(Semaphore::new(parallel)),
            spaces: Arc::default(),
            files: Arc::new(Semaphore::new(parallel)),
        }
    }

    /// Runs `job` (a file digest) in `spawn_blocking` once one of the bounded file-hashing
    /// slots is free (CTRL-SUM-1); the wait is bounded by the session's own timeouts.
    pub async fn file_job<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, super::errors::Reply> + Send + 'static,
    ) -> Result<T, super::errors::Reply> {
        let permit = self.files.clone().acquire_owned().await.map_err(super::errors::Reply::internal)?;
        super::errors::blocking(move || {
            let out = job();
            drop(permit);
            out
        })
        .await
    }

    /// Checks `password` against `hash` (`None`: an unknown user, checked against the dummy
    /// hash at the same cost, and false). Waits for a free slot first.
    pub async fn verify(&self, hash: Option<String>, password: String) -> bool {
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return false;
        };
        let spaces = self.spaces.clone();
        let job = tokio::task::spawn_blocking(move || {
            let reused = {
                let mut s = lock(&spaces);
                s.busy += 1;
                s.free.pop()
            };
            let mut space = reused.unwrap_or_default();
            let ok = verify_with_memory(hash.as_deref(), &password, &mut space);
            let idle_at = {
                let mut s = lock(&spaces);
                s.free.push(space);
                s.busy -= 1;
                s.ended += 1;
                (s.busy == 0).then_some(s.ended)
            };
            drop(permit);
            (ok, idle_at)
        });
        let (ok, idle_at) = job.await.unwrap_or((false, None));
        if let Some(ended) = idle_at {
            tokio::spawn(release_when_idle(self.spaces.clone(), ended));
        }
        ok
    }

    /// Workspaces held now (never more than the slots).
    #[cfg(test)]
    fn workspaces(&self) -> usize {
        lock(&self.spaces).free.len()
    }
}

/// Frees the workspaces if no check started or ended in the [`IDLE_RELEASE`] after the
/// `ended`-th one, then returns the freed pages to the system.
async fn release_when_idle(spaces: Arc<Mutex<Spaces>>, ended: u64) {
    tokio::time::sleep(IDLE_RELEASE).await;
    let _ = tokio::task::spawn_blocking(move || {
        let freed = {
            let mut s = lock(&spaces);
            if s.busy > 0 || s.ended != ended {
                return;
            }
            std::mem::take(&mut s.free)
        };
        drop(freed);
        return_freed_memory();
    })
    .await;
}

/// Asks glibc to hand free heap pages back to the kernel. Workspaces are 19 MiB, but glibc
/// raises its mmap threshold after the first such block is freed, so later ones come from the
/// heap, where a plain `free` keeps them resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; it only releases memory
    // the allocator already considers free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn many_parallel_checks_share_a_bounded_set_of_workspaces() {
        let hashing = Arc::new(Hashing::new(2));
        let hash = crate::auth::hash_password("pw").unwrap();
        let checks: Vec<_> = (0..8)
            .map(|n| {
                let (h, hash) = (hashing.clone(), hash.clone());
                tokio::spawn(async move { h.verify(Some(hash), if n == 0 { "pw".into() } else { "no".into() }).await })
            })
            .collect();
        let mut results = Vec::new();
        for c in checks {
            results.push(c.await.unwrap());
        }
        assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
        assert!(results[0]);
        assert!(hashing.workspaces() <= 2, "{} workspaces", hashing.workspaces());
        assert!(!hashing.verify(None, "pw".into()).await);
    }

    #[tokio::test]
    async fn frees_the_workspaces_once_hashing_is_idle() {
        let hashing = Hashing::new(2);
        assert!(!hashing.verify(None, "pw".into()).await);
        let mut freed = false;
        for _ in 0..100 {
            tokio::time::sleep(IDLE_RELEASE / 5).await;
            if hashing.workspaces() == 0 {
                freed = true;
                break;
            }
        }
        assert!(freed, "workspaces still held after hashing went idle");
        assert!(!hashing.verify(None, "pw".into()).await, "checks go on after a release");
    }
}
