//! Partial expiry (QUOTA-7): partial files untouched for longer than the configured age are
//! deleted with their range maps, and their charge is released. Runs at start (before usage
//! is reconciled, OPS-USAGE-1) and periodically while the server runs. A partial is swept only
//! while the sweep holds its upload slot, so an upload never loses the file it writes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::UploadSlot;
use crate::home::{Home, HomeError, HomePath};
use crate::server::{RootLayout, ServerState, SetupError};
use crate::store::UserStore;

/// Longest wait between two sweeps.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub partials: u64,
    pub bytes: u64,
    pub maps: u64,
}

/// Sweeps every home, then sets every user's usage to what its home holds and clears the
/// reservations (OPS-USAGE-1): all of them with the embedded store, only those whose lease
/// expired with a shared one (STORE-LEASE-3). Used at start, when this server runs no upload.
pub(in crate::server) fn at_start(
    store: &dyn UserStore,
    layout: &RootLayout,
    max_age: Duration,
) -> Result<(), SetupError> {
    let cutoff = cutoff(max_age);
    for user in store.list_users()? {
        let err = |source| SetupError::Home { user: user.name.clone(), source };
        let home = Home::open(&layout.home_of(&user.name)).map_err(err)?;
        let swept = sweep_home(&home, store, &user.name, cutoff, |_| Some(())).map_err(err)?;
        log(&user.name, swept);
        let usage = home.usage().map_err(err)?;
        store.reconcile_usage(&user.name, usage.bytes, usage.entries)?;
    }
    Ok(())
}

/// Sweeps every home now and then while the server runs; never returns.
pub(in crate::server) async fn periodic(state: Arc<ServerState>) {
    let max_age = state.config.quota.partial_expiry();
    let every = (max_age / 4).clamp(Duration::from_secs(1), MAX_INTERVAL);
    loop {
        tokio::time::sleep(every).await;
        let st = state.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || sweep_all(&st, max_age)).await {
            tracing::error!("partial sweep failed: {e}");
        }
    }
}

fn sweep_all(state: &Arc<ServerState>, max_age: Duration) {
    let users = match state.store.list_users() {
        Ok(users) => users,
        Err(e) => return tracing::warn!("partial sweep: {e}"),
    };
    let cutoff = cutoff(max_age);
    for user in users {
        let name = user.name;
        let claim = |target: &HomePath| UploadSlot::acquire(state, &name, target).ok();
        let swept = Home::open(&state.layout.home_of(&name))
            .and_then(|home| sweep_home(&home, &*state.store, &name, cutoff, claim));
        match swept {
            Ok(s) => log(&name, s),
            Err(e) => tracing::warn!(user = %name, "partial sweep: {e}"),
        }
    }
}

/// Deletes `user`'s partials last modified at or before `cutoff` (seconds since the epoch)
/// and the range maps whose partial is gone, each only while `claim` holds its upload slot.
pub(in crate::server) fn sweep_home<G>(
    home: &Home,
    store: &dyn UserStore,
    user: &str,
    cutoff: i64,
    mut claim: impl FnMut(&HomePath) -> Option<G>,
) -> Result<Swept, HomeError> {
    let mut swept = Swept::default();
    for p in home.partials()?.into_iter().filter(|p| p.mtime <= cutoff) {
        let Some(_slot) = claim(&p.target) else { continue };
        if home.partial_len(&p.target)?.is_none() {
            continue;
        }
        let freed = home.discard_partial(&p.target)?;
        store.adjust_usage(user, -(freed as i64), -1);
        let _ = store.delete_ranges(user, &p.target.to_string());
        swept.partials += 1;
        swept.bytes += freed;
    }
    for path in store.range_map_paths(user).unwrap_or_default() {
        let Ok(target) = HomePath::resolve(&HomePath::root(), &path) else { continue };
        let Some(_slot) = claim(&target) else { continue };
        if matches!(home.partial_len(&target), Ok(None)) && store.delete_ranges(user, &path).is_ok() {
            swept.maps += 1;
        }
    }
    Ok(swept)
}

fn cutoff(max_age: Duration) -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.saturating_sub(max_age).as_secs()).unwrap_or(i64::MAX)
}

fn log(user: &str, s: Swept) {
    if s != Swept::default() {
        tracing::info!(%user, partials = s.partials, bytes = s.bytes, maps = s.maps, "expired partial uploads removed");
    }
}
