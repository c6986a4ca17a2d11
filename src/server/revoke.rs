//! Ending live sessions when their user's credentials change (CTRL-SESS-7).
//!
//! Each logged-in session registers the credential generation it logged in under and gets a
//! cancel handle. A poller reads the store's generation stamps twice a second and cancels
//! every session of a user whose stamp is newer, so `xfer user del` and `xfer user passwd`,
//! run by another process, end the user's sessions within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::session::lock;
use crate::store::UserStore;

/// How often the store is polled.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(400);

#[derive(Debug)]
struct Entry {
    user: String,
    generation: i64,
    cancel: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    sessions: HashMap<u64, Entry>,
    /// Newest generation seen per user, so that a session registering after its user's change
    /// was polled is cancelled at once.
    newest: HashMap<String, i64>,
}

/// Live sessions by id, with their cancel handles.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    table: Mutex<Table>,
}

/// A session's registration; unregisters on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.table).sessions.remove(&self.id);
    }
}

impl Registry {
    /// Registers a session of `user` logged in under `generation`. The receiver turns true
    /// when the session must end.
    pub fn register(self: &Arc<Self>, user: &str, generation: i64) -> (Registration, watch::Receiver<bool>) {
        let mut t = lock(&self.table);
        let stale = t.newest.get(user).is_some_and(|&g| g > generation);
        let (cancel, rx) = watch::channel(stale);
        t.next_id += 1;
        let id = t.next_id;
        t.sessions.insert(id, Entry { user: user.to_owned(), generation, cancel });
        (Registration { registry: self.clone(), id }, rx)
    }

    /// Records that `user` now has `generation` and cancels that user's older sessions.
    /// Returns how many were cancelled.
    pub fn changed(&self, user: &str, generation: i64) -> usize {
        let mut t = lock(&self.table);
        t.newest.insert(user.to_owned(), generation);
        let mut n = 0;
        for e in t.sessions.values().filter(|e| e.user == user && e.generation < generation) {
            if !*e.cancel.borrow() {
                n += 1;
            }
            e.cancel.send_replace(true);
        }
        n
    }
}

/// Polls `store` until `stop` turns true, applying every credential change to `registry`.
pub(crate) async fn poll(store: Arc<dyn UserStore>, registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    let s = store.clone();
    let mut seen = match tokio::task::spawn_blocking(move || s.latest_auth_generation()).await {
        Ok(Ok(g)) => g,
        _ => 0,
    };
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A shared store also wakes the poller when a change is announced (STORE-REVOKE-1).
    let signal = store.change_signal();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = announced(signal.as_deref()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = store.clone();
        let changes = match tokio::task::spawn_blocking(move || s.auth_changes_since(seen)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!("cannot poll credential changes: {e}");
                continue;
            }
            Err(_) => continue,
        };
        for (user, generation) in changes {
            seen = seen.max(generation);
            let ended = registry.changed(&user, generation);
            tracing::info!(
                target: "xfer::audit",
                event = "user_changed",
                user = %super::audit::Clean(&user),
                result = "ok",
                sessions_ended = ended,
                "account added, deleted or given a new password"
            );
        }
    }
}

async fn announced(signal: Option<&tokio::sync::Notify>) {
    match signal {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_only_older_sessions_of_the_changed_user() {
        let r = Arc::new(Registry::default());
        let (_a, a) = r.register("alice", 3);
        let (_b, b) = r.register("bob", 3);
        let (_c, c) = r.register("alice", 5);
        assert_eq!(r.changed("alice", 5), 1);
        assert!(*a.borrow());
        assert!(!*b.borrow() && !*c.borrow());
    }

    #[test]
    fn cancels_a_session_that_registers_after_its_change_was_seen() {
        let r = Arc::new(Registry::default());
        r.changed("alice", 7);
        let (_old, old) = r.register("alice", 6);
        let (_new, new) = r.register("alice", 7);
        assert!(*old.borrow());
        assert!(!*new.borrow());
    }

    #[test]
    fn dropping_a_registration_unregisters() {
        let r = Arc::new(Registry::default());
        let (reg, _) = r.register("alice", 1);
        drop(reg);
        assert!(lock(&r.table).sessions.is_empty());
    }
}
