//! `--rate-limit` on the TCP transport (CTRL-XFER-9): uploads and downloads, inline and
//! streamed, take at least size / limit. A lower bound derived from the limit cannot fail by
//! timing noise: only a transfer that ignores the limit can finish sooner.

use crate::support;

use std::time::{Duration, Instant};

use support::*;

const PW: &str = "pace-pw";

#[test]
fn a_rate_limited_tcp_transfer_takes_at_least_size_over_limit() {
    let env = TestEnv::new();
    let srv = env.start();
    srv.add_user("alice", PW, 64 * MIB, None);
    let cli = |args: &[&str]| run(client_cmd(&srv.addr_string(), "alice", PW, &env.config_dir, &env.work, args));
    cli(&["pwd"]).assert_ok();
    // 100 KiB goes inline (CTRL-PUT-7), 400 KiB as streamed frames.
    for (name, size, limit) in [("inline", 100 * KIB, 50 * KIB), ("streamed", 400 * KIB, 200 * KIB)] {
        make_file(&env.local(name), size as usize, 3);
        let floor = Duration::from_secs_f64(size as f64 / limit as f64);
        let rate = limit.to_string();
        for transport in ["tcp", "auto"] {
            let t0 = Instant::now();
            cli(&["put", name, "--transport", transport, "--rate-limit", &rate]).assert_ok();
            let took = t0.elapsed();
            assert!(took >= floor, "put {name} over {transport}: {took:?} < {floor:?}");
            let back = format!("{name}.{transport}.back");
            let t0 = Instant::now();
            cli(&["get", name, &back, "--transport", "tcp", "--rate-limit", &rate]).assert_ok();
            let took = t0.elapsed();
            assert!(took >= floor, "get {name} over tcp: {took:?} < {floor:?}");
            assert_eq!(md5_file(&env.local(&back)), md5_file(&env.local(name)));
        }
    }
}
