//! Partial expiry (QUOTA-7): partial files untouched for longer than the configured age are
//! deleted with their range maps, and their charge is released. Runs at start (before usage
//! is reconciled, OPS-USAGE-1) and periodically while the server runs. A partial is swept only
//! while the sweep holds its upload slot, so an upload never loses the file it writes.
//!
//! Homes are reached through [`Storage`], so object-storage homes are swept the same way
//! (their unfinished uploads); the periodic sweep then runs the object store's own collection
//! of queued and orphaned objects (STORE-OBJ-7).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::UploadSlot;
use crate::home::{Home, HomePath};
use crate::server::ObjectService;
use crate::server::{RootLayout, ServerState, SetupError};
use crate::storage::{LocalStorage, Storage, StorageError};
use crate::store::UserStore;

/// How long a queued or orphaned object is kept before it is deleted, so that downloads
/// still reading it can finish.
#[cfg(feature = "cluster")]
const OBJECT_GRACE: Duration = Duration::from_secs(3600);

/// The storage of `user`'s home: object storage when configured, else the local home.
fn storage_of(
    objects: Option<&ObjectService>,
    layout: &RootLayout,
    user: &str,
) -> Result<Arc<dyn Storage>, StorageError> {
    match objects {
        #[cfg(feature = "cluster")]
        Some(o) => Ok(Arc::new(o.backend().home(user))),
        _ => Ok(Arc::new(LocalStorage::new(Arc::new(Home::open(&layout.home_of(user))?)))),
    }
}

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
    objects: Option<&ObjectService>,
    layout: &RootLayout,
    max_age: Duration,
) -> Result<(), SetupError> {
    let cutoff = cutoff(max_age);
    for user in store.list_users()? {
        let err = |e: StorageError| match e {
            StorageError::Home(source) => SetupError::Home { user: user.name.clone(), source },
            other => SetupError::Storage(other),
        };
        let home = storage_of(objects, layout, &user.name).map_err(err)?;
        // With object storage, another server may be writing: take the upload slots.
        let claim = |target: &HomePath| match objects {
            Some(_) => store.claim_upload(&user.name, &target.to_string()).ok().flatten().map(Some),
            None => Some(None),
        };
        let swept = sweep_home(&*home, store, &user.name, cutoff, claim).map_err(err)?;
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
        let swept = storage_of(state.objects.as_ref(), &state.layout, &name)
            .and_then(|home| sweep_home(&*home, &*state.store, &name, cutoff, claim));
        match swept {
            Ok(s) => log(&name, s),
            Err(e) => tracing::warn!(user = %name, "partial sweep: {e}"),
        }
    }
    // STORE-OBJ-7: queued and orphaned objects. Expired uploads were taken above, each under
    // its slot with its charge released; the backend's own pass only catches those left over
    // (an upload whose user is gone), so it gets twice the age.
    #[cfg(feature = "cluster")]
    if let Some(objects) = &state.objects {
        match objects.backend().sweep(max_age.saturating_mul(2), OBJECT_GRACE) {
            Ok(s) if s.uploads > 0 || s.garbage > 0 || s.orphans > 0 => tracing::info!(
                uploads = s.uploads,
                upload_bytes = s.upload_bytes,
                garbage = s.garbage,
                orphans = s.orphans,
                "object storage swept"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("object storage sweep: {e}"),
        }
    }
}

/// Deletes `user`'s partials last modified at or before `cutoff` (seconds since the epoch)
/// and the range maps whose partial is gone, each only while `claim` holds its upload slot.
pub(in crate::server) fn sweep_home<G>(
    home: &dyn Storage,
    store: &dyn UserStore,
    user: &str,
    cutoff: i64,
    mut claim: impl FnMut(&HomePath) -> Option<G>,
) -> Result<Swept, StorageError> {
    let mut swept = Swept::default();
    for p in home.partials()?.into_iter().filter(|p| p.mtime <= cutoff) {
        let Some(_slot) = claim(&p.target) else { continue };
        if home.staged_len(&p.target)?.is_none() {
            continue;
        }
        let freed = home.discard_staging(&p.target)?;
        store.adjust_usage(user, -(freed as i64), -1);
        let _ = store.delete_ranges(user, &p.target.to_string());
        swept.partials += 1;
        swept.bytes += freed;
    }
    for path in store.range_map_paths(user).unwrap_or_default() {
        let Ok(target) = HomePath::resolve(&HomePath::root(), &path) else { continue };
        let Some(_slot) = claim(&target) else { continue };
        if matches!(home.staged_len(&target), Ok(None)) && store.delete_ranges(user, &path).is_ok() {
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
