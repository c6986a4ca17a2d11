//! The task that drives one flow. It makes no protocol decisions: it moves what
//! [`Flow::poll_transmit`] encodes into the socket, what [`Flow::poll_event`] says into the
//! file writer, file blocks into the flow when it asks, and sleeps until the flow's deadline
//! or until the demultiplexer wakes it.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::early::EarlyDatagram;
use super::io::UdpIo;
use super::sink::SinkQueue;
use super::source::BlockSource;
use super::FlowShared;
use crate::proto::control::Md5Digest;
use crate::transfer::TransferError;
use crate::udp::flow::{Event, FlowFailure, MAX_GSO_BYTES};

/// Sends one step may make before the task yields to the runtime.
const MAX_TRANSMITS_PER_STEP: usize = 64;

/// How a flow ended normally.
#[derive(Debug)]
pub enum FlowEnd {
    /// The sending end: the receiver holds every byte; `md5` covers the whole file.
    Sent { md5: Md5Digest },
    /// Stopped from outside (the control channel decided).
    Stopped,
}

/// Why a flow failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Flow(#[from] FlowFailure),
    #[error("{0}")]
    Source(#[from] TransferError),
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a flow's file bytes come from or go to.
pub enum FileEnd {
    /// A sending end reads them here.
    Source(BlockSource),
    /// A receiving end writes them here.
    Sink(SinkQueue),
}

/// Runs the flow until the sending end is done, `stop` turns true, or it fails; `held` are the
/// datagrams that came before the flow (UDP-CTRL-9, -10).
pub async fn drive(
    shared: Arc<FlowShared>,
    io: Arc<UdpIo>,
    mut file: FileEnd,
    mut stop: watch::Receiver<bool>,
    held: Vec<EarlyDatagram>,
) -> Result<FlowEnd, FlowError> {
    let mut buf = Vec::with_capacity(MAX_GSO_BYTES + 1500);
    feed_held(&shared, &io, &mut buf, held).await?;
    loop {
        if *stop.borrow() {
            return Ok(FlowEnd::Stopped);
        }
        let busy = transmit(&shared, &io, &mut buf).await?;
        match handle_events(&shared, &mut file)? {
            Told::Done => {
                let FileEnd::Source(mut src) = file else { return Ok(FlowEnd::Stopped) };
                return Ok(FlowEnd::Sent { md5: src.md5().await? });
            }
            Told::AllSent => {
                if let FileEnd::Source(src) = &mut file {
                    let md5 = src.md5().await?;
                    shared.all_sent.send_replace(Some(md5));
                }
            }
            Told::Nothing => {}
        }
        if let FileEnd::Source(src) = &mut file {
            let wanted = shared.lock().needs_data();
            if let Some(end) = wanted {
                src.ensure(end).await?;
                let mut flow = shared.lock();
                for (start, len, data) in src.take_loaded() {
                    flow.push_block(start, len, data);
                }
                continue;
            }
        }
        if busy {
            tokio::task::yield_now().await;
            continue;
        }
        let deadline = shared.lock().poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep => shared.lock().handle_timeout(Instant::now()),
            r = stop.changed() => if r.is_err() { return Ok(FlowEnd::Stopped) },
        }
    }
}

/// Hands the flow the datagrams that came before it, in order, sending what it owes whenever
/// [`Flow::held_transmit_due`](crate::udp::flow::Flow::held_transmit_due) says it would have
/// gone before the next one arrived (UDP-CTRL-10, UDP-RATE-10).
async fn feed_held(
    shared: &FlowShared,
    io: &UdpIo,
    buf: &mut Vec<u8>,
    held: Vec<EarlyDatagram>,
) -> Result<(), FlowError> {
    let arrivals: Vec<Instant> = held.iter().map(|h| h.at).collect();
    for (i, mut h) in held.into_iter().enumerate() {
        let due = {
            let mut flow = shared.lock();
            flow.handle_held_datagram(Instant::now(), h.at, h.from, &mut h.datagram);
            flow.held_transmit_due(arrivals.get(i + 1).copied())
        };
        if due {
            transmit(shared, io, buf).await?;
        }
    }
    Ok(())
}

/// Sends what the flow has encoded; true if it had more than one step's worth.
async fn transmit(shared: &FlowShared, io: &UdpIo, buf: &mut Vec<u8>) -> Result<bool, FlowError> {
    for _ in 0..MAX_TRANSMITS_PER_STEP {
        let t = {
            let mut flow = shared.lock();
            let now = Instant::now();
            if flow.poll_timeout().is_some_and(|at| at <= now) {
                flow.handle_timeout(now);
            }
            flow.poll_transmit(now, buf)
        };
        let Some(t) = t else { return Ok(false) };
        io.send(t.dest, &buf[..t.size], t.segment_size.unwrap_or(t.size)).await?;
    }
    Ok(true)
}

/// What the flow's events asked of the task.
enum Told {
    Nothing,
    /// The sending end has sent every byte once: publish the file's md5.
    AllSent,
    /// The sending end is done.
    Done,
}

/// Hands the flow's events on.
fn handle_events(shared: &FlowShared, file: &mut FileEnd) -> Result<Told, FlowError> {
    let mut flow = shared.lock();
    let mut told = Told::Nothing;
    while let Some(ev) = flow.poll_event() {
        match (ev, &mut *file) {
            // A failed writer (a full disk) ends the flow now: no more acks for data that
            // cannot be stored (UDP-END-7).
            (Event::Write { offset, data }, FileEnd::Sink(sink)) => sink.write(offset, data)?,
            // Every Write before it has been handed to the writer.
            (Event::AllHeld, FileEnd::Sink(_)) => {
                shared.all_held.send_replace(true);
            }
            (Event::AllSent, FileEnd::Source(_)) => told = Told::AllSent,
            (Event::Done, _) => return Ok(Told::Done),
            (Event::Failed(why), _) => return Err(why.into()),
            _ => {}
        }
    }
    if let FileEnd::Sink(sink) = file {
        flow.handle_sink_backlog(Instant::now(), sink.backlog());
    }
    Ok(told)
}
