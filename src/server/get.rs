//! Download (CTRL-GET-*): open the file, verify the client's resumed prefix by md5, stream
//! checked chunks from the reader thread, then send the whole-file md5.

use md5::{Digest, Md5};

use super::errors::{blocking, Reply};
use super::session::{Conn, Session};
use crate::conn::ConnError;
use crate::proto::control::Md5Digest;
use crate::proto::{ErrorCode, Response};
use crate::storage::BlobReader;
use crate::transfer::{spawn_reader, SourceItem};

impl Session {
    /// Serves one `Get`. Returns `Ok(false)` when the session must end afterwards.
    pub(crate) async fn get(
        &mut self,
        conn: &mut Conn,
        path: String,
        offset: u64,
        prefix_md5: Option<Md5Digest>,
    ) -> Result<bool, ConnError> {
        let (file, size, hasher) = match self.prepare_get(&path, offset, prefix_md5).await {
            Ok(x) => x,
            Err(reply) => {
                conn.reply(&reply.into_response()).await?;
                return Ok(true);
            }
        };
        self.send_get(conn, &path, file, size, offset, hasher).await
    }

    /// The data phase of a TCP download of `file`, opened at `size` bytes, from `offset`
    /// (`hasher` holds the digest of the bytes before it): `GetReady`, the data frames, then
    /// `GetEnd` or an error (CTRL-GET-1 to CTRL-GET-3). Also serves `GetAuto` (UDP-CTRL-7).
    pub(crate) async fn send_get(
        &mut self,
        conn: &mut Conn,
        path: &str,
        file: Box<dyn BlobReader>,
        size: u64,
        offset: u64,
        hasher: Md5,
    ) -> Result<bool, ConnError> {
        conn.reply(&Response::GetReady { size, offset }).await?;
        let mut chunks = spawn_reader(file, offset, size, hasher);
        loop {
            if conn.stopping() {
                // CTRL-SESS-3 or CTRL-SESS-7.
                let (code, message) = conn.stop_error(true);
                conn.reply_error(code, message).await?;
                return Ok(false);
            }
            match chunks.recv().await {
                Some(Ok(SourceItem::Chunk(chunk))) => {
                    if !conn.send_data(&chunk).await? {
                        tracing::debug!("download of {path} cut: client stopped reading");
                        return Ok(false);
                    }
                }
                Some(Ok(SourceItem::Done { md5 })) => {
                    conn.reply(&Response::GetEnd { md5 }).await?;
                    return Ok(true);
                }
                Some(Err(e)) => {
                    conn.reply(&Reply::from(e).into_response()).await?;
                    return Ok(true);
                }
                None => {
                    conn.reply(&Reply::internal("file reader stopped").into_response()).await?;
                    return Ok(true);
                }
            }
        }
    }

    async fn prepare_get(
        &self,
        path: &str,
        offset: u64,
        prefix_md5: Option<Md5Digest>,
    ) -> Result<(Box<dyn BlobReader>, u64, Md5), Reply> {
        let target = self.resolve(path)?;
        let storage = self.storage.clone();
        blocking(move || {
            let file = storage.open_reader(&target)?;
            let size = file.size();
            if offset > size {
                return Err(source_changed(format!(
                    "the local partial file has {offset} bytes but {target} has only {size}"
                )));
            }
            if offset == 0 {
                return Ok((file, size, Md5::new()));
            }
            let Some(expected) = prefix_md5 else {
                return Err(Reply::new(ErrorCode::BadRequest, "resume offset given without a prefix digest"));
            };
            let hasher = crate::storage::hash_blob_prefix(&*file, offset)?;
            if <[u8; 16]>::from(hasher.clone().finalize()) != expected {
                return Err(source_changed(format!(
                    "the first {offset} bytes of {target} differ from the local partial file"
                )));
            }
            Ok((file, size, hasher))
        })
        .await
    }
}

fn source_changed(detail: String) -> Reply {
    Reply::new(ErrorCode::SourceChanged, format!("cannot resume: {detail}; download again without resuming"))
}
