//! Cluster profile: xfer servers sharing a real PostgreSQL and a real S3 gateway (SeaweedFS),
//! all on 127.0.0.1 and started by the tests (`support::cluster`).

mod harness;
mod object_servers;
mod object_storage;
mod object_tree;
mod object_udp;
mod profile;
mod store_bench;
mod store_pg;
mod store_servers;
