//! The back ends the cluster tests stand on start, answer, and come back after a kill.

use std::net::TcpStream;

use crate::support::cluster::{Postgres, S3};

#[test]
fn postgres_starts_serves_databases_and_restarts() {
    let pg = Postgres::start();
    let url = pg.create_database();
    assert!(url.starts_with(&format!("postgres://xfer@127.0.0.1:{}/", pg.port)), "{url}");
    pg.kill();
    assert!(TcpStream::connect(("127.0.0.1", pg.port)).is_err(), "killed server still listens");
    pg.restart();
    // The database made before the crash is still there.
    let name = url.rsplit('/').next().unwrap().to_string();
    assert_eq!(pg.url(&name), url);
    pg.create_database();
}

#[test]
fn s3_gateway_starts_and_restarts() {
    let s3 = S3::start();
    let port: u16 = s3.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    s3.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "killed gateway still listens");
    s3.restart();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_ne!(s3.unique_root(), s3.unique_root());
}
