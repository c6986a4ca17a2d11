//! Collecting what is billed but named by nothing (STORE-OBJ-7):
//! - uploads untouched for longer than the partial expiry: forgotten, their segments queued;
//! - queued objects (replaced or removed blobs, segments of finished or dropped uploads),
//!   deleted once they are older than the grace period, which lets running downloads finish;
//! - orphans: objects under `staging/` or `blobs/` that PostgreSQL does not know, older than
//!   the grace period (a PUT whose record failed, a fenced writer, a compose whose publish
//!   failed).
//!
//! Unfinished multipart uploads are aborted by the writer on every failure it sees; one left by
//! a server killed mid-compose is invisible to OpenDAL, so the bucket needs the lifecycle rule
//! `AbortIncompleteMultipartUpload` (docs/deploy.md).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{now, pg_err, s3_err, ObjectBackend};
use crate::storage::StorageError;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Expired uploads forgotten.
    pub uploads: u64,
    /// Bytes those uploads held.
    pub upload_bytes: u64,
    /// Objects deleted from the queue.
    pub garbage: u64,
    /// Objects deleted that nothing recorded.
    pub orphans: u64,
}

impl ObjectBackend {
    /// One sweep of every home. Blocks; call from a blocking thread.
    pub fn sweep(self: &Arc<Self>, expiry: Duration, grace: Duration) -> Result<Swept, StorageError> {
        let b = self.clone();
        self.block(async move { sweep(&b, expiry, grace).await })
    }
}

async fn sweep(b: &ObjectBackend, expiry: Duration, grace: Duration) -> Result<Swept, StorageError> {
    let mut swept = Swept::default();
    let expired_before = now() - expiry.as_secs() as i64;
    let grace_before = now() - grace.as_secs() as i64;
    {
        let mut c = b.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let rows = tx
            .query(
                "SELECT id, COALESCE((SELECT SUM(len) FROM ns_segments WHERE upload = u.id), 0)::BIGINT \
                 FROM ns_uploads u WHERE updated < $1 FOR UPDATE SKIP LOCKED",
                &[&expired_before],
            )
            .await
            .map_err(pg_err)?;
        for r in rows {
            let id: String = r.get(0);
            tx.execute(
                "INSERT INTO ns_garbage (key, since) SELECT key, 0 FROM ns_segments WHERE upload = $1 ON CONFLICT (key) DO NOTHING",
                &[&id],
            )
            .await
            .map_err(pg_err)?;
            tx.execute("DELETE FROM ns_uploads WHERE id = $1", &[&id]).await.map_err(pg_err)?;
            swept.uploads += 1;
            swept.upload_bytes += r.get::<_, i64>(1) as u64;
        }
        tx.commit().await.map_err(pg_err)?;
    }
    let keys: Vec<String> = {
        let c = b.client().await?;
        let rows = c.query("SELECT key FROM ns_garbage WHERE since <= $1", &[&grace_before]).await.map_err(pg_err)?;
        rows.iter().map(|r| r.get(0)).collect()
    };
    swept.garbage = delete_garbage_keys(b, &keys).await?;
    swept.orphans = delete_orphans(b, grace_before).await?;
    Ok(swept)
}

/// Deletes the objects `keys` (already gone is fine), then their queue rows; returns how many.
pub(super) async fn delete_garbage_keys(b: &ObjectBackend, keys: &[String]) -> Result<u64, StorageError> {
    let mut deleted = 0;
    for key in keys {
        match b.op.delete(key).await {
            Ok(()) => {}
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
            Err(e) => return Err(s3_err(e)),
        }
        let c = b.client().await?;
        c.execute("DELETE FROM ns_garbage WHERE key = $1", &[key]).await.map_err(pg_err)?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Deletes objects under `staging/` and `blobs/` that PostgreSQL does not name and that were
/// last modified before `before` (seconds since the epoch).
async fn delete_orphans(b: &ObjectBackend, before: i64) -> Result<u64, StorageError> {
    let known: HashSet<String> = {
        let c = b.client().await?;
        let mut known = HashSet::new();
        for r in c.query("SELECT key FROM ns_segments", &[]).await.map_err(pg_err)? {
            known.insert(r.get::<_, String>(0));
        }
        for r in c.query("SELECT 'blobs/' || id FROM ns_blobs", &[]).await.map_err(pg_err)? {
            known.insert(r.get::<_, String>(0));
        }
        known
    };
    let mut deleted = 0;
    for prefix in ["staging/", "blobs/"] {
        let entries = match b.op.list_with(prefix).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
            Err(e) => return Err(s3_err(e)),
        };
        for entry in entries {
            let key = entry.path().to_string();
            if key.ends_with('/') || known.contains(&key) {
                continue;
            }
            let modified = match entry.metadata().last_modified() {
                Some(t) => Some(t),
                None => b.op.stat(&key).await.ok().and_then(|m| m.last_modified()),
            };
            let old = modified.is_some_and(|t| t.into_inner().as_second() < before);
            if !old {
                continue;
            }
            match b.op.delete(&key).await {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                Err(e) => return Err(s3_err(e)),
            }
        }
    }
    Ok(deleted)
}
