//! Password checks off the async workers, bounded in number and memory (CTRL-AUTH-4).
//!
//! At most `max_parallel_hashes` checks run at once, each in `spawn_blocking` with one of as
//! many argon2 workspaces, allocated on first use and reused: the server's argon2 memory is
//! `max_parallel_hashes` × 19 MiB however many logins arrive. Further checks wait for a slot;
//! the pre-login deadline bounds the wait.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::session::lock;
use crate::auth::password::{verify_with_memory, Workspace};

pub(crate) struct Hashing {
    slots: Arc<Semaphore>,
    spaces: Arc<Mutex<Vec<Workspace>>>,
    /// File digests asked for by `Sum` (CTRL-SUM-1): as many at once as password checks.
    files: Arc<Semaphore>,
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
            let mut space = lock(&spaces).pop().unwrap_or_default();
            let ok = verify_with_memory(hash.as_deref(), &password, &mut space);
            lock(&spaces).push(space);
            drop(permit);
            ok
        });
        job.await.unwrap_or(false)
    }

    /// Workspaces allocated so far (never more than the slots).
    #[cfg(test)]
    fn workspaces(&self) -> usize {
        lock(&self.spaces).len()
    }
}

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
}
