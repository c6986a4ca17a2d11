//! Argon2id password hashes in PHC string format.
//!
//! Nothing here logs, and no error carries the password: errors only relay the argon2 crate's
//! messages, which describe parameters, never inputs.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB: OWASP's minimum recommendation for argon2id (19 MiB, t = 2, p = 1).
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

/// Not a secret: it only has to be a valid hash with the same parameters as real ones.
const DUMMY_PASSWORD: &str = "xfer-dummy-password-for-unknown-users";

/// Errors from password hashing.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl From<argon2::password_hash::Error> for PasswordError {
    fn from(e: argon2::password_hash::Error) -> Self {
        PasswordError::Hash(e.to_string())
    }
}

impl From<argon2::Error> for PasswordError {
    fn from(e: argon2::Error) -> Self {
        PasswordError::Hash(e.to_string())
    }
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher()?.hash_password(password.as_bytes(), &salt)?;
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string. The parameters are taken from the string, so
/// hashes made with older parameters keep working. Returns false on a malformed hash.
#[must_use]
pub fn verify_password(phc_hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc_hash) else {
        return false;
    };
    // The verifier re-hashes with the algorithm and parameters recorded in `parsed`; the
    // instance's own parameters do not matter here.
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Reusable argon2 working memory: one verification at a time writes its blocks here instead
/// of allocating (and later handing to the allocator) 19 MiB per attempt (CTRL-AUTH-4).
pub struct Workspace {
    blocks: Vec<argon2::Block>,
}

impl Workspace {
    /// Sized for the current parameters; the memory is touched, so it is resident from now on.
    pub fn new() -> Workspace {
        Workspace { blocks: vec![argon2::Block::new(); MEMORY_KIB as usize] }
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// Like [`verify_password`], but computes in `space`. A hash whose parameters need more memory
/// than `space` holds (an older, larger setting) gets a temporary buffer of its own.
/// `None` as the hash spends the same work on the dummy hash and returns false (CTRL-AUTH-3).
#[must_use]
pub fn verify_with_memory(phc_hash: Option<&str>, password: &str, space: &mut Workspace) -> bool {
    match (phc_hash, dummy_hash()) {
        (Some(hash), _) => phc_hash_matches(hash, password, space),
        (None, Some(dummy)) => {
            let _ = phc_hash_matches(dummy, password, space);
            false
        }
        (None, None) => {
            let _ = hash_password(password);
            false
        }
    }
}

fn phc_hash_matches(phc_hash: &str, password: &str, space: &mut Workspace) -> bool {
    let Ok(parsed) = PasswordHash::new(phc_hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = parsed.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(version), Ok(params)) = (version, Params::try_from(&parsed)) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let hasher = Argon2::new(algorithm, version, params.clone());
    let done = if params.block_count() <= space.blocks.len() {
        hasher.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut space.blocks[..])
    } else {
        hasher.hash_password_into(password.as_bytes(), salt, out)
    };
    // `Output`'s equality is constant-time.
    done.is_ok() && argon2::password_hash::Output::new(out).is_ok_and(|o| o == expected)
}

/// Spends the same argon2 work as [`verify_password`] against a real hash, for unknown users,
/// so that response time does not reveal whether a user name exists.
pub fn verify_against_dummy(password: &str) {
    match dummy_hash() {
        Some(hash) => {
            let _ = verify_password(hash, password);
        }
        // Hashing cannot fail with constant, valid parameters; if it somehow did, hashing the
        // attempt still costs about as much as a verification.
        None => {
            let _ = hash_password(password);
        }
    }
}

/// Computed on first use rather than hard-coded so that it always matches the current
/// parameters. (The very first call pays for one extra hash; a one-off, not a per-user signal.)
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(DUMMY_PASSWORD).ok()).as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_phc_with_owasp_parameters() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
    }

    #[test]
    fn hashes_of_same_password_use_different_salts() {
        let a = hash_password("same").unwrap();
        let b = hash_password("same").unwrap();
        assert_ne!(a, b);
        assert!(verify_password(&a, "same"));
        assert!(verify_password(&b, "same"));
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong_password() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3cret "));
        assert!(!verify_password(&h, ""));
    }

    #[test]
    fn empty_and_unicode_passwords_round_trip() {
        for pw in ["", "pässwörd ✓", "a\u{0}b"] {
            let h = hash_password(pw).unwrap();
            assert!(verify_password(&h, pw));
        }
    }

    #[test]
    fn malformed_hashes_verify_false() {
        let good = hash_password("pw").unwrap();
        let truncated = &good[..good.len() - 10];
        for bad in ["", "plain", "$argon2id$", "$argon2id$v=19$m=x,t=2,p=1$abc$def", truncated] {
            assert!(!verify_password(bad, "pw"), "{bad:?}");
        }
    }

    #[test]
    fn hashes_with_other_parameters_still_verify() {
        let params = Params::new(8, 1, 1, None).unwrap();
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let h = weak.hash_password(b"old", &salt).unwrap().to_string();
        assert!(verify_password(&h, "old"));
        assert!(!verify_password(&h, "new"));
    }

    #[test]
    fn verify_with_memory_agrees_with_verify_password() {
        let mut space = Workspace::new();
        let h = hash_password("s3cret").unwrap();
        assert!(verify_with_memory(Some(&h), "s3cret", &mut space));
        assert!(!verify_with_memory(Some(&h), "s3cret ", &mut space));
        assert!(verify_with_memory(Some(&h), "s3cret", &mut space), "the workspace is reusable");
        assert!(!verify_with_memory(None, DUMMY_PASSWORD, &mut space), "unknown users never pass");
        assert!(!verify_with_memory(Some("$argon2id$v=19$m=x"), "s3cret", &mut space));
        let params = Params::new(8, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"old", &salt).unwrap();
        assert!(verify_with_memory(Some(&small.to_string()), "old", &mut space));
        let params = Params::new(2 * MEMORY_KIB, 1, 1, None).unwrap();
        let big = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"big", &salt).unwrap();
        assert!(verify_with_memory(Some(&big.to_string()), "big", &mut space), "larger than the workspace");
        assert_eq!(space.blocks.len(), MEMORY_KIB as usize, "the workspace did not grow");
    }

    #[test]
    fn dummy_hash_is_valid_and_dummy_verify_runs() {
        let dummy = dummy_hash().unwrap();
        assert!(dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(dummy, DUMMY_PASSWORD));
        verify_against_dummy("anything");
        assert!(std::ptr::eq(dummy, dummy_hash().unwrap()), "computed once");
    }
}
