//! An upload staged as segment objects (STORE-OBJ-3 to -5).
//!
//! Segment `i` covers bytes `[i * S, min((i + 1) * S, size))`. Writes land in a bounded spool
//! of open segments in memory; a segment is PUT to `staging/UPLOAD/IIIIIIII.EPOCH` once every
//! byte of it arrived, and recorded in `ns_segments` only after the PUT succeeded, in a
//! statement that also checks the writer's epoch. So what PostgreSQL records is durable, any
//! server can resume from it, and a writer that lost its claim cannot record anything. At the
//! end the segments are composed server-side into a new blob, whose md5 was verified first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::task::JoinHandle;

use md5::{Digest, Md5};

use super::{garbage, now, pg_err, s3_err, ObjectBackend};
use crate::home::{HomeError, HomePath};
use crate::proto::control::Md5Digest;
use crate::storage::{check_md5, Staging, StorageError};
use crate::udp::ranges::RangeSet;

/// Default segment size.
pub const SEGMENT_SIZE: u64 = 8 << 20;
/// S3's smallest multipart part (all but the last).
pub(super) const MIN_SEGMENT_SIZE: u64 = 5 << 20;
/// Segments being filled at once; bounds the spool to this many segments per upload.
const MAX_OPEN_SEGMENTS: usize = 4;
/// Complete segments being stored at once, while the next ones fill.
const MAX_IN_FLIGHT: usize = 2;

/// A segment still being filled.
struct Open {
    buf: Vec<u8>,
    filled: RangeSet,
}

/// A segment being stored: its index, its key and the task storing it.
type InFlight = (u64, String, JoinHandle<Result<(), StorageError>>);

pub(super) struct ObjectStaging {
    backend: Arc<ObjectBackend>,
    home: String,
    target: HomePath,
    upload: String,
    epoch: i64,
    size: u64,
    seg: u64,
    /// Recorded segments: index -> object key.
    recorded: BTreeMap<u64, String>,
    open: BTreeMap<u64, Open>,
    /// Segments being stored: index, key and the task doing it.
    in_flight: VecDeque<InFlight>,
    /// md5 over `[0, .1)`, while this writer received the file in order from its start.
    hasher: Option<(Md5, u64)>,
}

impl ObjectStaging {
    /// Claims the upload of `target` (a new one, or a resumed one with a higher epoch).
    pub(super) fn open(
        backend: Arc<ObjectBackend>,
        home: &str,
        target: &HomePath,
        size: u64,
        resume: bool,
    ) -> Result<ObjectStaging, StorageError> {
        let store = backend.home(home);
        let b = backend.clone();
        let (upload, epoch, recorded) = backend.block(async {
            let mut c = b.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            store.lock(&tx).await?;
            if store.row(&*tx, target).await?.is_some_and(|r| r.is_dir) {
                return Err(HomeError::IsADirectory(target.to_string()).into());
            }
            store.dir_row(&*tx, &target.parent().unwrap_or_default()).await?;
            let t = target.to_string();
            let found = tx
                .query_opt("SELECT id, size FROM ns_uploads WHERE home = $1 AND target = $2", &[&home, &t])
                .await
                .map_err(pg_err)?;
            let claimed = match found {
                Some(r) if resume && r.get::<_, i64>(1) as u64 == size => {
                    let id: String = r.get(0);
                    let epoch: i64 = tx
                        .query_one(
                            "UPDATE ns_uploads SET epoch = epoch + 1, owner = $2, updated = $3 WHERE id = $1 RETURNING epoch",
                            &[&id, &b.server_id, &now()],
                        )
                        .await
                        .map_err(pg_err)?
                        .get(0);
                    let segs = tx
                        .query("SELECT idx, len, key FROM ns_segments WHERE upload = $1", &[&id])
                        .await
                        .map_err(pg_err)?;
                    let mut recorded = BTreeMap::new();
                    for s in segs {
                        let idx = s.get::<_, i32>(0) as u64;
                        if s.get::<_, i64>(1) as u64 == seg_len(idx, b.segment_size, size) {
                            recorded.insert(idx, s.get::<_, String>(2));
                        }
                    }
                    (id, epoch, recorded)
                }
                _ => {
                    drop_upload(&tx, home, &t).await?;
                    let id = super::new_id();
                    tx.execute(
                        "INSERT INTO ns_uploads (id, home, target, size, epoch, owner, updated) VALUES ($1, $2, $3, $4, 1, $5, $6)",
                        &[&id, &home, &t, &(size as i64), &b.server_id, &now()],
                    )
                    .await
                    .map_err(pg_err)?;
                    (id, 1, BTreeMap::new())
                }
            };
            tx.commit().await.map_err(pg_err)?;
            Ok::<_, StorageError>(claimed)
        })?;
        let hasher = recorded.is_empty().then(|| (Md5::new(), 0));
        let seg = backend.segment_size;
        Ok(ObjectStaging {
            backend,
            home: home.to_string(),
            target: target.clone(),
            upload,
            epoch,
            size,
            seg,
            recorded,
            open: BTreeMap::new(),
            in_flight: VecDeque::new(),
            hasher,
        })
    }

    fn segments(&self) -> u64 {
        self.size.div_ceil(self.seg)
    }

    /// Starts storing a complete segment: PUT, then the record under this writer's epoch, on
    /// the runtime while more bytes arrive. At most [`MAX_IN_FLIGHT`] run at once.
    fn store_segment(&mut self, idx: u64, data: Vec<u8>) -> Result<(), StorageError> {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.reap_one()?;
        }
        let key = format!("staging/{}/{idx:08}.{}", self.upload, self.epoch);
        let job = store(
            self.backend.clone(),
            self.upload.clone(),
            self.epoch,
            self.target.to_string(),
            idx,
            key.clone(),
            data,
        );
        self.in_flight.push_back((idx, key, self.backend.rt.spawn(job)));
        Ok(())
    }

    /// Waits for the oldest segment in flight and records it as durable.
    fn reap_one(&mut self) -> Result<(), StorageError> {
        let Some((idx, key, job)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let done = self.backend.block(job).unwrap_or_else(|e| {
            Err(StorageError::Unavailable { what: "object storage", detail: format!("segment upload stopped: {e}") })
        });
        done?;
        self.recorded.insert(idx, key);
        Ok(())
    }

    /// Waits for every segment in flight.
    fn drain(&mut self) -> Result<(), StorageError> {
        while !self.in_flight.is_empty() {
            self.reap_one()?;
        }
        Ok(())
    }

    /// md5 of the whole staged file: the running one if this writer saw every byte in order,
    /// else read back segment by segment.
    fn whole_md5(&mut self) -> Result<Md5Digest, StorageError> {
        if let Some((h, pos)) = self.hasher.take() {
            if pos == self.size {
                return Ok(h.finalize().into());
            }
        }
        let mut h = Md5::new();
        for key in self.recorded.values() {
            let data = self.backend.block(self.backend.op.read(key)).map_err(s3_err)?;
            for chunk in data {
                h.update(&chunk);
            }
        }
        Ok(h.finalize().into())
    }

    /// Composes the segments into blob `id` server-side and returns its ETag.
    fn compose(&self, id: &str, md5: &Md5Digest) -> Result<String, StorageError> {
        let b = &self.backend;
        let key = super::blob_key(id);
        b.block(async {
            let mut w =
                b.op.writer_with(&key)
                    .chunk(self.seg as usize)
                    .user_metadata([("md5".to_string(), hex::encode(md5))])
                    .await
                    .map_err(s3_err)?;
            for seg in self.recorded.values() {
                if let Err(e) = w.copy_from(seg, ..).await {
                    let _ = w.abort().await;
                    return Err(s3_err(e));
                }
            }
            if self.size == 0 {
                w.write(Vec::<u8>::new()).await.map_err(s3_err)?;
            }
            if let Err(e) = w.close().await {
                let _ = w.abort().await;
                return Err(s3_err(e));
            }
            let meta = b.op.stat(&key).await.map_err(s3_err)?;
            if meta.content_length() != self.size {
                return Err(StorageError::SourceChanged(format!(
                    "composed {} bytes of {}",
                    meta.content_length(),
                    self.size
                )));
            }
            meta.etag().map(str::to_string).ok_or_else(|| StorageError::Unavailable {
                what: "object storage",
                detail: "no ETag on the composed object".into(),
            })
        })
    }

    /// Makes the blob visible at the target, if this writer still holds the upload.
    fn publish(&self, id: &str, etag: &str, md5: &Md5Digest) -> Result<Option<u64>, StorageError> {
        let b = self.backend.clone();
        let store = b.home(&self.home);
        b.block(async {
            let mut c = b.client().await?;
            let tx = c.transaction().await.map_err(pg_err)?;
            store.lock(&tx).await?;
            let held = tx
                .query_opt("SELECT 1 FROM ns_uploads WHERE id = $1 AND epoch = $2 FOR UPDATE", &[&self.upload, &self.epoch])
                .await
                .map_err(pg_err)?;
            if held.is_none() {
                return Err(StorageError::Fenced(self.target.to_string()));
            }
            let mut replaced = None;
            match store.row(&*tx, &self.target).await? {
                Some(r) if r.is_dir => return Err(HomeError::IsADirectory(self.target.to_string()).into()),
                Some(r) => {
                    tx.execute(
                        "DELETE FROM ns_entries WHERE home = $1 AND path = $2",
                        &[&self.home, &self.target.to_string()],
                    )
                    .await
                    .map_err(pg_err)?;
                    if let Some(blob) = &r.blob {
                        super::drop_blob(&tx, blob).await?;
                    }
                    replaced = Some(r.size);
                }
                None => {}
            }
            store.dir_row(&*tx, &self.target.parent().unwrap_or_default()).await?;
            tx.execute(
                "INSERT INTO ns_blobs (id, home, size, md5, etag, created) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &self.home, &(self.size as i64), &md5.as_slice(), &etag, &now()],
            )
            .await
            .map_err(pg_err)?;
            super::insert_entry(&tx, &self.home, &self.target, false, Some(id), self.size).await?;
            // The segments are garbage at once: nothing refers to them any more.
            tx.execute(
                "INSERT INTO ns_garbage (key, since) SELECT key, 0 FROM ns_segments WHERE upload = $1 ON CONFLICT (key) DO NOTHING",
                &[&self.upload],
            )
            .await
            .map_err(pg_err)?;
            tx.execute("DELETE FROM ns_uploads WHERE id = $1", &[&self.upload]).await.map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(replaced)
        })
    }
}

impl Staging for ObjectStaging {
    fn size(&self) -> u64 {
        self.size
    }

    /// Recorded segments only: one still in flight may yet fail.
    fn durable(&self) -> RangeSet {
        let mut out = RangeSet::new();
        for &idx in self.recorded.keys() {
            let start = idx * self.seg;
            out.insert(start, start + seg_len(idx, self.seg, self.size));
        }
        out
    }

    fn write_at(&mut self, pos: u64, data: &[u8]) -> Result<(), StorageError> {
        let end = pos + data.len() as u64;
        if end > self.size {
            return Err(StorageError::InvalidWrite(format!("bytes up to {end} for a file of {}", self.size)));
        }
        if let Some((h, next)) = &mut self.hasher {
            if *next == pos {
                h.update(data);
                *next = end;
            } else if !data.is_empty() {
                // A gap, or bytes written again: the md5 is read back from what is stored.
                self.hasher = None;
            }
        }
        let mut at = pos;
        while at < end {
            let idx = at / self.seg;
            let seg_start = idx * self.seg;
            let seg_end = seg_start + seg_len(idx, self.seg, self.size);
            let piece_end = end.min(seg_end);
            let stored = self.recorded.contains_key(&idx) || self.in_flight.iter().any(|(i, ..)| *i == idx);
            if !stored {
                if !self.open.contains_key(&idx) && self.open.len() >= MAX_OPEN_SEGMENTS {
                    return Err(StorageError::InvalidWrite(format!(
                        "more than {MAX_OPEN_SEGMENTS} segments of {} open at once",
                        self.target
                    )));
                }
                let len = (seg_end - seg_start) as usize;
                let open = self.open.entry(idx).or_insert_with(|| Open { buf: vec![0; len], filled: RangeSet::new() });
                let (from, to) = ((at - seg_start) as usize, (piece_end - seg_start) as usize);
                open.buf[from..to].copy_from_slice(&data[(at - pos) as usize..(piece_end - pos) as usize]);
                open.filled.insert(from as u64, to as u64);
                if open.filled.contains(0, len as u64) {
                    let done = self.open.remove(&idx).map(|o| o.buf).unwrap_or_default();
                    self.store_segment(idx, done)?;
                }
            }
            at = piece_end;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<RangeSet, StorageError> {
        // Only whole segments can be stored: a partly filled one stays in the spool.
        self.drain()?;
        Ok(self.durable())
    }

    fn finish(mut self: Box<Self>, md5: &Md5Digest) -> Result<Option<u64>, StorageError> {
        self.drain()?;
        let missing = (0..self.segments()).filter(|i| !self.recorded.contains_key(i)).count();
        if missing > 0 {
            return Err(StorageError::InvalidWrite(format!("{missing} segments of {} not stored", self.target)));
        }
        let got = self.whole_md5()?;
        check_md5(md5, &got)?;
        let id = super::new_id();
        let etag = self.compose(&id, md5)?;
        let published = self.publish(&id, &etag, md5);
        let b = self.backend.clone();
        if published.is_err() {
            // The blob was never named: queue it so it is not billed forever.
            let key = super::blob_key(&id);
            let _ = b.block(async {
                let mut c = b.client().await?;
                let tx = c.transaction().await.map_err(pg_err)?;
                garbage(&tx, &key, 0).await?;
                tx.commit().await.map_err(pg_err)
            });
            return published;
        }
        // Best effort now; the sweep deletes whatever is left.
        let keys: Vec<String> = self.recorded.values().cloned().collect();
        let _ = b.block(super::sweep::delete_garbage_keys(&b, &keys));
        published
    }

    /// Forgets the segments from `len` on in this writer; their records are replaced when
    /// they are stored again. `len` must be the end of a segment or of the file.
    fn cut(&mut self, len: u64) -> Result<(), StorageError> {
        self.drain()?;
        let seg = self.seg;
        self.recorded.retain(|&idx, _| idx * seg < len);
        self.open.clear();
        let kept = self.durable().contiguous_from(0);
        if kept != len.min(self.size) && len > 0 {
            return Err(StorageError::InvalidWrite(format!("cannot keep {len} bytes of {}", self.target)));
        }
        self.hasher = (len == 0).then(|| (Md5::new(), 0));
        Ok(())
    }

    fn hash_prefix(&mut self, len: u64) -> Result<Md5, StorageError> {
        if len > 0 && !self.durable().contains(0, len) {
            return Err(StorageError::InvalidWrite(format!("{len} bytes of {} are not stored", self.target)));
        }
        let mut h = Md5::new();
        let mut at = 0;
        for (&idx, key) in &self.recorded {
            if at >= len {
                break;
            }
            let n = seg_len(idx, self.seg, self.size).min(len - at);
            let data = self.backend.block(self.backend.op.read_with(key).range(0..n)).map_err(s3_err)?;
            for chunk in data {
                h.update(&chunk);
            }
            at += n;
        }
        self.hasher = Some((h.clone(), len));
        Ok(h)
    }

    fn held(&self) -> Option<u64> {
        Some(self.durable().covered())
    }

    fn received_md5(&self) -> Option<Md5Digest> {
        crate::storage::running_md5(&self.hasher, self.size)
    }
}

/// Stores one segment: the PUT, then its record, only while `epoch` holds the upload.
async fn store(
    b: Arc<ObjectBackend>,
    upload: String,
    epoch: i64,
    target: String,
    idx: u64,
    key: String,
    data: Vec<u8>,
) -> Result<(), StorageError> {
    let len = data.len() as i64;
    b.op.write(&key, data).await.map_err(s3_err)?;
    let c = b.client().await?;
    let n = c
        .execute(
            "WITH claim AS (UPDATE ns_uploads SET updated = $5 WHERE id = $1 AND epoch = $4 RETURNING id) \
             INSERT INTO ns_segments (upload, idx, len, key) SELECT id, $2, $3, $6 FROM claim \
             ON CONFLICT (upload, idx) DO UPDATE SET len = EXCLUDED.len, key = EXCLUDED.key",
            &[&upload, &(idx as i32), &len, &epoch, &now(), &key],
        )
        .await
        .map_err(pg_err)?;
    if n == 0 {
        // Fenced: the object just written is an orphan for the sweep.
        return Err(StorageError::Fenced(target));
    }
    Ok(())
}

/// Length of segment `idx` of a file of `size` bytes in segments of `seg`.
fn seg_len(idx: u64, seg: u64, size: u64) -> u64 {
    size.saturating_sub(idx * seg).min(seg)
}

/// Forgets the upload of `target` and queues its segment objects; returns the bytes it held.
pub(super) async fn drop_upload(
    tx: &tokio_postgres::Transaction<'_>,
    home: &str,
    target: &str,
) -> Result<u64, StorageError> {
    let Some(row) = tx
        .query_opt("SELECT id FROM ns_uploads WHERE home = $1 AND target = $2", &[&home, &target])
        .await
        .map_err(pg_err)?
    else {
        return Ok(0);
    };
    let id: String = row.get(0);
    let freed = tx
        .query_one("SELECT COALESCE(SUM(len), 0)::BIGINT FROM ns_segments WHERE upload = $1", &[&id])
        .await
        .map_err(pg_err)?
        .get::<_, i64>(0) as u64;
    tx.execute(
        "INSERT INTO ns_garbage (key, since) SELECT key, 0 FROM ns_segments WHERE upload = $1 ON CONFLICT (key) DO NOTHING",
        &[&id],
    )
    .await
    .map_err(pg_err)?;
    tx.execute("DELETE FROM ns_uploads WHERE id = $1", &[&id]).await.map_err(pg_err)?;
    Ok(freed)
}
