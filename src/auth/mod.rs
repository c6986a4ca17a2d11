//! Authentication building blocks: argon2id password hashing and brute-force throttling.
//!
//! Both are free of I/O: hashing is pure CPU work (callers on async threads run it in
//! `spawn_blocking`), and the throttle takes the current time as an argument so its policy can
//! be tested without sleeping.

pub mod password;
pub mod throttle;

pub use password::{
    hash_password, verify_against_dummy, verify_password, verify_with_memory, PasswordError, Workspace,
};
pub use throttle::{Throttle, ThrottlePolicy, Ticket};
