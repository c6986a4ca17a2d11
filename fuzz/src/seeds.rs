//! Seed inputs derived from what the repository already holds: the golden vectors in
//! `proto-spec/vectors/`, the embedded server configuration, and the formats the writers
//! produce. `fuzz/seeds/TARGET/` holds them as files (checked in, so a corpus can start from
//! them without building anything); a test checks that they match this derivation.

use std::path::Path;

use xfer::client::format_range_map;
use xfer::config::DEFAULT_SERVER_CONFIG;
use xfer::tls::format_fingerprint;
use xfer::udp::packet::{Header, HEADER_LEN};

use super::datagram::fixed_keys;

/// One seed: a file `name` in `fuzz/seeds/target/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every seed, from the vectors under `repo/proto-spec/vectors` and built-in samples.
pub fn seeds_from_sources(repo: &Path) -> std::io::Result<Vec<Seed>> {
    let mut vectors = Vec::new();
    for entry in std::fs::read_dir(repo.join("proto-spec/vectors"))? {
        let path = entry?.path();
        let (Some(stem), Some("hex")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
        else {
            continue;
        };
        vectors.push((stem.to_string(), vector_bytes(&std::fs::read_to_string(&path)?)));
    }
    vectors.sort();
    let mut seeds = Vec::new();
    let mut session = vec![0x10]; // every control vector in one stream, fed in 17-byte pieces
    for (stem, bytes) in &vectors {
        if stem.starts_with("udp-") {
            seeds.extend(datagram_seeds(stem, bytes));
        } else {
            seeds.extend(control_seeds(stem, bytes));
            if !stem.starts_with("preamble") {
                session.extend_from_slice(bytes);
            }
        }
    }
    seeds.push(seed("control_frames", "session", session));
    seeds.extend(text_seeds());
    Ok(seeds)
}

/// The bytes of a vector file: hex digits outside `#` comments.
pub fn vector_bytes(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(d, _)| d))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).unwrap_or_default()
}

fn seed(target: &'static str, name: &str, bytes: Vec<u8>) -> Seed {
    Seed { target, name: name.to_string(), bytes }
}

/// A control vector is a whole frame: the frame stream (whole, as one piece) and its payload
/// as a message of its direction.
fn control_seeds(stem: &str, frame: &[u8]) -> Vec<Seed> {
    let mut out = vec![seed("control_frames", stem, [&[0xff][..], frame].concat())];
    let payload = frame.get(5..).unwrap_or_default().to_vec();
    if stem.starts_with("request-") {
        out.push(seed("control_request", stem, payload));
    } else if stem.starts_with("response-") {
        out.push(seed("control_response", stem, payload));
    }
    out
}

/// A datagram vector as received, and its plaintext (header and opened body) for the target
/// that seals before it decodes.
fn datagram_seeds(stem: &str, sealed: &[u8]) -> Vec<Seed> {
    let mut out = vec![seed("datagram", stem, sealed.to_vec())];
    if let Ok(h) = Header::decode(sealed) {
        let keys = fixed_keys();
        for sealer in [&keys.client, &keys.server] {
            let mut d = sealed.to_vec();
            if let Ok(body) = sealer.open(h.pn, &mut d) {
                let plain = [&sealed[..HEADER_LEN], &body[..]].concat();
                out.push(seed("datagram_sealed", stem, plain));
            }
        }
    }
    out
}

fn text_seeds() -> Vec<Seed> {
    let fp: [u8; 32] = core::array::from_fn(|i| i as u8);
    let client_config = "default_profile = \"lab\"\n[profiles.lab]\nserver = \"files.lab:7070\"\nuser = \"alice\"\n\n[profiles.home]\nserver = \"[::1]:7070\"\n";
    vec![
        seed("store_range_map", "two-ranges", b"0 4096\n8192 12288\n".to_vec()),
        seed(
            "client_range_map",
            "two-ranges",
            format_range_map(1 << 20, [(0, 4096), (8192, 12288)].into_iter()).into_bytes(),
        ),
        seed("server_config", "embedded", DEFAULT_SERVER_CONFIG.as_bytes().to_vec()),
        seed("client_config", "readme", client_config.as_bytes().to_vec()),
        seed(
            "known_hosts",
            "two-pins",
            format!("127.0.0.1:7070 {0}\n[::1]:7070 {0}\n", format_fingerprint(&fp)).into_bytes(),
        ),
    ]
}
