//! The data phase of a TCP upload: checked chunks go to the writer thread until `PutEnd` or
//! `Abort` (CTRL-PUT-3, CTRL-XFER-3). The md5 is verified when the staging finishes, in
//! the settle phase (CTRL-PUT-4).

use super::writer::StagingWriter;
use super::{Outcome, Upload};
use crate::conn::ConnError;
use crate::proto::{Frame, Request};
use crate::server::errors::Reply;
use crate::server::session::{Conn, Next};
use crate::storage::Staging;
use crate::transfer::{ChunkCheck, TransferError};

/// Returns the staging (unless its writer thread died) and how the data phase ended.
pub(super) async fn receive(
    conn: &mut Conn,
    upload: &Upload,
    staging: Box<dyn Staging>,
) -> (Option<Box<dyn Staging>>, Outcome) {
    let mut check = ChunkCheck::new(upload.offset, upload.size);
    let mut writer = StagingWriter::spawn(staging);
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
    let (staging, written) = writer.finish().await;
    let outcome = match (failure, end) {
        (Some(f), Outcome::PutEnd(_) | Outcome::Abort) => Outcome::Failed(f, true),
        // Reported already; the session ends without a second error for this upload.
        (Some(f), _) => Outcome::FailedThenClosed(f),
        (_, Outcome::PutEnd(md5)) => match written.and_then(|()| check.ensure_complete()) {
            Ok(()) => Outcome::PutEnd(md5),
            Err(e) => Outcome::Failed(e, false),
        },
        (_, other) => other,
    };
    (staging, outcome)
}

fn malformed() -> ConnError {
    ConnError::Decode(crate::proto::DecodeError::Malformed("expected a data frame, PutEnd or Abort".into()))
}
