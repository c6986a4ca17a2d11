//! The replies that follow the client's `Abort` of a UDP download (UDP-END-3), with or without
//! a `Walk` that rode behind the `GetAuto` (UDP-CTRL-8), as a state machine without I/O.
//!
//! Writing F for the download's own final reply (`GetEnd` or `Error`), W for the `Walk`'s reply
//! (`Tree` or `Error`) and A for the `Abort`'s (`Ok`, or `Error` once the download had ended):
//! without a `Walk` the client reads `A=Ok` or `F A=Error`; with one, `W A=Ok` or `F W A=Error`.
//! A first `Error` with a `Walk` due is either W or F: the next reply tells, since W is never
//! `Ok`.

/// One reply as this machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Ok,
    GetEnd,
    Tree,
    Error,
    Other,
}

/// What is still due after the `Abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AbortEnd {
    /// Nothing read yet; `walk`: a `Walk` reply is due.
    Start {
        walk: bool,
    },
    /// A first `Error` with a `Walk` due: W (then `Ok`) or F (then W and A).
    ErrorFirst,
    /// The download's final reply is read; then W if `walk`, then A.
    AfterFinal {
        walk: bool,
    },
    /// W is read; A (`Ok`) is next.
    AwaitAbort,
    Done,
}

/// What one reply was, and what to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub next: AbortEnd,
    /// This reply is the `Walk`'s.
    pub walk_reply: bool,
    /// The reply fits no sequence: the connection is out of step.
    pub unexpected: bool,
}

impl AbortEnd {
    pub fn new(walk: bool) -> AbortEnd {
        AbortEnd::Start { walk }
    }

    pub fn handle(self, seen: Seen) -> Step {
        let step = |next, walk_reply| Step { next, walk_reply, unexpected: false };
        let walk_like = matches!(seen, Seen::Tree | Seen::Error);
        match (self, seen) {
            (AbortEnd::Start { walk: false }, Seen::Ok) => step(AbortEnd::Done, false),
            (AbortEnd::Start { walk }, Seen::GetEnd) => step(AbortEnd::AfterFinal { walk }, false),
            (AbortEnd::Start { walk: false }, Seen::Error) => step(AbortEnd::AfterFinal { walk: false }, false),
            (AbortEnd::Start { walk: true }, Seen::Tree) => step(AbortEnd::AwaitAbort, true),
            (AbortEnd::Start { walk: true }, Seen::Error) => step(AbortEnd::ErrorFirst, false),
            // The first `Error` was W; this is A.
            (AbortEnd::ErrorFirst, Seen::Ok) => step(AbortEnd::Done, false),
            // The first `Error` was F; this is W.
            (AbortEnd::ErrorFirst, _) if walk_like => step(AbortEnd::AfterFinal { walk: false }, true),
            (AbortEnd::AfterFinal { walk: true }, _) if walk_like => step(AbortEnd::AfterFinal { walk: false }, true),
            (AbortEnd::AfterFinal { walk: false }, Seen::Error) => step(AbortEnd::Done, false),
            (AbortEnd::AwaitAbort, Seen::Ok) => step(AbortEnd::Done, false),
            _ => Step { next: AbortEnd::Done, walk_reply: false, unexpected: true },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a reply sequence; returns (finished, which replies were the Walk's, any unexpected).
    fn run(walk: bool, seq: &[Seen]) -> (bool, Vec<bool>, bool) {
        let mut state = AbortEnd::new(walk);
        let (mut walks, mut bad) = (Vec::new(), false);
        for &s in seq {
            let step = state.handle(s);
            walks.push(step.walk_reply);
            bad |= step.unexpected;
            state = step.next;
        }
        (state == AbortEnd::Done, walks, bad)
    }

    #[test]
    fn accepts_every_sequence_of_udp_end_3_without_a_walk() {
        assert_eq!(run(false, &[Seen::Ok]), (true, vec![false], false));
        assert_eq!(run(false, &[Seen::GetEnd, Seen::Error]), (true, vec![false, false], false));
        assert_eq!(run(false, &[Seen::Error, Seen::Error]), (true, vec![false, false], false));
    }

    #[test]
    fn accepts_every_sequence_with_a_walk_behind_and_finds_its_reply() {
        assert_eq!(run(true, &[Seen::Tree, Seen::Ok]), (true, vec![true, false], false));
        assert_eq!(run(true, &[Seen::Error, Seen::Ok]), (true, vec![false, false], false));
        assert_eq!(run(true, &[Seen::GetEnd, Seen::Tree, Seen::Error]), (true, vec![false, true, false], false));
        assert_eq!(run(true, &[Seen::GetEnd, Seen::Error, Seen::Error]), (true, vec![false, true, false], false));
        assert_eq!(run(true, &[Seen::Error, Seen::Tree, Seen::Error]), (true, vec![false, true, false], false));
        assert_eq!(run(true, &[Seen::Error, Seen::Error, Seen::Error]), (true, vec![false, true, false], false));
    }

    #[test]
    fn rejects_replies_that_fit_no_sequence() {
        assert!(run(false, &[Seen::Tree]).2);
        assert!(run(true, &[Seen::Ok]).2);
        assert!(run(true, &[Seen::Tree, Seen::Tree]).2);
        assert!(run(false, &[Seen::Other]).2);
    }
}
