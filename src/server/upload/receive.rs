//! The data phase of a TCP upload: checked chunks go to the writer thread until `PutEnd` or
//! `Abort` (CTRL-PUT-3, CTRL-XFER-3).

use md5::Md5;

use super::{Outcome, Upload};
use crate::conn::ConnError;
use crate::proto::control::Md5Digest;
use crate::proto::{Frame, Request};
use crate::server::errors::Reply;
use crate::server::session::{Conn, Next};
use crate::transfer::{self, spawn_writer, ChunkCheck, TransferError};

pub(super) async fn receive(conn: &mut Conn, upload: &Upload, file: std::fs::File, hasher: Md5) -> Outcome {
    let mut check = ChunkCheck::new(upload.offset, upload.size);
    let mut writer = spawn_writer(file, hasher);
    let mut failure: Option<TransferError> = None;
    let end = loop {
        let next = match conn.next().await {
            Ok(n) => n,
            Err(e) => break Outcome::Lost(e),
        };
        let step = match next {
            Next::Idle => break Outcome::Idle,
            Next::Stop => break Outcome::Stop,
            Next::Frame(Frame::Data(chunk)) if failure.is_none() => match check.accept(&chunk) {
                Ok(()) => writer.write(chunk).await,
                Err(e) => Err(e),
            },
            Next::Frame(Frame::Data(_)) => Ok(()), // draining after a reported failure
            Next::Frame(Frame::Control(p)) => match Frame::decode_control::<Request>(&p) {
                Ok(Request::PutEnd { md5 }) => break Outcome::PutEnd(md5),
                Ok(Request::Abort) => break Outcome::Abort,
                _ => break Outcome::Lost(malformed()),
            },
        };
        if let Err(e) = step {
            if failure.is_none() {
                tracing::warn!("upload of {} failed: {e}", upload.target);
                if let Err(ce) = conn.reply(&Reply::from(&e).into_response()).await {
                    break Outcome::Lost(ce);
                }
                failure = Some(e);
            }
        }
    };
    let written = writer.finish().await;
    match (failure, end) {
        (Some(f), Outcome::PutEnd(_) | Outcome::Abort) => Outcome::Failed(f, true),
        // Reported already; the session ends without a second error for this upload.
        (Some(f), _) => Outcome::FailedThenClosed(f),
        (_, Outcome::PutEnd(md5)) => match written {
            Ok(w) => {
                verify_end(&check, &md5, &w.md5).map_or_else(|e| Outcome::Failed(e, false), |_| Outcome::PutEnd(md5))
            }
            Err(e) => Outcome::Failed(e, false),
        },
        (_, other) => other,
    }
}

fn malformed() -> ConnError {
    ConnError::Decode(crate::proto::DecodeError::Malformed("expected a data frame, PutEnd or Abort".into()))
}

fn verify_end(check: &ChunkCheck, client_md5: &Md5Digest, server_md5: &Md5Digest) -> Result<(), TransferError> {
    check.ensure_complete()?;
    transfer::check_digest(client_md5, server_md5)
}
