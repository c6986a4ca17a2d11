//! Server roots in the S3 profile, as the cluster tests configure them.

use crate::support::cluster::{object_config, S3};
use crate::support::{config_with, TestEnv};
use xfer::client::{TransferOptions, TransportChoice};
use xfer::home::HomePath;

/// A server root whose config names the shared store `url` and the bucket root `s3_root` of
/// `s3`, with the config `edits` of [`config_with`].
pub fn s3_env_with(url: &str, s3: &S3, s3_root: &str, edits: &[(&str, &str)]) -> TestEnv {
    let env = TestEnv::new();
    std::fs::create_dir_all(&env.root).unwrap();
    let mut all = vec![("shutdown_grace_secs", "3")];
    all.extend_from_slice(edits);
    let c = object_config(s3, s3_root);
    let config =
        config_with(&all).replacen("[store]\n", &format!("[store]\nurl = \"{url}\"\nlease_secs = 2\n"), 1).replacen(
            "kind = \"local\"\n",
            &format!(
                "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nroot = \"{}\"\n\
                 access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                c.endpoint, c.bucket, c.root, c.access_key_id, c.secret_access_key
            ),
            1,
        );
    assert!(config.contains("kind = \"s3\"") && config.contains(url), "the default config has both tables");
    std::fs::write(env.root.join("xfer.toml"), config).unwrap();
    env
}

/// As [`s3_env_with`], with no further edits.
pub fn s3_env(url: &str, s3: &S3, s3_root: &str) -> TestEnv {
    s3_env_with(url, s3, s3_root, &[])
}

/// Transfer options with `transport` and `resume`, no rate limit.
pub fn opts(transport: TransportChoice, resume: bool) -> TransferOptions {
    TransferOptions { resume, transport, rate_limit: None }
}

/// Runs a blocking storage call off the async threads.
pub async fn off<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A home path from its text.
pub fn path(p: &str) -> HomePath {
    HomePath::resolve(&HomePath::root(), p).unwrap()
}
