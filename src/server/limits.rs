//! Connection and session pools (CTRL-SESS-5, CTRL-SESS-6).
//!
//! Connections that have not logged in yet and logged-in sessions are counted in two separate
//! pools, each with a cap per client address (and sessions also per user), so that neither
//! kind can take the other's room: silent connections cannot keep users from logging in, and
//! one account's sessions cannot keep other users out. A slot is a permit value that gives
//! itself back when dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::auth::throttle::source_of;
use crate::config::ServerSection;

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Total,
    PerIp,
    PerUser,
}

impl Full {
    pub fn label(self) -> &'static str {
        match self {
            Full::Total => "total",
            Full::PerIp => "per_ip",
            Full::PerUser => "per_user",
        }
    }
}

/// Caps of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caps {
    total: usize,
    per_ip: usize,
    per_user: usize,
}

/// Counts of one pool, with no I/O: `take` and `give` are the whole policy.
#[derive(Debug, Default)]
struct Pool {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    by_user: HashMap<String, usize>,
}

impl Pool {
    fn take(&mut self, caps: Caps, ip: IpAddr, user: Option<&str>) -> Result<(), Full> {
        if self.total >= caps.total {
            return Err(Full::Total);
        }
        if self.by_ip.get(&ip).copied().unwrap_or(0) >= caps.per_ip {
            return Err(Full::PerIp);
        }
        if let Some(user) = user {
            if self.by_user.get(user).copied().unwrap_or(0) >= caps.per_user {
                return Err(Full::PerUser);
            }
            *self.by_user.entry(user.to_owned()).or_default() += 1;
        }
        *self.by_ip.entry(ip).or_default() += 1;
        self.total += 1;
        Ok(())
    }

    fn give(&mut self, ip: IpAddr, user: Option<&str>) {
        self.total = self.total.saturating_sub(1);
        decrement(&mut self.by_ip, &ip);
        if let Some(user) = user {
            decrement(&mut self.by_user, user);
        }
    }
}

fn decrement<K: Hash + Eq + std::borrow::Borrow<Q>, Q: Hash + Eq + ?Sized>(map: &mut HashMap<K, usize>, key: &Q) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Both pools of a server.
#[derive(Debug)]
pub(crate) struct Limits {
    pending_caps: Caps,
    session_caps: Caps,
    pending: Mutex<Pool>,
    sessions: Mutex<Pool>,
}

impl Limits {
    pub fn new(cfg: &ServerSection) -> Arc<Limits> {
        let at_least_one = |n: usize| n.max(1);
        Arc::new(Limits {
            pending_caps: Caps {
                total: at_least_one(cfg.max_pending_logins),
                per_ip: at_least_one(cfg.max_pending_logins_per_ip),
                per_user: usize::MAX,
            },
            session_caps: Caps {
                total: at_least_one(cfg.max_sessions),
                per_ip: at_least_one(cfg.max_sessions_per_ip),
                per_user: at_least_one(cfg.max_sessions_per_user),
            },
            pending: Mutex::default(),
            sessions: Mutex::default(),
        })
    }

    /// A slot for a connection that has not logged in yet.
    pub fn pending(self: &Arc<Self>, ip: IpAddr) -> Result<PendingPermit, Full> {
        let ip = source_of(ip);
        super::session::lock(&self.pending).take(self.pending_caps, ip, None)?;
        Ok(PendingPermit { limits: self.clone(), ip })
    }

    /// A slot for a logged-in session of `user`.
    pub fn session(self: &Arc<Self>, user: &str, ip: IpAddr) -> Result<SessionPermit, Full> {
        let ip = source_of(ip);
        super::session::lock(&self.sessions).take(self.session_caps, ip, Some(user))?;
        Ok(SessionPermit { limits: self.clone(), ip, user: user.to_owned() })
    }

    /// Logged-in sessions now.
    #[cfg(test)]
    pub fn sessions_now(&self) -> usize {
        super::session::lock(&self.sessions).total
    }
}

/// A connection's slot in the pre-login pool.
#[derive(Debug)]
pub(crate) struct PendingPermit {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        super::session::lock(&self.limits.pending).give(self.ip, None);
    }
}

/// A session's slot in the logged-in pool.
#[derive(Debug)]
pub(crate) struct SessionPermit {
    limits: Arc<Limits>,
    ip: IpAddr,
    user: String,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        super::session::lock(&self.limits.sessions).give(self.ip, Some(&self.user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServerSection {
        ServerSection {
            max_sessions: 4,
            max_sessions_per_user: 2,
            max_sessions_per_ip: 3,
            max_pending_logins: 3,
            max_pending_logins_per_ip: 2,
            ..ServerSection::default()
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn rejects_pending_connections_over_the_per_ip_and_total_caps() {
        let limits = Limits::new(&cfg());
        let a = [limits.pending(ip(1)).unwrap(), limits.pending(ip(1)).unwrap()];
        assert_eq!(limits.pending(ip(1)).unwrap_err(), Full::PerIp);
        let b = limits.pending(ip(2)).unwrap();
        assert_eq!(limits.pending(ip(3)).unwrap_err(), Full::Total);
        drop(b);
        assert!(limits.pending(ip(3)).is_ok(), "a dropped permit gives its slot back");
        drop(a);
        assert_eq!(super::super::session::lock(&limits.pending).by_ip.len(), 0);
    }

    #[test]
    fn rejects_sessions_over_the_per_user_cap_but_accepts_other_users() {
        let limits = Limits::new(&cfg());
        let _a = [limits.session("alice", ip(1)).unwrap(), limits.session("alice", ip(2)).unwrap()];
        assert_eq!(limits.session("alice", ip(3)).unwrap_err(), Full::PerUser);
        let _b = limits.session("bob", ip(3)).unwrap();
        assert_eq!(limits.sessions_now(), 3);
    }

    #[test]
    fn pending_and_logged_in_pools_do_not_share_slots() {
        let limits = Limits::new(&cfg());
        let _pending: Vec<_> = (1..=3).map(|n| limits.pending(ip(n)).unwrap()).collect();
        let alice = limits.session("alice", ip(9));
        assert!(alice.is_ok(), "a full pre-login pool leaves sessions alone");
        let _s: Vec<_> = (1..=3).map(|n| limits.session(&format!("u{n}"), ip(10 + n)).unwrap()).collect();
        assert_eq!(limits.session("bob", ip(1)).unwrap_err(), Full::Total);
    }

    #[test]
    fn rejects_sessions_over_the_per_ip_cap() {
        let limits = Limits::new(&cfg());
        let _s: Vec<_> = ["a", "b", "c"].iter().map(|u| limits.session(u, ip(1)).unwrap()).collect();
        assert_eq!(limits.session("d", ip(1)).unwrap_err(), Full::PerIp);
    }
}
