//! Property tests of the datagram layer (proto-spec/udp.md):
//!
//! - the header, `Data`, `Ack`, `Hello`, challenge and `Close` decoders never panic on
//!   arbitrary bytes, and whatever they accept re-encodes to the same bytes (UDP-PKT-2..10);
//! - encoding then decoding gives back the value, for headers, data fields and acks;
//! - sealing then opening gives back the body; opening arbitrary or altered bytes never panics
//!   and never succeeds (UDP-SEAL-2, UDP-SEAL-5);
//! - the fuzz target's function (`fuzz/src/lib.rs`, included below) holds on arbitrary bytes and
//!   on mutations of the golden vectors, so CI covers the fuzzed path without nightly;
//! - the real flow machine (`udp::Flow`, through the fuzz function `flow_datagram`) never
//!   panics on sequences of arbitrary, authentic or replayed datagrams from any address, sends
//!   data, probes and acks only to its peer (UDP-VALID-5) and never more than 3 times what an
//!   address that is not validated sent it (UDP-AMP-1);
//! - `RangeSet` agrees with a bitmap under any inserts and removals, and a receiver's ack
//!   describes exactly what it holds (UDP-ACK-2, UDP-ACK-3);
//! - every fuzz target holds on its checked-in seeds (`fuzz/seeds/`, regression inputs
//!   included), and the seeds derived from the vectors are up to date.

use bytes::BufMut;
use proptest::collection::vec;
use proptest::prelude::*;
use xfer::udp::packet::{
    decode_challenge, decode_close, decode_hello, Ack, DataFields, Header, PacketError, PacketKind, DATA_FIELDS_LEN,
    HEADER_LEN, MAX_ACK_RANGES, MAX_DATAGRAM, TAG_LEN,
};

// The fuzz targets' own code (fuzz/src/), run here on stable; items only the fuzz binary uses
// (allocation limits) are unused in this crate.
#[allow(dead_code, unused_imports)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_targets;

use fuzz_targets::{body_by_kind, datagram, fixed_keys, flow_datagram, seeds_from_sources, TARGETS, VECTOR_FLOW};

const KINDS: [PacketKind; 7] = [
    PacketKind::Hello,
    PacketKind::PathChallenge,
    PacketKind::PathResponse,
    PacketKind::Data,
    PacketKind::Ack,
    PacketKind::Probe,
    PacketKind::Close,
];

fn kind() -> impl Strategy<Value = PacketKind> {
    prop::sample::select(KINDS.to_vec())
}

fn header() -> impl Strategy<Value = Header> {
    (kind(), any::<u64>(), any::<u64>()).prop_map(|(kind, flow, pn)| Header { kind, flow, pn })
}

/// Valid acks: ascending, disjoint, non-touching ranges above `cumulative`, at most 64.
fn ack() -> impl Strategy<Value = Ack> {
    let gaps = vec((1u64..1 << 20, 1u64..1 << 20), 0..=MAX_ACK_RANGES);
    (any::<u64>(), any::<u32>(), any::<u16>(), 0u64..1 << 62, gaps).prop_map(
        |(largest_pn, ack_delay_us, max_datagram, cumulative, gaps)| {
            let mut ranges = Vec::new();
            let mut end = cumulative;
            for (gap, len) in gaps {
                let start = end + gap;
                end = start + len;
                ranges.push((start, end));
            }
            Ack { largest_pn, ack_delay_us, max_datagram, cumulative, ranges }
        },
    )
}

/// Ack-shaped bodies: the fixed fields, a small count, then random ranges (mostly invalid).
fn ack_like() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 22]>(), 0u16..70, vec(any::<u64>(), 0..140), -2i64..=2).prop_map(|(fixed, count, words, cut)| {
        let mut b = fixed.to_vec();
        b.put_u16(count);
        for w in words.iter().take(2 * usize::from(count)) {
            b.put_u64(*w % 4096);
        }
        let len = (b.len() as i64 + cut).max(0) as usize;
        b.resize(len, 0);
        b
    })
}

/// Lengths around the header/tag minimum and the maximum, plus anything in between.
fn datagram_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..HEADER_LEN + TAG_LEN + 64),
        vec(any::<u8>(), 1100..1300),
        (MAX_DATAGRAM - 2..MAX_DATAGRAM + 2).prop_map(|n| vec![0x04; n]),
    ]
}

/// A datagram with a valid header: arbitrary kind, flow and pn, then random bytes.
fn plausible_datagram() -> impl Strategy<Value = Vec<u8>> {
    (header(), vec(any::<u8>(), TAG_LEN..TAG_LEN + 200)).prop_map(|(h, rest)| {
        let mut d = Vec::new();
        h.encode(&mut d);
        d.extend_from_slice(&rest);
        d
    })
}

fn vector_bytes(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto-spec/vectors").join(name);
    let text = std::fs::read_to_string(&path).expect("vector file");
    let digits: String = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(d, _)| d))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).expect("hex")
}

const VECTORS: [&str; 7] = [
    "udp-hello.hex",
    "udp-path-challenge.hex",
    "udp-path-response.hex",
    "udp-data.hex",
    "udp-probe.hex",
    "udp-ack.hex",
    "udp-close.hex",
];

// ---- Decoders never panic; what they accept is canonical ----

proptest! {
    #[test]
    fn accepts_arbitrary_bytes_as_header_without_panicking(bytes in datagram_bytes()) {
        match Header::decode(&bytes) {
            Ok(h) => {
                prop_assert!(bytes.len() >= HEADER_LEN + TAG_LEN && bytes.len() <= MAX_DATAGRAM);
                let mut again = Vec::new();
                h.encode(&mut again);
                prop_assert_eq!(&again[..], &bytes[..HEADER_LEN]);
            }
            Err(PacketError::Short) => prop_assert!(bytes.len() < HEADER_LEN + TAG_LEN),
            Err(PacketError::Long) => prop_assert!(bytes.len() > MAX_DATAGRAM),
            Err(PacketError::UnknownKind(k)) => prop_assert!(PacketKind::from_byte(k).is_none()),
            Err(PacketError::Flags) => prop_assert_ne!(bytes[1], 0),
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn accepts_arbitrary_bodies_of_every_kind_without_panicking(k in kind(), body in vec(any::<u8>(), 0..1200)) {
        body_by_kind(k, &body);
    }

    #[test]
    fn accepts_arbitrary_data_bodies_without_panicking(
        offset in any::<u64>(),
        len in prop_oneof![0u16..16, any::<u16>()],
        payload in vec(any::<u8>(), 0..32),
    ) {
        let mut body = Vec::new();
        body.put_u64(offset);
        body.put_u16(len);
        body.put_u32(crc32fast::hash(&payload));
        body.extend_from_slice(&payload);
        let decoded = DataFields::decode(&body);
        let valid = usize::from(len) == payload.len() && offset.checked_add(u64::from(len)).is_some();
        prop_assert_eq!(decoded.is_ok(), valid);
        body_by_kind(PacketKind::Data, &body);
    }

    #[test]
    fn accepts_ack_shaped_bodies_without_panicking(body in ack_like()) {
        body_by_kind(PacketKind::Ack, &body);
        let mut ack = Ack::default();
        if ack.decode_into(&body).is_ok() {
            prop_assert!(ack.ranges.len() <= MAX_ACK_RANGES);
            let mut floor = ack.cumulative;
            for &(s, e) in &ack.ranges {
                prop_assert!(s > floor && e > s);
                floor = e;
            }
        }
    }

    #[test]
    fn accepts_short_bodies_for_fixed_size_kinds_only_at_their_size(body in vec(any::<u8>(), 0..12)) {
        prop_assert_eq!(decode_hello(&body).is_ok(), body.len() >= 2);
        prop_assert_eq!(decode_challenge(PacketKind::PathChallenge, &body).is_ok(), body.len() == 8);
        prop_assert_eq!(decode_close(&body).is_ok(), body.len() == 2);
        prop_assert_eq!(DataFields::decode(&body).is_ok(), false);
    }
}

// ---- Round trips ----

proptest! {
    #[test]
    fn can_round_trip_headers(h in header(), rest in vec(any::<u8>(), TAG_LEN..TAG_LEN + 8)) {
        let mut d = Vec::new();
        h.encode(&mut d);
        prop_assert_eq!(d.len(), HEADER_LEN);
        d.extend_from_slice(&rest);
        prop_assert_eq!(Header::decode(&d), Ok(h));
    }

    #[test]
    fn can_round_trip_data_fields(offset in 0u64..u64::MAX - 2048, payload in vec(any::<u8>(), 0..2048)) {
        let fields = DataFields { offset, len: payload.len() as u16, crc32: crc32fast::hash(&payload) };
        let mut body = Vec::new();
        fields.encode(&mut body);
        prop_assert_eq!(body.len(), DATA_FIELDS_LEN);
        body.extend_from_slice(&payload);
        let (got, got_payload) = DataFields::decode(&body).expect("valid data body");
        prop_assert_eq!(got, fields);
        prop_assert_eq!(got_payload, &payload[..]);
    }

    #[test]
    fn can_round_trip_acks(ack in ack(), stale in ack()) {
        let mut body = Vec::new();
        ack.encode(&mut body);
        prop_assert_eq!(body.len(), ack.encoded_len());
        // decode_into reuses a buffer that held another ack.
        let mut got = stale;
        got.decode_into(&body).expect("valid ack");
        prop_assert_eq!(got, ack);
    }

    #[test]
    fn can_seal_and_open_any_body(h in header(), body in vec(any::<u8>(), 0..1500), client in any::<bool>()) {
        let keys = fixed_keys();
        let (mine, other) = if client { (&keys.client, &keys.server) } else { (&keys.server, &keys.client) };
        let mut d = Vec::new();
        h.encode(&mut d);
        d.extend_from_slice(&body);
        d.extend_from_slice(&[0; TAG_LEN]);
        mine.seal(h.pn, &mut d);
        prop_assert_eq!(Header::decode(&d), Ok(h));
        prop_assert_eq!(other.open(h.pn, &mut d.clone()).map(|_| ()), Err(PacketError::Auth));
        prop_assert_eq!(mine.open(h.pn.wrapping_add(1), &mut d.clone()).map(|_| ()), Err(PacketError::Auth));
        prop_assert_eq!(mine.open(h.pn, &mut d).map(|b| b.to_vec()), Ok(body));
    }
}

// ---- Opening never succeeds on what the key holder did not seal ----

proptest! {
    #[test]
    fn rejects_arbitrary_datagrams_when_opening(d in prop_oneof![datagram_bytes(), plausible_datagram()], pn in any::<u64>()) {
        let keys = fixed_keys();
        for sealer in [&keys.client, &keys.server] {
            let pn = Header::decode(&d).map_or(pn, |h| h.pn);
            let result = sealer.open(pn, &mut d.clone()).map(|_| ());
            let want = if d.len() < HEADER_LEN + TAG_LEN { PacketError::Short } else { PacketError::Auth };
            prop_assert_eq!(result, Err(want));
        }
        datagram(&d);
    }

    #[test]
    fn rejects_altered_vectors_when_opening(which in 0..VECTORS.len(), at in any::<usize>(), bits in 1u8..=255) {
        let name = VECTORS[which];
        let mut d = vector_bytes(name);
        let i = at % d.len();
        d[i] ^= bits;
        let keys = fixed_keys();
        if let Ok(h) = Header::decode(&d) {
            for sealer in [&keys.client, &keys.server] {
                prop_assert_eq!(sealer.open(h.pn, &mut d.clone()).map(|_| ()), Err(PacketError::Auth), "{} byte {}", name, i);
            }
        }
        datagram(&d);
    }

    #[test]
    fn accepts_truncated_and_extended_vectors_in_the_fuzz_path(which in 0..VECTORS.len(), cut in any::<usize>(), tail in vec(any::<u8>(), 0..8)) {
        let mut d = vector_bytes(VECTORS[which]);
        d.truncate(cut % (d.len() + 1));
        datagram(&d);
        d.extend_from_slice(&tail);
        datagram(&d);
    }
}

#[test]
fn can_run_the_fuzz_path_on_every_vector() {
    // The unaltered vectors open with the fixed keys, so the opened-body branch runs too.
    for name in VECTORS {
        datagram(&vector_bytes(name));
    }
}

#[test]
fn fuzz_seeds_match_their_sources() {
    // XFER_WRITE_FUZZ_SEEDS=1 rewrites them after a vector changes.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = std::env::var_os("XFER_WRITE_FUZZ_SEEDS").is_some();
    let seeds = seeds_from_sources(root).expect("vectors readable");
    assert!(seeds.len() > 40, "every vector makes a seed");
    for s in seeds {
        let path = root.join("fuzz/seeds").join(s.target).join(&s.name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &s.bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(on_disk == s.bytes, "{} is stale: rerun with XFER_WRITE_FUZZ_SEEDS=1", path.display());
    }
}

#[test]
fn accepts_every_fuzz_seed_in_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for target in TARGETS {
        let dir = root.join(target.name);
        let mut files: Vec<_> =
            std::fs::read_dir(&dir).expect("a seed folder per target").map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty(), "{} has seeds", target.name);
        for f in files {
            (target.run)(&std::fs::read(&f).unwrap());
        }
    }
}

// ---- The flow machine on sequences of datagrams ----

/// One entry of `flow_datagram`'s input: selector byte, u16 BE length, bytes.
fn framed(entries: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (sel, d) in entries {
        out.push(*sel);
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Authentic datagrams of the vector flow: any kind, packet number and body, sealed by either
/// direction's key, with `Hello`s padded to the minimum size.
fn authentic_datagram() -> impl Strategy<Value = Vec<u8>> {
    (kind(), 0u64..64, vec(any::<u8>(), 0..64), any::<bool>()).prop_map(|(kind, pn, mut body, client)| {
        if kind == PacketKind::Hello {
            body.resize(body.len().max(1200 - HEADER_LEN - TAG_LEN), 0);
        }
        let mut d = Vec::new();
        Header { kind, flow: VECTOR_FLOW, pn }.encode(&mut d);
        d.extend_from_slice(&body);
        d.put_bytes(0, TAG_LEN);
        let keys = fixed_keys();
        if client {
            keys.client.seal(pn, &mut d)
        } else {
            keys.server.seal(pn, &mut d)
        }
        d
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_flow_holds_its_invariants_on_arbitrary_bytes(entries in vec((any::<u8>(), vec(any::<u8>(), 0..1300)), 0..16)) {
        flow_datagram(&framed(&entries));
    }

    #[test]
    fn the_flow_holds_its_invariants_on_authentic_and_replayed_datagrams(
        entries in vec((any::<u8>(), prop_oneof![authentic_datagram(), (0..VECTORS.len()).prop_map(|i| vector_bytes(VECTORS[i]))]), 0..40),
        replays in vec((any::<u8>(), any::<usize>()), 0..8),
    ) {
        let mut all = entries.clone();
        for (sel, i) in replays {
            if !entries.is_empty() {
                all.push((sel, entries[i % entries.len()].1.clone()));
            }
        }
        flow_datagram(&framed(&all));
    }
}

#[test]
fn can_run_the_flow_path_on_a_handshake_from_the_vectors() {
    // A Hello, then the PathResponse, to the upload server, from the same address.
    flow_datagram(&framed(&[(4, vector_bytes("udp-hello.hex")), (4, vector_bytes("udp-path-response.hex"))]));
}

// ---------------------------------------------------------------------------------------
// Held ranges and acks

use std::time::Instant;
use xfer::udp::ranges::RangeSet;
use xfer::udp::receiver::{AckRanges, DataVerdict, Receiver, ReceiverConfig};

/// The ranges of a bitmap, as `(start, end)` runs.
fn runs(bits: &[bool]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bits.len() {
        if bits[i] {
            let start = i;
            while i < bits.len() && bits[i] {
                i += 1;
            }
            out.push((start as u64, i as u64));
        } else {
            i += 1;
        }
    }
    out
}

const MODEL_LEN: u64 = 160;
const ACK_MODEL_LEN: u64 = 1000;

fn check_against_bitmap(set: &RangeSet, bits: &[bool]) -> Result<(), TestCaseError> {
    let model = runs(bits);
    prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.clone());
    prop_assert_eq!(set.covered(), bits.iter().filter(|&&b| b).count() as u64);
    prop_assert_eq!(set.len(), model.len());
    prop_assert_eq!(set.is_empty(), model.is_empty());
    prop_assert_eq!(set.first(), model.first().copied());
    for a in 0..MODEL_LEN {
        let held_from = (a..MODEL_LEN).take_while(|&i| bits[i as usize]).count() as u64;
        prop_assert_eq!(set.contiguous_from(a), a + held_from);
        let from: Vec<_> = model.iter().copied().filter(|&(s, _)| s >= a).collect();
        prop_assert_eq!(set.iter_from(a).collect::<Vec<_>>(), from);
        for b in a..=MODEL_LEN {
            let all = (a..b).all(|i| bits[i as usize]);
            prop_assert_eq!(set.contains(a, b), all, "contains({}, {})", a, b);
        }
        let limit = (a + 37).min(MODEL_LEN);
        let gap = (a..limit).find(|&i| !bits[i as usize]).map(|s| {
            let e = (s..limit).find(|&i| bits[i as usize]).unwrap_or(limit);
            (s, e)
        });
        prop_assert_eq!(set.first_gap(a, limit), gap);
    }
    for size in [0, 1, MODEL_LEN / 2, MODEL_LEN] {
        let inverse: Vec<bool> = bits[..size as usize].iter().map(|b| !b).collect();
        prop_assert_eq!(set.gaps(size), runs(&inverse));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// RangeSet agrees with a bitmap under any sequence of inserts and removals.
    #[test]
    fn range_set_matches_a_bitmap(ops in prop::collection::vec((any::<bool>(), 0..MODEL_LEN, 0..MODEL_LEN), 0..40)) {
        let mut set = RangeSet::new();
        let mut bits = vec![false; MODEL_LEN as usize];
        for (insert, a, b) in ops {
            let (s, e) = (a.min(b), a.max(b));
            let changed = (s..e).filter(|&i| bits[i as usize] != insert).count() as u64;
            for i in s..e {
                bits[i as usize] = insert;
            }
            let reported = if insert { set.insert(s, e) } else { set.remove(s, e) };
            prop_assert_eq!(reported, changed);
        }
        check_against_bitmap(&set, &bits)?;
        let rebuilt = RangeSet::from_ranges(runs(&bits).into_iter().rev());
        prop_assert_eq!(rebuilt, set);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever a receiver holds, its ack decodes, describes only held bytes, and (with the
    /// lowest ranges) everything it does not list above its last range.
    #[test]
    fn acks_describe_what_is_held(
        pieces in prop::collection::vec((0..ACK_MODEL_LEN, 1u64..4), 0..500),
        split in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut cfg = ReceiverConfig::new(ACK_MODEL_LEN, RangeSet::new());
        cfg.ack_ranges = if split { AckRanges::LowestAndHighest } else { AckRanges::Lowest };
        cfg.ack_every = 1;
        let mut r = Receiver::new(cfg, now);
        let mut bits = vec![false; ACK_MODEL_LEN as usize];
        for (pn, &(offset, len)) in pieces.iter().enumerate() {
            let len = len.min(ACK_MODEL_LEN - offset) as u16;
            let verdict = r.handle_data(now, pn as u64, offset, len, 100);
            let new = (offset..offset + u64::from(len)).any(|i| !bits[i as usize]);
            prop_assert_eq!(verdict, if new { DataVerdict::New } else { DataVerdict::Duplicate });
            for i in offset..offset + u64::from(len) {
                bits[i as usize] = true;
            }
        }
        let mut ack = Ack::default();
        if pieces.is_empty() {
            prop_assert!(!r.poll_ack(now, &mut ack));
            return Ok(());
        }
        prop_assert!(r.poll_ack(now, &mut ack));
        let mut wire = Vec::new();
        ack.encode(&mut wire);
        let mut back = Ack::default();
        prop_assert!(back.decode_into(&wire).is_ok());
        prop_assert_eq!(&back, &ack);
        prop_assert_eq!(ack.cumulative, bits.iter().take_while(|&&b| b).count() as u64);
        let model = runs(&bits);
        let above: Vec<_> = model.into_iter().filter(|&(s, _)| s > ack.cumulative).collect();
        if above.len() <= xfer::udp::packet::MAX_ACK_RANGES || !split {
            let n = above.len().min(xfer::udp::packet::MAX_ACK_RANGES);
            prop_assert_eq!(&ack.ranges[..], &above[..n]);
        } else {
            let half = xfer::udp::packet::MAX_ACK_RANGES / 2;
            prop_assert_eq!(&ack.ranges[..half], &above[..half]);
            prop_assert_eq!(&ack.ranges[half..], &above[above.len() - half..]);
        }
        prop_assert_eq!(r.is_complete(), bits.iter().all(|&b| b));
    }
}
