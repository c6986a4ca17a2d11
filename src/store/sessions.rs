//! Credential generations: what lets a running server end the sessions of a user whom another
//! process (`xfer user del`, `xfer user passwd`) changed (CTRL-SESS-7).
//!
//! Every insert, delete or password change of a user row stamps that name with a new
//! generation, taken from one sequence that only grows, by triggers inside the same
//! transaction as the change. A session remembers the generation it logged in under; the
//! server polls [`Store::auth_changes_since`] and ends sessions whose generation is older.
//! Rows outlive their user, so a re-created account never reuses an old generation.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// Schema step that adds the generations (appended to the migrations in `schema.rs`).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS auth_generations (
    user       TEXT PRIMARY KEY NOT NULL,
    generation INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_generations_by_generation ON auth_generations (generation);
CREATE TRIGGER IF NOT EXISTS auth_bump_on_insert AFTER INSERT ON users BEGIN
    INSERT INTO auth_generations (user, generation)
        VALUES (NEW.name, (SELECT COALESCE(MAX(generation), 0) + 1 FROM auth_generations))
        ON CONFLICT (user) DO UPDATE SET generation = excluded.generation;
END;
CREATE TRIGGER IF NOT EXISTS auth_bump_on_delete AFTER DELETE ON users BEGIN
    INSERT INTO auth_generations (user, generation)
        VALUES (OLD.name, (SELECT COALESCE(MAX(generation), 0) + 1 FROM auth_generations))
        ON CONFLICT (user) DO UPDATE SET generation = excluded.generation;
END;
CREATE TRIGGER IF NOT EXISTS auth_bump_on_password AFTER UPDATE OF hash ON users BEGIN
    INSERT INTO auth_generations (user, generation)
        VALUES (NEW.name, (SELECT COALESCE(MAX(generation), 0) + 1 FROM auth_generations))
        ON CONFLICT (user) DO UPDATE SET generation = excluded.generation;
END;
";

/// What a login needs from the store, read in one snapshot so that a password change cannot
/// fall between checking the hash and remembering the generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub hash: String,
    pub generation: i64,
}

impl Store {
    /// The hash and current generation of `name`, if the user exists.
    pub fn login_record(&self, name: &str) -> Result<Option<LoginRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT u.hash, COALESCE(g.generation, 0) FROM users u
                 LEFT JOIN auth_generations g ON g.user = u.name WHERE u.name = ?1",
                [name],
                |r| Ok(LoginRecord { hash: r.get(0)?, generation: r.get(1)? }),
            )
            .optional()?;
        Ok(row)
    }

    /// The newest generation of any user (0 when none was ever stamped).
    pub fn latest_auth_generation(&self) -> Result<i64, StoreError> {
        Ok(self.conn().query_row("SELECT COALESCE(MAX(generation), 0) FROM auth_generations", [], |r| r.get(0))?)
    }

    /// Users stamped after generation `since`, with their new generation, oldest first.
    pub fn auth_changes_since(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT user, generation FROM auth_generations WHERE generation > ?1 ORDER BY generation",
        )?;
        let rows = stmt.query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("x.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn add_passwd_and_delete_each_stamp_a_new_generation() {
        let (_dir, s) = store();
        assert_eq!(s.latest_auth_generation().unwrap(), 0);
        s.add_user("alice", "pw", 1, None).unwrap();
        s.add_user("bob", "pw", 1, None).unwrap();
        let first = s.login_record("alice").unwrap().unwrap().generation;
        s.set_quota("alice", 5, None).unwrap();
        assert_eq!(
            s.login_record("alice").unwrap().unwrap().generation,
            first,
            "a quota change is not a credential change"
        );
        s.set_password("alice", "new").unwrap();
        let second = s.login_record("alice").unwrap().unwrap().generation;
        assert!(second > first);
        assert_eq!(
            s.auth_changes_since(first).unwrap(),
            [("bob".to_string(), first + 1), ("alice".to_string(), second)]
        );
        s.delete_user("alice").unwrap();
        assert_eq!(s.login_record("alice").unwrap(), None);
        let changes = s.auth_changes_since(second).unwrap();
        assert_eq!(changes.len(), 1);
        assert!(changes[0].1 > second);
        s.add_user("alice", "pw", 1, None).unwrap();
        assert!(s.login_record("alice").unwrap().unwrap().generation > changes[0].1, "a re-created name starts newer");
    }
}
