//! The `AwaitAuth` state: serves `Auth` until one succeeds (CTRL-AUTH-*).
//!
//! A login is admitted by the throttle before its password is checked (the attempt counts as
//! in flight from then on, CTRL-AUTH-4), checked by the bounded hashing pool, and on success
//! given a slot in the logged-in pool (CTRL-SESS-6) and a revocation handle (CTRL-SESS-7).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::audit::{Audit, Clean};
use super::errors::{blocking, Reply};
use super::limits::SessionPermit;
use super::revoke::Registration;
use super::session::{lock, Conn, Next, Session};
use super::ServerState;
use crate::auth::Ticket;
use crate::conn::ConnError;
use crate::home::{Home, HomePath};
use crate::proto::{ErrorCode, Frame, Request, Response};

/// How often a waiting login looks again for its turn or a session slot.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// How long a correct login waits for a session slot before `Busy` (CTRL-SESS-6).
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a logged-in session holds until it ends: its pool slot and its revocation handle.
pub(crate) struct SessionSlot {
    _permit: SessionPermit,
    _registration: Registration,
    revoked: watch::Receiver<bool>,
}

impl SessionSlot {
    pub fn revoked(&self) -> watch::Receiver<bool> {
        self.revoked.clone()
    }
}

/// An attempt admitted by the throttle. Dropped without a verdict (the client vanished or the
/// deadline passed mid-check), it counts as a failure.
struct Attempt {
    state: Arc<ServerState>,
    ticket: Option<Ticket>,
}

impl Attempt {
    /// Waits while other attempts on the same keys are in flight (the pre-login deadline
    /// bounds the wait); refuses with the wait when a key is locked.
    async fn begin(state: &Arc<ServerState>, user: &str, peer: SocketAddr) -> Result<Attempt, std::time::Duration> {
        loop {
            match lock(&state.throttle).begin(user, peer.ip(), Instant::now()) {
                Ok(ticket) => return Ok(Attempt { state: state.clone(), ticket: Some(ticket) }),
                Err(crate::auth::throttle::IN_FLIGHT) => {}
                Err(wait) => return Err(wait),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    fn succeed(mut self) {
        if let Some(t) = self.ticket.take() {
            lock(&self.state.throttle).succeed(t, Instant::now());
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            lock(&self.state.throttle).fail(t, Instant::now());
        }
    }
}

/// Serves `AwaitAuth` until a login succeeds (`Some`), or the client leaves (`None`).
pub(crate) async fn authenticate(
    conn: &mut Conn,
    state: &Arc<ServerState>,
    peer: SocketAddr,
    secret: crate::udp::seal::SessionSecret,
) -> Result<Option<Session>, ConnError> {
    loop {
        let payload = match conn.next().await? {
            Next::Frame(Frame::Control(p)) => p,
            Next::Frame(Frame::Data(_)) => {
                conn.reply_error(ErrorCode::NotAuthenticated, "log in first").await?;
                continue;
            }
            Next::Idle => {
                conn.reply_error(ErrorCode::IdleTimeout, "login timed out").await?;
                return Ok(None);
            }
            Next::Stop => {
                conn.reply_error(ErrorCode::ShuttingDown, "server is shutting down").await?;
                return Ok(None);
            }
        };
        match Frame::decode_control::<Request>(&payload) {
            Ok(Request::Auth { user, password }) => match login(state, peer, user, password, secret).await {
                Ok(session) => {
                    conn.reply(&Response::Authed { cwd: session.cwd.to_string() }).await?;
                    return Ok(Some(session));
                }
                Err(reply) => conn.reply(&reply.into_response()).await?,
            },
            Ok(Request::Bye) => return Ok(None),
            Ok(_) => conn.reply_error(ErrorCode::NotAuthenticated, "log in first").await?,
            Err(e) => conn.reply_error(ErrorCode::BadRequest, e.to_string()).await?,
        }
    }
}

/// Throttle, then password, then a session slot; opens the home on success. Unknown users and
/// wrong passwords get the same answer after the same work (CTRL-AUTH-3).
async fn login(
    state: &Arc<ServerState>,
    peer: SocketAddr,
    user: String,
    password: String,
    secret: crate::udp::seal::SessionSecret,
) -> Result<Session, Reply> {
    let attempt = match Attempt::begin(state, &user, peer).await {
        Ok(a) => a,
        Err(wait) => {
            note_refusal(state, "throttled", &user, peer);
            let secs = wait.as_secs_f64().ceil() as u64;
            return Err(Reply::new(ErrorCode::Throttled, format!("too many failed logins; try again in {secs} s")));
        }
    };
    let (st, name) = (state.clone(), user.clone());
    let (shared_wait, record) = blocking(move || {
        // STORE-THROTTLE-1: failures counted by every server sharing the store.
        let wait = st.store.shared_lockout(&name, peer.ip())?;
        Ok((wait, st.store.login_record(&name)?))
    })
    .await?;
    if let Some(wait) = shared_wait {
        drop(attempt);
        note_refusal(state, "throttled", &user, peer);
        let secs = wait.as_secs_f64().ceil() as u64;
        return Err(Reply::new(ErrorCode::Throttled, format!("too many failed logins; try again in {secs} s")));
    }
    let (hash, generation) = record.map_or((None, 0), |r| (Some(r.hash), r.generation));
    let ok = state.hashing.verify(hash, password).await;
    if state.store.shared() {
        let (st, name) = (state.clone(), user.clone());
        let recorded = blocking(move || st.store.record_login(&name, peer.ip(), ok).map_err(Reply::from)).await;
        if let Err(e) = recorded {
            tracing::warn!("shared login throttle: {}", e.message);
        }
    }
    if !ok {
        drop(attempt);
        note_refusal(state, "failed", &user, peer);
        return Err(Reply::new(ErrorCode::AuthFailed, "login failed: wrong user name or password"));
    }
    attempt.succeed();
    let permit = session_slot(state, &user, peer).await.map_err(|full| {
        note_refusal(state, "busy", &user, peer);
        let which = match full {
            super::limits::Full::PerUser => "for this user",
            super::limits::Full::PerIp => "from this address",
            super::limits::Full::Total => "on this server",
        };
        Reply::new(ErrorCode::Busy, format!("too many sessions {which}; log out elsewhere or try later"))
    })?;
    let (registration, revoked) = state.revocations.register(&user, generation);
    let dir = state.layout.home_of(&user);
    let home = Arc::new(blocking(move || Home::open(&dir).map_err(Reply::from)).await?);
    super::metrics::login("ok");
    Audit::new("login", &user, peer, "/").message("logged in").emit();
    // STORE-OBJ-1: `[storage] kind = "s3"` keeps the home in object storage.
    let storage: Arc<dyn crate::storage::Storage> = match &state.objects {
        #[cfg(feature = "cluster")]
        Some(objects) => Arc::new(objects.backend().home(&user)),
        _ => Arc::new(crate::storage::LocalStorage::new(home.clone())),
    };
    Ok(Session {
        state: state.clone(),
        user,
        peer,
        storage,
        home,
        cwd: HomePath::root(),
        secret,
        flow_ids: Default::default(),
        _slot: SessionSlot { _permit: permit, _registration: registration, revoked },
    })
}

/// A slot in the logged-in pool, waiting up to [`SLOT_WAIT`] for one to come free.
async fn session_slot(state: &ServerState, user: &str, peer: SocketAddr) -> Result<SessionPermit, super::limits::Full> {
    let give_up = tokio::time::Instant::now() + SLOT_WAIT;
    loop {
        match state.limits.session(user, peer.ip()) {
            Ok(permit) => return Ok(permit),
            Err(full) if tokio::time::Instant::now() >= give_up => return Err(full),
            Err(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    }
}

/// Counts and logs a refused login; the lines pass the log budget, since anyone can cause
/// them without logging in (OPS-LOG-2).
fn note_refusal(state: &ServerState, outcome: &'static str, user: &str, peer: SocketAddr) {
    super::metrics::login(outcome);
    let Some(dropped) = lock(&state.log_budget).admit(outcome, Instant::now()) else {
        return;
    };
    let message = match outcome {
        "failed" => "login failed",
        "throttled" => "login throttled",
        _ => "login refused: too many sessions",
    };
    tracing::warn!(
        target: "xfer::audit",
        event = "login",
        user = %Clean(user),
        %peer,
        path = "/",
        result = outcome,
        suppressed = dropped,
        "{message}"
    );
}
