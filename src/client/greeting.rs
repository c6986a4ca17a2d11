//! What the client still has to read before the reply to its next request: the server's
//! version preamble and, when the login was sent without waiting, the reply to that `Auth`
//! (CTRL-HELLO-3, CTRL-AUTH-6). No I/O: the client reads what [`Greeting::expect`] names and
//! feeds it back through `handle_*`.

use super::ClientError;
use crate::proto::{Response, PROTOCOL_VERSION};

/// The next thing to read from the server before any reply of our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// The server's version preamble.
    Preamble,
    /// The reply to a pipelined `Auth`.
    LoginReply,
    /// Nothing: replies are the client's own from here on.
    Nothing,
}

/// The server's side of the greeting, as far as the client has read it.
///
/// Call order: [`Greeting::new`] once the client's preamble is written, [`Greeting::login_sent`]
/// if an `Auth` followed it without waiting; then, before reading any reply, loop on
/// [`Greeting::expect`] and feed what it asks for until it says `Nothing`. An error from a
/// `handle_*` ends the greeting: the connection is of no further use.
#[derive(Debug)]
pub(super) struct Greeting {
    preamble_read: bool,
    login_pending: bool,
}

impl Greeting {
    pub fn new() -> Greeting {
        Greeting { preamble_read: false, login_pending: false }
    }

    /// An `Auth` was sent right behind the preamble, without waiting for the server's.
    pub fn login_sent(&mut self) {
        self.login_pending = true;
    }

    pub fn expect(&self) -> Expect {
        match (self.preamble_read, self.login_pending) {
            (false, _) => Expect::Preamble,
            (true, true) => Expect::LoginReply,
            (true, false) => Expect::Nothing,
        }
    }

    /// The server's preamble: another version ends the connection (CTRL-HELLO-2). What the
    /// server sends after it (its refusal, answers to anything pipelined) is not read.
    pub fn handle_preamble(&mut self, version: u16) -> Result<(), ClientError> {
        if version != PROTOCOL_VERSION {
            return Err(ClientError::UnsupportedVersion(version));
        }
        self.preamble_read = true;
        Ok(())
    }

    /// The reply to the pipelined `Auth`. A refusal is the error to report; the replies to the
    /// requests pipelined behind it (`NotAuthenticated`) are left unread (CTRL-AUTH-6).
    pub fn handle_login_reply(&mut self, reply: Result<Response, ClientError>) -> Result<(), ClientError> {
        self.login_pending = false;
        match reply? {
            Response::Authed { .. } => Ok(()),
            other => Err(ClientError::Protocol(format!("{other:?} in reply to Auth"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ErrorCode;

    #[test]
    fn accepts_preamble_then_authed_when_login_was_pipelined() {
        let mut g = Greeting::new();
        g.login_sent();
        assert_eq!(g.expect(), Expect::Preamble);
        g.handle_preamble(PROTOCOL_VERSION).unwrap();
        assert_eq!(g.expect(), Expect::LoginReply);
        g.handle_login_reply(Ok(Response::Authed { cwd: "/".into() })).unwrap();
        assert_eq!(g.expect(), Expect::Nothing);
    }

    #[test]
    fn without_pipelined_login_only_the_preamble_is_awaited() {
        let mut g = Greeting::new();
        g.handle_preamble(PROTOCOL_VERSION).unwrap();
        assert_eq!(g.expect(), Expect::Nothing);
    }

    #[test]
    fn rejects_another_version_before_reading_any_reply() {
        let mut g = Greeting::new();
        g.login_sent();
        assert!(matches!(g.handle_preamble(PROTOCOL_VERSION + 1), Err(ClientError::UnsupportedVersion(v)) if v == 2));
    }

    #[test]
    fn reports_the_login_refusal_not_what_follows() {
        let mut g = Greeting::new();
        g.login_sent();
        g.handle_preamble(PROTOCOL_VERSION).unwrap();
        let refused = Err(ClientError::Server { code: ErrorCode::AuthFailed, message: "login failed".into() });
        assert_eq!(g.handle_login_reply(refused).unwrap_err().code(), Some(ErrorCode::AuthFailed));
    }

    #[test]
    fn rejects_a_reply_to_auth_other_than_authed() {
        let mut g = Greeting::new();
        g.login_sent();
        g.handle_preamble(PROTOCOL_VERSION).unwrap();
        assert!(matches!(g.handle_login_reply(Ok(Response::Ok)), Err(ClientError::Protocol(_))));
    }
}
