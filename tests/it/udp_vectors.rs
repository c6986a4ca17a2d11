//! Golden datagram vectors (proto-spec/vectors/udp-*.hex, format in proto-spec/README.md): each
//! file opens with the keys of its direction (UDP-SEAL-1..5), its plaintext matches the
//! annotated `#>` lines, its header and body decode to the value this table expects
//! (UDP-PKT-*), and sealing that value again gives the same bytes. Then the rules by which a
//! receiver drops a datagram: tampering, the wrong key, truncation, unknown kinds, flags, and
//! malformed bodies inside a correctly sealed datagram (UDP-PKT-2, UDP-PKT-7, UDP-PKT-10).

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::BufMut;
use xfer::proto::control::ByteRange;
use xfer::udp::packet::{
    close_reason, decode_challenge, decode_close, decode_hello, Ack, DataFields, Header, PacketError, PacketKind,
    HEADER_LEN, MAX_ACK_RANGES, MAX_DATAGRAM, MIN_DATAGRAM, TAG_LEN,
};
use xfer::udp::replay::ReplayWindow;
use xfer::udp::seal::{FlowKeys, Sealer, EXPORT_LEN};

/// The flow of every vector (and of the UDP control message vectors).
const FLOW: u64 = 0x0102_0304_0506_0708;
/// The challenge of udp-path-challenge.hex.
const CHALLENGE: [u8; 8] = [0x5e, 0x3a, 0x9c, 0x01, 0xf7, 0x42, 0xd8, 0x6b];

/// The keys of the vectors: exported keying material 00 01 02 ... 37.
fn keys() -> FlowKeys {
    let mut m = [0u8; EXPORT_LEN];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    FlowKeys::from_exported(&m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Client,
    Server,
}

impl Direction {
    fn sealer(self, keys: &FlowKeys) -> &Sealer {
        match self {
            Direction::Client => &keys.client,
            Direction::Server => &keys.server,
        }
    }

    fn other(self) -> Direction {
        match self {
            Direction::Client => Direction::Server,
            Direction::Server => Direction::Client,
        }
    }
}

/// A decoded body, as the test expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// `max_datagram`, and the size of the whole datagram (the padding).
    Hello {
        max_datagram: u16,
        datagram_len: usize,
    },
    PathChallenge([u8; 8]),
    PathResponse([u8; 8]),
    Data(DataFields, Vec<u8>),
    Ack(Ack),
    /// The size of the whole datagram.
    Probe {
        datagram_len: usize,
    },
    Close(u16),
}

impl Body {
    fn kind(&self) -> PacketKind {
        match self {
            Body::Hello { .. } => PacketKind::Hello,
            Body::PathChallenge(_) => PacketKind::PathChallenge,
            Body::PathResponse(_) => PacketKind::PathResponse,
            Body::Data(..) => PacketKind::Data,
            Body::Ack(_) => PacketKind::Ack,
            Body::Probe { .. } => PacketKind::Probe,
            Body::Close(_) => PacketKind::Close,
        }
    }

    /// Decodes an opened body of `kind`; `datagram_len` is the size of the whole datagram.
    fn decode(kind: PacketKind, body: &[u8], datagram_len: usize) -> Result<Body, PacketError> {
        Ok(match kind {
            PacketKind::Hello => Body::Hello { max_datagram: decode_hello(body)?, datagram_len },
            PacketKind::PathChallenge => Body::PathChallenge(decode_challenge(kind, body)?),
            PacketKind::PathResponse => Body::PathResponse(decode_challenge(kind, body)?),
            PacketKind::Data => {
                let (fields, payload) = DataFields::decode(body)?;
                Body::Data(fields, payload.to_vec())
            }
            PacketKind::Ack => {
                let mut ack = Ack::default();
                ack.decode_into(body)?;
                Body::Ack(ack)
            }
            PacketKind::Probe => Body::Probe { datagram_len },
            PacketKind::Close => Body::Close(decode_close(body)?),
        })
    }

    /// Encodes the body (padding included) into `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len() - HEADER_LEN;
        match self {
            Body::Hello { max_datagram, datagram_len } => {
                out.put_u16(*max_datagram);
                out.resize(start + datagram_len - TAG_LEN, 0);
            }
            Body::PathChallenge(c) | Body::PathResponse(c) => out.extend_from_slice(c),
            Body::Data(fields, payload) => {
                fields.encode(out);
                out.extend_from_slice(payload);
            }
            Body::Ack(ack) => ack.encode(out),
            Body::Probe { datagram_len } => out.resize(start + datagram_len - TAG_LEN, 0),
            Body::Close(reason) => out.put_u16(*reason),
        }
    }
}

/// Header, encoded body and room for the tag, sealed by `direction`.
fn seal(keys: &FlowKeys, direction: Direction, pn: u64, body: &Body) -> Vec<u8> {
    let mut d = Vec::new();
    Header { kind: body.kind(), flow: FLOW, pn }.encode(&mut d);
    body.encode(&mut d);
    d.extend_from_slice(&[0; TAG_LEN]);
    direction.sealer(keys).seal(pn, &mut d);
    d
}

struct Expected {
    name: &'static str,
    direction: Direction,
    pn: u64,
    body: Body,
}

fn crc32(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

fn expectations() -> Vec<Expected> {
    use Direction::{Client, Server};
    let e = |name, direction, pn, body| Expected { name, direction, pn, body };
    vec![
        e("udp-hello.hex", Client, 0, Body::Hello { max_datagram: 1472, datagram_len: MIN_DATAGRAM }),
        e("udp-path-challenge.hex", Server, 0, Body::PathChallenge(CHALLENGE)),
        e("udp-path-response.hex", Client, 1, Body::PathResponse(CHALLENGE)),
        e(
            "udp-data.hex",
            Client,
            2,
            Body::Data(DataFields { offset: 1 << 20, len: 5, crc32: crc32(b"hello") }, b"hello".to_vec()),
        ),
        e("udp-probe.hex", Client, 3, Body::Probe { datagram_len: 1252 }),
        e(
            "udp-ack.hex",
            Server,
            1,
            Body::Ack(Ack {
                largest_pn: 3,
                ack_delay_us: 250,
                max_datagram: 1252,
                cumulative: 5,
                ranges: vec![(1 << 20, (1 << 20) + 5), (2 << 20, (2 << 20) + 1152)],
            }),
        ),
        e("udp-close.hex", Server, 2, Body::Close(close_reason::DONE)),
    ]
}

// ---- Vector files ----

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto-spec").join("vectors")
}

/// A parsed datagram vector.
struct Vector {
    requirements: Vec<String>,
    direction: Option<String>,
    /// The `#>` lines: header and body before sealing.
    plaintext: Vec<u8>,
    /// The sealed datagram.
    bytes: Vec<u8>,
}

/// Hex digits and whitespace to bytes; `XX*N` is N bytes of XX.
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let (digits, count) = match word.split_once('*') {
            Some((d, n)) => (d, n.parse::<usize>().map_err(|e| format!("{word}: {e}"))?),
            None => (word, 1),
        };
        let bytes = hex::decode(digits).map_err(|e| format!("{word}: {e}"))?;
        for _ in 0..count {
            out.extend_from_slice(&bytes);
        }
    }
    Ok(out)
}

fn parse_vector(text: &str) -> Result<Vector, String> {
    let mut v = Vector { requirements: Vec::new(), direction: None, plaintext: Vec::new(), bytes: Vec::new() };
    let mut digits = String::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(plain) = line.strip_prefix("#>") {
            let hex_part = plain.split_once(';').map_or(plain, |(h, _)| h);
            v.plaintext.extend(parse_hex(hex_part).map_err(|e| format!("line {}: {e}", n + 1))?);
            continue;
        }
        let (data, comment) = line.split_once('#').unwrap_or((line, ""));
        let comment = comment.trim();
        if let Some(ids) = comment.strip_prefix("requirement:") {
            v.requirements.extend(ids.split(',').map(|id| id.trim().to_string()).filter(|id| !id.is_empty()));
        } else if let Some(d) = comment.strip_prefix("direction:") {
            v.direction = Some(d.trim().to_string());
        }
        for c in data.chars().filter(|c| !c.is_whitespace()) {
            if !c.is_ascii_hexdigit() {
                return Err(format!("line {}: {c:?} is not a hex digit", n + 1));
            }
            digits.push(c);
        }
    }
    v.bytes = hex::decode(&digits).map_err(|e| format!("hex: {e}"))?;
    Ok(v)
}

fn load(name: &str) -> Vector {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_vector(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_expected(name: &str) -> (Expected, Vec<u8>) {
    let e = expectations().into_iter().find(|e| e.name == name).expect("a vector in the table");
    let bytes = load(name).bytes;
    (e, bytes)
}

// ---- The vectors ----

#[test]
fn can_open_decode_and_reseal_every_vector() {
    let keys = keys();
    for e in expectations() {
        let name = e.name;
        let v = load(name);
        let want_direction = match e.direction {
            Direction::Client => "client",
            Direction::Server => "server",
        };
        assert_eq!(v.direction.as_deref(), Some(want_direction), "{name}: `# direction:`");
        assert!(!v.requirements.is_empty(), "{name}: no `# requirement:` line");

        // UDP-PKT-2: the header, without a key.
        let header = Header::decode(&v.bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(header, Header { kind: e.body.kind(), flow: FLOW, pn: e.pn }, "{name}");
        assert!(ReplayWindow::new().check(header.pn));

        // UDP-SEAL-5: opens with its direction's key, and its plaintext is the annotated one.
        let len = v.bytes.len();
        let mut d = v.bytes.clone();
        let body = e.direction.sealer(&keys).open(header.pn, &mut d).unwrap_or_else(|err| panic!("{name}: {err}"));
        let body = body.to_vec();
        assert_eq!(hex::encode(&v.bytes[..HEADER_LEN]), hex::encode(&v.plaintext[..HEADER_LEN]), "{name}: header");
        assert_eq!(hex::encode(&body), hex::encode(&v.plaintext[HEADER_LEN..]), "{name}: `#>` body");

        // UDP-PKT-4..10: the body decodes to the expected value.
        assert_eq!(Body::decode(header.kind, &body, len), Ok(e.body.clone()), "{name}");

        // Sealing the expected value gives the same bytes.
        assert_eq!(hex::encode(seal(&keys, e.direction, e.pn, &e.body)), hex::encode(&v.bytes), "{name}: re-sealed");
    }
}

#[test]
fn rejects_vector_files_without_an_expectation() {
    let table: BTreeSet<String> = expectations().iter().map(|e| e.name.to_string()).collect();
    let files: BTreeSet<String> = std::fs::read_dir(vectors_dir())
        .expect("vectors dir")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("udp-") && n.ends_with(".hex"))
        .collect();
    assert_eq!(files, table, "udp-*.hex files and the table of tests/it/udp_vectors.rs differ");
}

#[test]
fn covers_every_packet_kind_and_both_directions() {
    let kinds: BTreeSet<u8> = expectations().iter().map(|e| e.body.kind() as u8).collect();
    assert_eq!(kinds, (1..=7).collect());
    for d in [Direction::Client, Direction::Server] {
        assert!(expectations().iter().any(|e| e.direction == d));
    }
}

#[test]
fn accepts_hello_and_probe_of_their_sizes() {
    // UDP-PKT-4: a Hello is padded to at least 1200 bytes; UDP-PKT-8: a Probe is the probed size.
    assert_eq!(load("udp-hello.hex").bytes.len(), MIN_DATAGRAM);
    assert_eq!(load("udp-probe.hex").bytes.len(), 1252);
}

// ---- Tampering, keys and truncation (UDP-SEAL-2, UDP-SEAL-5, UDP-PKT-2) ----

/// What a receiver does with a datagram before the body: the key-free header checks, then
/// opening with `sealer`.
fn receive(sealer: &Sealer, datagram: &[u8]) -> Result<Vec<u8>, PacketError> {
    let header = Header::decode(datagram)?;
    let mut d = datagram.to_vec();
    Ok(sealer.open(header.pn, &mut d)?.to_vec())
}

#[test]
fn rejects_any_flipped_bit_in_header_body_or_tag() {
    let keys = keys();
    for name in ["udp-data.hex", "udp-ack.hex", "udp-close.hex", "udp-path-challenge.hex"] {
        let (e, bytes) = load_expected(name);
        let sealer = e.direction.sealer(&keys);
        assert!(receive(sealer, &bytes).is_ok(), "{name}");
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut d = bytes.clone();
                d[i] ^= bit;
                let err = receive(sealer, &d).expect_err("a changed datagram must not open");
                let expected = match i {
                    0 => matches!(err, PacketError::UnknownKind(_) | PacketError::Auth),
                    1 => err == PacketError::Flags,
                    _ => err == PacketError::Auth,
                };
                assert!(expected, "{name}: byte {i} bit {bit:#04x}: {err:?}");
            }
        }
    }
}

#[test]
fn rejects_the_other_directions_key() {
    let keys = keys();
    for e in expectations() {
        let bytes = load(e.name).bytes;
        assert_eq!(receive(e.direction.other().sealer(&keys), &bytes), Err(PacketError::Auth), "{}", e.name);
    }
}

#[test]
fn rejects_another_flow_or_packet_number_in_the_header() {
    // The header is the associated data: a datagram moved to another flow or pn does not open.
    let keys = keys();
    let (e, bytes) = load_expected("udp-data.hex");
    for (at, value) in [(9, 0x09u8), (17, 0x03)] {
        let mut d = bytes.clone();
        d[at] = value;
        assert_eq!(receive(e.direction.sealer(&keys), &d), Err(PacketError::Auth), "byte {at}");
    }
}

#[test]
fn rejects_truncated_datagrams() {
    let keys = keys();
    let (e, bytes) = load_expected("udp-data.hex");
    let sealer = e.direction.sealer(&keys);
    for len in 0..bytes.len() {
        let want = if len < HEADER_LEN + TAG_LEN { PacketError::Short } else { PacketError::Auth };
        assert_eq!(receive(sealer, &bytes[..len]), Err(want), "cut at {len}");
        let mut d = bytes[..len].to_vec();
        assert_eq!(sealer.open(e.pn, &mut d).err(), Some(want), "open cut at {len}");
    }
    // Extra bytes after the tag change the tag's position: not a valid datagram either.
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(receive(sealer, &longer), Err(PacketError::Auth));
}

#[test]
fn rejects_datagrams_over_the_size_limit() {
    let mut d = load("udp-probe.hex").bytes;
    d.resize(MAX_DATAGRAM, 0);
    assert!(Header::decode(&d).is_ok());
    d.push(0);
    assert_eq!(Header::decode(&d), Err(PacketError::Long));
}

#[test]
fn rejects_unknown_kinds_and_reserved_flags() {
    let bytes = load("udp-close.hex").bytes;
    for kind in [0u8, 8, 0x7f, 0xff] {
        let mut d = bytes.clone();
        d[0] = kind;
        assert_eq!(Header::decode(&d), Err(PacketError::UnknownKind(kind)));
    }
    for flags in [0x01u8, 0x40, 0x80, 0xff] {
        let mut d = bytes.clone();
        d[1] = flags;
        assert_eq!(Header::decode(&d), Err(PacketError::Flags));
    }
}

// ---- Malformed bodies in correctly sealed datagrams (UDP-PKT-4..10) ----

/// Seals `body` as a datagram of `kind` from the server, opens it, and decodes it: the AEAD
/// accepts it, so only the body rules can reject it.
fn decode_sealed(kind: PacketKind, body: &[u8]) -> Result<Body, PacketError> {
    let keys = keys();
    let mut d = Vec::new();
    Header { kind, flow: FLOW, pn: 9 }.encode(&mut d);
    d.extend_from_slice(body);
    d.extend_from_slice(&[0; TAG_LEN]);
    keys.server.seal(9, &mut d);
    let len = d.len();
    let opened = receive(&keys.server, &d).expect("a sealed datagram opens");
    Body::decode(kind, &opened, len)
}

fn ack_body(cumulative: u64, count: u16, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u64(3);
    b.put_u32(0);
    b.put_u16(1200);
    b.put_u64(cumulative);
    b.put_u16(count);
    for &(s, e) in ranges {
        b.put_u64(s);
        b.put_u64(e);
    }
    b
}

#[test]
fn accepts_well_formed_acks() {
    let ok = |cumulative, ranges: &[(u64, u64)]| {
        decode_sealed(PacketKind::Ack, &ack_body(cumulative, ranges.len() as u16, ranges))
    };
    assert!(ok(0, &[]).is_ok());
    assert!(ok(0, &[(1, 2)]).is_ok());
    assert!(ok(10, &[(11, 20), (21, 30)]).is_ok());
    let many: Vec<(u64, u64)> = (0..MAX_ACK_RANGES as u64).map(|i| (10 * i + 1, 10 * i + 5)).collect();
    assert!(ok(0, &many).is_ok());
}

#[test]
fn rejects_unordered_overlapping_touching_or_empty_ack_ranges() {
    let bad = PacketError::Body(PacketKind::Ack);
    // (what, cumulative, ranges)
    let cases: [(&str, u64, &[ByteRange]); 7] = [
        ("unordered", 0, &[(20, 30), (5, 10)]),
        ("overlapping", 0, &[(5, 15), (10, 20)]),
        ("touching each other", 0, &[(5, 10), (10, 20)]),
        ("touching the cumulative prefix", 10, &[(10, 20)]),
        ("below the cumulative prefix", 10, &[(2, 5)]),
        ("empty", 0, &[(5, 5)]),
        ("reversed", 0, &[(9, 5)]),
    ];
    for (what, cumulative, ranges) in cases {
        let body = ack_body(cumulative, ranges.len() as u16, ranges);
        assert_eq!(decode_sealed(PacketKind::Ack, &body), Err(bad), "{what}");
    }
}

#[test]
fn rejects_too_many_ack_ranges_or_a_wrong_count() {
    let bad = PacketError::Body(PacketKind::Ack);
    let many: Vec<(u64, u64)> = (0..=MAX_ACK_RANGES as u64).map(|i| (10 * i + 1, 10 * i + 5)).collect();
    assert_eq!(decode_sealed(PacketKind::Ack, &ack_body(0, many.len() as u16, &many)), Err(bad), "65 ranges");
    // A count that disagrees with the bytes that follow, both ways.
    assert_eq!(decode_sealed(PacketKind::Ack, &ack_body(0, 2, &[(1, 2)])), Err(bad));
    assert_eq!(decode_sealed(PacketKind::Ack, &ack_body(0, 0, &[(1, 2)])), Err(bad));
    let mut trailing = ack_body(0, 1, &[(1, 2)]);
    trailing.push(0);
    assert_eq!(decode_sealed(PacketKind::Ack, &trailing), Err(bad));
    let short = ack_body(0, 0, &[]);
    assert_eq!(decode_sealed(PacketKind::Ack, &short[..short.len() - 1]), Err(bad));
}

fn data_body(offset: u64, len: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    DataFields { offset, len, crc32: crc32(payload) }.encode(&mut b);
    b.extend_from_slice(payload);
    b
}

#[test]
fn rejects_data_whose_length_disagrees_with_its_payload() {
    let bad = PacketError::Body(PacketKind::Data);
    assert!(decode_sealed(PacketKind::Data, &data_body(0, 5, b"hello")).is_ok());
    assert_eq!(decode_sealed(PacketKind::Data, &data_body(0, 6, b"hello")), Err(bad));
    assert_eq!(decode_sealed(PacketKind::Data, &data_body(0, 4, b"hello")), Err(bad));
    assert_eq!(decode_sealed(PacketKind::Data, &data_body(0, 0, b"")).map(|_| ()), Ok(()));
    // Shorter than the fixed fields.
    assert_eq!(decode_sealed(PacketKind::Data, &data_body(0, 0, b"")[..13]), Err(bad));
    // Ending past u64::MAX.
    assert_eq!(decode_sealed(PacketKind::Data, &data_body(u64::MAX - 2, 5, b"hello")), Err(bad));
    assert!(decode_sealed(PacketKind::Data, &data_body(u64::MAX - 5, 5, b"hello")).is_ok());
}

#[test]
fn leaves_the_crc32_check_to_the_receiver() {
    // The decoder splits the fields; UDP-DATA-2 (drop on a crc32 mismatch) is the receiver's.
    let mut body = data_body(0, 5, b"hello");
    body[10] ^= 0xff;
    let Ok(Body::Data(fields, payload)) = decode_sealed(PacketKind::Data, &body) else { panic!("decodes") };
    assert_ne!(fields.crc32, crc32(&payload));
}

#[test]
fn rejects_challenges_and_closes_of_the_wrong_length() {
    for kind in [PacketKind::PathChallenge, PacketKind::PathResponse] {
        assert_eq!(decode_sealed(kind, &[0; 7]), Err(PacketError::Body(kind)));
        assert_eq!(decode_sealed(kind, &[0; 9]), Err(PacketError::Body(kind)));
        assert!(decode_sealed(kind, &[0; 8]).is_ok());
    }
    assert_eq!(decode_sealed(PacketKind::Close, &[0]), Err(PacketError::Body(PacketKind::Close)));
    assert_eq!(decode_sealed(PacketKind::Close, &[0; 3]), Err(PacketError::Body(PacketKind::Close)));
    assert_eq!(decode_sealed(PacketKind::Close, &[0, 2]), Ok(Body::Close(close_reason::SINK_ERROR)));
}

#[test]
fn rejects_hello_without_its_max_datagram() {
    let bad = PacketError::Body(PacketKind::Hello);
    assert_eq!(decode_sealed(PacketKind::Hello, &[]), Err(bad));
    assert_eq!(decode_sealed(PacketKind::Hello, &[0x05]), Err(bad));
}
