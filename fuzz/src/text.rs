//! Text decoders: saved range maps (server store and client), the server's `xfer.toml`, the
//! client's `config.toml`, and `known_hosts`. Each takes the input as UTF-8, as its loader does
//! (`read_to_string`, a SQLite TEXT column); other bytes never reach the parser.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use xfer::auth::throttle::Throttle;
use xfer::client::known_hosts::parse_known_hosts;
use xfer::client::{format_range_map, parse_range_map};
use xfer::config::{ClientConfig, ServerConfig};
use xfer::store::parse_ranges;
use xfer::tls::format_fingerprint;
use xfer::udp::ranges::RangeSet;

/// The store's saved range map (`partial_ranges.ranges`, read on resume): every range it keeps
/// is non-empty, it keeps at most one per line, and writing what it kept the way the store
/// saves it (`START END` lines) reads back the same.
pub fn store_range_map(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ranges = parse_ranges(text);
    assert!(ranges.len() <= text.lines().count());
    assert!(ranges.iter().all(|&(s, e)| s < e), "kept ranges are non-empty");
    let saved: String = ranges.iter().map(|(s, e)| format!("{s} {e}\n")).collect();
    assert_eq!(parse_ranges(&saved), ranges, "a saved map reads back the same");
    RangeSet::from_ranges(ranges);
}

/// The client's range map file of a partial download (`NAME.xfer-part.ranges`): what parses
/// re-encodes, through the writer's format, to a map that parses the same (UDP-RESUME-1).
pub fn client_range_map(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((size, ranges)) = parse_range_map(text) else { return };
    assert!(ranges.len() < text.lines().count());
    let again = format_range_map(size, ranges.iter().copied());
    assert_eq!(parse_range_map(&again), Some((size, ranges.clone())), "a written map reads back the same");
    RangeSet::from_ranges(ranges);
}

/// The server's `xfer.toml`. What parses also works: its durations, and a throttle built from
/// its `[auth]` policy that records a run of failures (huge configured delays must not
/// overflow time arithmetic).
pub fn server_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = toml::from_str::<ServerConfig>(text) else { return };
    let s = &config.server;
    let _ = (s.idle_timeout(), s.handshake_timeout(), s.shutdown_grace());
    let mut throttle = Throttle::new(config.auth);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let start = Instant::now();
    for i in 0..40u64 {
        let now = start + Duration::from_secs(i);
        if let Ok(ticket) = throttle.begin("u", ip, now) {
            throttle.fail(ticket, now);
        }
    }
    if let Ok(ticket) = throttle.begin("u", ip, start + Duration::from_secs(1 << 20)) {
        throttle.succeed(ticket, start + Duration::from_secs(1 << 20));
    }
}

/// The client's `config.toml`: parsing and choosing a profile.
pub fn client_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = toml::from_str::<ClientConfig>(text) else { return };
    let _ = config.profile(None);
    let _ = config.profile(Some("lab"));
}

/// `known_hosts`: at most one pin per line, and each pin, written back the way the client
/// appends it, reads back the same.
pub fn known_hosts(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let pins = parse_known_hosts(text);
    assert!(pins.len() <= text.lines().count());
    for (host, fp) in pins {
        let line = format!("{host} {}\n", format_fingerprint(&fp));
        assert_eq!(parse_known_hosts(&line), vec![(host, fp)], "a written pin reads back the same");
    }
}
