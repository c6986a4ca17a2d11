//! Server and client configuration.
//!
//! The server's defaults are `config/xfer.example.toml`, embedded in the binary and written to
//! `ROOT/xfer.toml` on first start. The client's profiles live in `CONFIG_DIR/config.toml`,
//! where CONFIG_DIR is `$XFER_CONFIG_DIR` or the platform config dir plus `xfer`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::throttle::ThrottlePolicy;

/// The embedded default server configuration.
pub const DEFAULT_SERVER_CONFIG: &str = include_str!("../config/xfer.example.toml");

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Server configuration (`[server]`, `[auth]`, `[log]` and `[admin]` tables).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub server: ServerSection,
    #[serde(default)]
    pub auth: ThrottlePolicy,
    #[serde(default)]
    pub quota: QuotaSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub storage: StorageSection,
}

/// `[store]`: where users, quotas and the other shared state live (STORE-1). Without `url`,
/// the embedded SQLite file in the root (the default); with a `postgres://` URL, a PostgreSQL
/// database that several servers share. `XFER_STORE_URL` overrides `url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub url: Option<String>,
    /// Lease of a reservation or upload claim held by a server (STORE-LEASE-2); 0 means the
    /// default (30 s).
    pub lease_secs: u64,
}

/// Environment variable that overrides `[store] url`.
pub const STORE_URL_ENV: &str = "XFER_STORE_URL";

impl StoreSection {
    /// The PostgreSQL URL in force (the environment first), if any. Empty means none.
    pub fn postgres_url(&self) -> Option<String> {
        std::env::var(STORE_URL_ENV).ok().or_else(|| self.url.clone()).filter(|u| !u.trim().is_empty())
    }

    pub fn lease(&self) -> Duration {
        match self.lease_secs {
            0 => crate::store::DEFAULT_LEASE,
            s => Duration::from_secs(s),
        }
    }
}

/// `[quota]`: server-wide quota rules (QUOTA-6, QUOTA-7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSection {
    /// Partial uploads untouched this long are deleted and their charge released.
    pub partial_expiry_secs: u64,
    /// Entries (files, partials, directories) allowed to a user without `max_files`; 0 means
    /// no limit.
    pub default_max_entries: u64,
}

impl Default for QuotaSection {
    fn default() -> Self {
        QuotaSection { partial_expiry_secs: 7 * 24 * 3600, default_max_entries: 100_000 }
    }
}

impl QuotaSection {
    pub fn partial_expiry(&self) -> Duration {
        Duration::from_secs(self.partial_expiry_secs.max(1))
    }
    pub fn default_entry_limit(&self) -> Option<u64> {
        (self.default_max_entries > 0).then_some(self.default_max_entries)
    }
}

/// `[server]`. Keys added after the first release have defaults, so older files still load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    pub idle_timeout_secs: u64,
    pub handshake_timeout_secs: u64,
    /// Logged-in sessions, all users together (CTRL-SESS-6).
    pub max_sessions: usize,
    /// Logged-in sessions of one user.
    pub max_sessions_per_user: usize,
    /// Logged-in sessions from one client address.
    pub max_sessions_per_ip: usize,
    /// Connections not yet logged in, all addresses together (CTRL-SESS-5).
    pub max_pending_logins: usize,
    /// Connections not yet logged in from one client address.
    pub max_pending_logins_per_ip: usize,
    /// Password verifications running at once; each holds 19 MiB (CTRL-AUTH-4).
    pub max_parallel_hashes: usize,
    pub shutdown_grace_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:7070".into(),
            idle_timeout_secs: 300,
            handshake_timeout_secs: 15,
            max_sessions: 512,
            max_sessions_per_user: 32,
            max_sessions_per_ip: 64,
            max_pending_logins: 256,
            max_pending_logins_per_ip: 16,
            max_parallel_hashes: 2,
            shutdown_grace_secs: 10,
        }
    }
}

/// `[log]`: how the server writes its log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
}

/// Text lines for people, or one JSON object per line for log collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[admin]`: the optional metrics listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address serving Prometheus metrics at `/metrics`; empty means off.
    pub metrics_listen: String,
}

/// `[storage]`: where file bytes live (STORE-OBJ-*). `kind = "local"` (the default) keeps
/// each home on the server's disk; `kind = "s3"` keeps the namespace in the PostgreSQL store
/// and the bytes in an S3-compatible bucket. Every S3 key can also come from the environment
/// (`XFER_S3_ENDPOINT`, `XFER_S3_BUCKET`, `XFER_S3_REGION`, `XFER_S3_ROOT`,
/// `XFER_S3_ACCESS_KEY_ID`, `XFER_S3_SECRET_ACCESS_KEY`), which wins over the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub kind: StorageKind,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Key prefix inside the bucket.
    pub root: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            kind: StorageKind::Local,
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            root: "/".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        }
    }
}

/// Which storage holds the homes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Local,
    S3,
}

impl StorageSection {
    /// The object store to use, if any, with the environment applied (`env` looks a name up).
    /// S3 needs the PostgreSQL store for its namespace: `store_url` is the `[store] url`.
    #[cfg(feature = "cluster")]
    pub fn object_config(
        &self,
        store_url: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::storage::object::ObjectConfig>, ConfigError> {
        if self.kind == StorageKind::Local {
            return Ok(None);
        }
        if !store_url.is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid(
                "[storage] kind = \"s3\" keeps its namespace in PostgreSQL and needs [store] url = \"postgres://...\""
                    .into(),
            ));
        }
        let pick = |var: &str, file: &str| env(var).unwrap_or_else(|| file.to_string());
        let c = crate::storage::object::ObjectConfig {
            endpoint: pick("XFER_S3_ENDPOINT", &self.endpoint),
            bucket: pick("XFER_S3_BUCKET", &self.bucket),
            region: pick("XFER_S3_REGION", &self.region),
            root: pick("XFER_S3_ROOT", &self.root),
            access_key_id: pick("XFER_S3_ACCESS_KEY_ID", &self.access_key_id),
            secret_access_key: pick("XFER_S3_SECRET_ACCESS_KEY", &self.secret_access_key),
        };
        for (key, value) in [("endpoint", &c.endpoint), ("bucket", &c.bucket), ("access_key_id", &c.access_key_id)] {
            if value.is_empty() {
                return Err(ConfigError::Invalid(format!("[storage] kind = \"s3\" needs {key}")));
            }
        }
        if c.secret_access_key.is_empty() {
            return Err(ConfigError::Invalid("[storage] kind = \"s3\" needs secret_access_key".into()));
        }
        Ok(Some(c))
    }
}

impl ServerSection {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl ServerConfig {
    /// The embedded defaults.
    pub fn embedded() -> ServerConfig {
        // The embedded file is checked by a unit test; parsing it cannot fail at run time.
        toml::from_str(DEFAULT_SERVER_CONFIG).unwrap_or_else(|e| panic!("embedded config: {e}"))
    }

    /// Loads `root/xfer.toml`, writing the embedded defaults there first if it is missing.
    pub fn load_or_init(root: &Path) -> Result<ServerConfig, ConfigError> {
        let path = root.join("xfer.toml");
        if !path.exists() {
            std::fs::write(&path, DEFAULT_SERVER_CONFIG)
                .map_err(|source| ConfigError::Io { path: path.clone(), source })?;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })
    }
}

/// Client configuration file: named connection profiles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Profile used when `--profile` is not given.
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One named server/user pair.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub server: Option<String>,
    pub user: Option<String>,
}

impl ClientConfig {
    /// Loads `dir/config.toml`; a missing file is an empty configuration.
    pub fn load(dir: &Path) -> Result<ClientConfig, ConfigError> {
        let path = dir.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// The profile named `name`, or the default profile.
    pub fn profile(&self, name: Option<&str>) -> Option<&Profile> {
        let name = name.or(self.default_profile.as_deref())?;
        self.profiles.get(name)
    }
}

/// The client's config directory: `$XFER_CONFIG_DIR`, else e.g. `~/.config/xfer`.
pub fn client_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XFER_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("xfer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_server_config_parses() {
        let c = ServerConfig::embedded();
        assert_eq!(c.server.listen, "127.0.0.1:7070");
        assert!(c.auth.free_failures >= 1);
        let d = QuotaSection::default();
        assert_eq!(
            (c.quota.partial_expiry_secs, c.quota.default_max_entries),
            (d.partial_expiry_secs, d.default_max_entries)
        );
        let d = ServerSection::default();
        let s = &c.server;
        let embedded = (s.max_sessions, s.max_sessions_per_user, s.max_sessions_per_ip, s.max_pending_logins);
        assert_eq!(embedded, (d.max_sessions, d.max_sessions_per_user, d.max_sessions_per_ip, d.max_pending_logins));
        assert_eq!((s.max_pending_logins_per_ip, s.max_parallel_hashes), (d.max_pending_logins_per_ip, 2));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.admin.metrics_listen, "");
        assert_eq!(c.auth, ThrottlePolicy::default());
    }

    #[test]
    fn old_config_without_new_keys_still_loads() {
        let old = "[server]\nlisten = \"127.0.0.1:1\"\nidle_timeout_secs = 300\nhandshake_timeout_secs = 15\n\
                   max_sessions = 512\nshutdown_grace_secs = 10\n[auth]\nfree_failures = 3\n";
        let c: ServerConfig = toml::from_str(old).unwrap();
        assert_eq!(c.server.max_sessions_per_user, 32);
        let json: ServerConfig = toml::from_str("[server]\n[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(json.log.format, LogFormat::Json);
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn s3_storage_needs_the_postgres_store_and_takes_keys_from_the_environment() {
        let c = ServerConfig::embedded();
        assert_eq!(c.storage.kind, StorageKind::Local);
        assert!(c.storage.object_config(None, |_| None).unwrap().is_none());
        let s3: ServerConfig = toml::from_str(
            "[server]\n[storage]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:8333\"\nbucket = \"b\"\n\
             access_key_id = \"file-key\"\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        let err = s3.storage.object_config(None, |_| None).unwrap_err().to_string();
        assert!(err.contains("[store] url"), "{err}");
        assert!(s3.storage.object_config(Some("sqlite.db"), |_| None).is_err());
        let env = |k: &str| (k == "XFER_S3_ACCESS_KEY_ID").then(|| "env-key".to_string());
        let o = s3.storage.object_config(Some("postgres://x@h/db"), env).unwrap().unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.bucket.as_str(), o.access_key_id.as_str()),
            ("http://127.0.0.1:8333", "b", "env-key")
        );
        assert_eq!(o.region, "us-east-1");
        let no_bucket: ServerConfig = toml::from_str("[server]\n[storage]\nkind = \"s3\"\n").unwrap();
        let err = no_bucket.storage.object_config(Some("postgres://x@h/db"), |_| None).unwrap_err().to_string();
        assert!(err.contains("endpoint"), "{err}");
    }

    #[test]
    fn load_or_init_writes_defaults_once() {
        let dir = tempfile::tempdir().unwrap();
        ServerConfig::load_or_init(dir.path()).unwrap();
        let path = dir.path().join("xfer.toml");
        let edited = std::fs::read_to_string(&path).unwrap().replace("7070", "7171");
        std::fs::write(&path, edited).unwrap();
        let c = ServerConfig::load_or_init(dir.path()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7171");
    }

    #[test]
    fn client_profiles_select_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "default_profile = \"lab\"\n[profiles.lab]\nserver = \"10.0.0.1:7070\"\nuser = \"ann\"\n",
        )
        .unwrap();
        let c = ClientConfig::load(dir.path()).unwrap();
        assert_eq!(c.profile(None).unwrap().user.as_deref(), Some("ann"));
        assert!(c.profile(Some("other")).is_none());
    }
}
