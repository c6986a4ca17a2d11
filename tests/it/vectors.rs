//! Golden wire vectors (proto-spec/vectors/*.hex; the datagram vectors udp-*.hex are checked by
//! tests/it/udp_vectors.rs): every file decodes to the value this table expects and re-encodes to
//! exactly the same bytes; plus the decoder's rejection rules (CTRL-HELLO-2, CTRL-FRAME-1..5)
//! and the traceability checks over proto-spec/*.md, udp.md included.
//!
//! Vector file format (see proto-spec/README.md): `#` starts a comment; header comments
//! `# requirement: ID, ID` and `# value: ...`; everything else is hex digits and whitespace.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use xfer::proto::codec::{encode_control, encode_data, DATA_HEADER_LEN, FRAME_CONTROL, FRAME_DATA, READ_AHEAD};
use xfer::proto::control::Md5Digest;
use xfer::proto::{
    decode_preamble, encode_preamble, DataChunk, DecodeError, Entry, EntryKind, ErrorCode, Frame, FrameDecoder,
    Request, Response, Transport, TreeEntry, CHUNK_SIZE, MAX_FRAME_LEN, PREAMBLE_LEN, PROTOCOL_VERSION,
};

/// What a vector file must decode to.
#[derive(Debug, Clone)]
enum Expected {
    Preamble(u16),
    Request(Request),
    Response(Response),
    Data(DataChunk),
}

fn md5(hex_digest: &str) -> Md5Digest {
    let bytes = hex::decode(hex_digest).expect("valid hex digest");
    bytes.try_into().expect("16-byte digest")
}

/// md5("") and md5("hello"), used throughout the vectors.
const MD5_EMPTY: &str = "d41d8cd98f00b204e9800998ecf8427e";
const MD5_HELLO: &str = "5d41402abc4b2a76b9719d911017c592";
/// md5("hellohello"): the held bytes of request-get-udp.hex, two ranges each holding "hello".
const MD5_HELLOHELLO: &str = "23b431acfeb41e15d466d75de822307c";
/// The flow id of the UDP vectors, here and in proto-spec/vectors/udp-*.hex.
const FLOW: u64 = 0x0102_0304_0506_0708;

/// The expected value of every vector file, by file name.
fn expectations() -> Vec<(&'static str, Expected)> {
    use Expected::{Data, Preamble, Request as Req, Response as Resp};
    let s = String::from;
    vec![
        ("preamble-v1.hex", Preamble(1)),
        ("request-auth.hex", Req(Request::Auth { user: s("alice"), password: s("pässwörd") })),
        ("request-pwd.hex", Req(Request::Pwd)),
        ("request-cd.hex", Req(Request::Cd { path: s("../docs") })),
        ("request-list.hex", Req(Request::List { path: s("") })),
        ("request-stat.hex", Req(Request::Stat { path: s("/photos/ファイル.jpg") })),
        ("request-mkdir.hex", Req(Request::Mkdir { path: s("new dir") })),
        ("request-remove.hex", Req(Request::Remove { path: s("old.txt") })),
        ("request-rmdir.hex", Req(Request::Rmdir { path: s("empty") })),
        ("request-rename.hex", Req(Request::Rename { from: s("a.txt"), to: s("b/a.txt") })),
        ("request-df.hex", Req(Request::Df)),
        ("request-sum.hex", Req(Request::Sum { path: s("hello.txt") })),
        (
            "request-put.hex",
            Req(Request::Put { path: s("a b/é.txt"), size: 5, resume: true, transport: Transport::Tcp }),
        ),
        ("request-put-end.hex", Req(Request::PutEnd { md5: md5(MD5_HELLO) })),
        (
            "request-get.hex",
            Req(Request::Get { path: s("hello.txt"), offset: 0, prefix_md5: None, transport: Transport::Tcp }),
        ),
        (
            "request-get-resume.hex",
            Req(Request::Get {
                path: s("big.iso"),
                offset: 0x0010_0000,
                prefix_md5: Some(md5(MD5_EMPTY)),
                transport: Transport::Tcp,
            }),
        ),
        ("request-abort.hex", Req(Request::Abort)),
        ("request-bye.hex", Req(Request::Bye)),
        (
            "request-put-udp.hex",
            Req(Request::Put { path: s("big.iso"), size: 0x0030_0000, resume: true, transport: Transport::Udp }),
        ),
        (
            "request-get-udp.hex",
            Req(Request::GetUdp {
                path: s("big.iso"),
                held: vec![(0, 5), (0x0010_0000, 0x0010_0005)],
                held_md5: Some(md5(MD5_HELLOHELLO)),
                rate_limit: Some(12_500_000),
            }),
        ),
        (
            "request-set-attrs.hex",
            Req(Request::SetAttrs { path: s("a.txt"), mtime: 1_700_000_000, mode: Some(0o640), upload_md5: None }),
        ),
        ("request-walk.hex", Req(Request::Walk { path: s("photos") })),
        ("request-glob.hex", Req(Request::Glob { pattern: s("logs/**/*.gz") })),
        ("request-copy.hex", Req(Request::Copy { from: s("a.txt"), to: s("backup/a.txt") })),
        (
            "request-get-auto.hex",
            Req(Request::GetAuto {
                path: s("hello.txt"),
                held: vec![],
                held_md5: None,
                rate_limit: None,
                tcp_max: 0x0002_0000,
            }),
        ),
        (
            "request-put-flow.hex",
            Req(Request::PutFlow { path: s("big.iso"), size: 0x0030_0000, resume: false, flow: 0x0102_0304_0506_0708 }),
        ),
        (
            "request-get-flow.hex",
            Req(Request::GetFlow {
                path: s("big.iso"),
                held: vec![],
                held_md5: None,
                rate_limit: None,
                tcp_max: Some(0x0002_0000),
                flow: 0x0102_0304_0506_0708,
            }),
        ),
        ("response-ok.hex", Resp(Response::Ok)),
        ("response-authed.hex", Resp(Response::Authed { cwd: s("/") })),
        ("response-pwd.hex", Resp(Response::Pwd { path: s("/docs") })),
        ("response-listing-empty.hex", Resp(Response::Listing { entries: vec![] })),
        (
            "response-listing.hex",
            Resp(Response::Listing {
                entries: vec![
                    Entry { name: s("a.txt"), kind: EntryKind::File, size: 5, mtime: 1_700_000_000 },
                    Entry { name: s("dir"), kind: EntryKind::Dir, size: 4096, mtime: 0 },
                    Entry { name: s("link"), kind: EntryKind::Symlink, size: 7, mtime: -1 },
                    Entry { name: s("fifo"), kind: EntryKind::Other, size: 0, mtime: 86_400 },
                ],
            }),
        ),
        (
            "response-stat.hex",
            Resp(Response::Stat { entry: Entry { name: s("é"), kind: EntryKind::File, size: 1, mtime: 2 } }),
        ),
        (
            "response-df.hex",
            Resp(Response::Df {
                used_bytes: 1000,
                quota_bytes: 1 << 30,
                used_files: 3,
                max_files: None,
                reserved_bytes: 0,
            }),
        ),
        (
            "response-df-max-files.hex",
            Resp(Response::Df {
                used_bytes: 0,
                quota_bytes: u64::MAX,
                used_files: 0,
                max_files: Some(100),
                reserved_bytes: 5,
            }),
        ),
        ("response-sum.hex", Resp(Response::Sum { md5: md5(MD5_HELLO), size: 5 })),
        ("response-put-ready.hex", Resp(Response::PutReady { offset: 0, prefix_md5: None })),
        ("response-put-ready-resume.hex", Resp(Response::PutReady { offset: 5, prefix_md5: Some(md5(MD5_HELLO)) })),
        ("response-put-done.hex", Resp(Response::PutDone { size: 5, md5: md5(MD5_HELLO) })),
        ("response-get-ready.hex", Resp(Response::GetReady { size: 5, offset: 0 })),
        ("response-get-end.hex", Resp(Response::GetEnd { md5: md5(MD5_HELLO) })),
        (
            "response-error-auth-failed.hex",
            Resp(Response::Error {
                code: ErrorCode::AuthFailed,
                message: s("login failed: wrong user name or password"),
            }),
        ),
        (
            "response-error-disk-full.hex",
            Resp(Response::Error { code: ErrorCode::DiskFull, message: s("no space left on the server's disk") }),
        ),
        (
            "response-error-unsupported-version.hex",
            Resp(Response::Error {
                code: ErrorCode::UnsupportedVersion,
                message: s("protocol version 2 is not supported; this server speaks 1"),
            }),
        ),
        (
            "response-udp-put-ready.hex",
            Resp(Response::UdpPutReady { flow: FLOW, held: vec![(0, 5)], held_md5: Some(md5(MD5_HELLO)) }),
        ),
        ("response-udp-get-ready.hex", Resp(Response::UdpGetReady { flow: FLOW, size: 0x0030_0000 })),
        (
            "response-tree.hex",
            Resp(Response::Tree {
                entries: vec![
                    TreeEntry { path: s("d"), kind: EntryKind::Dir, size: 0, mtime: 1_700_000_000, mode: 0o755 },
                    TreeEntry { path: s("d/a.txt"), kind: EntryKind::File, size: 5, mtime: -1, mode: 0o644 },
                ],
            }),
        ),
        (
            "response-error-too-many-entries.hex",
            Resp(Response::Error {
                code: ErrorCode::TooManyEntries,
                message: s("photos: more than 100000 entries, or too long a reply"),
            }),
        ),
        ("data-empty.hex", Data(DataChunk::new(0, Bytes::new()))),
        ("data-small.hex", Data(DataChunk::new(0x0010_0000, Bytes::from_static(b"hello")))),
    ]
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors_dir() -> PathBuf {
    manifest_dir().join("proto-spec").join("vectors")
}

/// A parsed vector file.
struct Vector {
    requirements: Vec<String>,
    value: Option<String>,
    bytes: Vec<u8>,
}

fn parse_vector(text: &str) -> Result<Vector, String> {
    let mut requirements = Vec::new();
    let mut value = None;
    let mut digits = String::new();
    for (n, line) in text.lines().enumerate() {
        let (data, comment) = line.split_once('#').unwrap_or((line, ""));
        let comment = comment.trim();
        if let Some(ids) = comment.strip_prefix("requirement:") {
            requirements.extend(ids.split(',').map(|id| id.trim().to_string()).filter(|id| !id.is_empty()));
        } else if let Some(v) = comment.strip_prefix("value:") {
            value = Some(v.trim().to_string());
        }
        for c in data.chars().filter(|c| !c.is_whitespace()) {
            if !c.is_ascii_hexdigit() {
                return Err(format!("line {}: {c:?} is not a hex digit", n + 1));
            }
            digits.push(c);
        }
    }
    let bytes = hex::decode(&digits).map_err(|e| format!("hex: {e}"))?;
    Ok(Vector { requirements, value, bytes })
}

fn load(name: &str) -> Vector {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_vector(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Decodes exactly one frame from `bytes`, requiring that nothing is left over.
fn decode_one(bytes: &[u8]) -> Frame {
    let mut dec = FrameDecoder::new();
    dec.buffer().extend_from_slice(bytes);
    let frame = dec.decode().expect("decodes").expect("a whole frame");
    assert_eq!(dec.pending(), 0, "bytes left after the frame");
    assert_eq!(dec.decode(), Ok(None));
    frame
}

/// Decodes a vector as `expected` says and re-encodes it; returns the re-encoded bytes.
fn decode_and_reencode(name: &str, bytes: &[u8], expected: &Expected) -> Vec<u8> {
    match expected {
        Expected::Preamble(version) => {
            let arr: [u8; PREAMBLE_LEN] = bytes.try_into().expect("a preamble is 6 bytes");
            assert_eq!(decode_preamble(&arr), Ok(*version), "{name}");
            encode_preamble(*version).to_vec()
        }
        Expected::Request(want) => {
            let Frame::Control(payload) = decode_one(bytes) else { panic!("{name}: not a control frame") };
            let got: Request = Frame::decode_control(&payload).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got, want, "{name}");
            encode_control(&got)
        }
        Expected::Response(want) => {
            let Frame::Control(payload) = decode_one(bytes) else { panic!("{name}: not a control frame") };
            let got: Response = Frame::decode_control(&payload).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got, want, "{name}");
            encode_control(&got)
        }
        Expected::Data(want) => {
            let Frame::Data(got) = decode_one(bytes) else { panic!("{name}: not a data frame") };
            assert_eq!(&got, want, "{name}");
            assert!(got.verify(), "{name}: crc32 does not match the payload");
            let mut out = got.header().to_vec();
            out.extend_from_slice(&got.data);
            out
        }
    }
}

#[test]
fn can_round_trip_every_vector() {
    for (name, expected) in expectations() {
        let vector = load(name);
        let again = decode_and_reencode(name, &vector.bytes, &expected);
        assert_eq!(hex::encode(&again), hex::encode(&vector.bytes), "{name}: re-encoding differs");
    }
}

#[test]
fn can_encode_every_expected_value_to_its_vector() {
    for (name, expected) in expectations() {
        let encoded = match &expected {
            Expected::Preamble(v) => encode_preamble(*v).to_vec(),
            Expected::Request(r) => encode_control(r),
            Expected::Response(r) => encode_control(r),
            Expected::Data(c) => {
                let mut out = BytesMut::new();
                encode_data(c, &mut out);
                out.to_vec()
            }
        };
        assert_eq!(hex::encode(encoded), hex::encode(load(name).bytes), "{name}");
    }
}

#[test]
fn accepts_vectors_fed_one_byte_at_a_time() {
    for (name, expected) in expectations() {
        if matches!(expected, Expected::Preamble(_)) {
            continue;
        }
        let bytes = load(name).bytes;
        let mut dec = FrameDecoder::new();
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(dec.decode(), Ok(None), "{name}: frame complete after only {i} bytes");
            dec.buffer().extend_from_slice(&[*b]);
        }
        let frame = dec.decode().expect("decodes").expect("a whole frame");
        assert_eq!(frame, decode_one(&bytes), "{name}");
    }
}

#[test]
fn accepts_back_to_back_frames_in_one_buffer() {
    let names = ["request-put.hex", "data-small.hex", "data-empty.hex", "request-put-end.hex"];
    let mut dec = FrameDecoder::new();
    for name in names {
        dec.buffer().extend_from_slice(&load(name).bytes);
    }
    for name in names {
        let frame = dec.decode().expect("decodes").expect("a whole frame");
        assert_eq!(frame, decode_one(&load(name).bytes), "{name}");
    }
    assert_eq!(dec.decode(), Ok(None));
    assert_eq!(dec.pending(), 0);
}

/// Every vector file, control frames and datagrams alike.
fn vector_file_names() -> BTreeSet<String> {
    let dir = vectors_dir();
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".hex"))
        .collect()
}

#[test]
fn rejects_vector_files_without_an_expectation() {
    let table: BTreeSet<String> = expectations().iter().map(|(n, _)| n.to_string()).collect();
    // Datagram vectors have their own table in tests/it/udp_vectors.rs.
    let files: BTreeSet<String> = vector_file_names().into_iter().filter(|n| !n.starts_with("udp-")).collect();
    let untested: Vec<_> = files.difference(&table).collect();
    let missing: Vec<_> = table.difference(&files).collect();
    assert!(untested.is_empty(), "vector files with no expected value in tests/it/vectors.rs: {untested:?}");
    assert!(missing.is_empty(), "expected values with no vector file: {missing:?}");
    let others: Vec<_> = std::fs::read_dir(vectors_dir())
        .expect("vectors dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".hex"))
        .collect();
    assert!(others.is_empty(), "vector directory holds files that are not .hex vectors: {others:?}");
}

#[test]
fn accepts_only_vectors_with_requirement_and_value_headers() {
    for name in vector_file_names() {
        let v = load(&name);
        assert!(!v.requirements.is_empty(), "{name}: no `# requirement:` line");
        assert!(v.value.as_deref().is_some_and(|s| !s.is_empty()), "{name}: no `# value:` line");
    }
}

#[test]
fn covers_every_request_and_response_variant_and_data() {
    let mut requests = BTreeSet::new();
    let mut responses = BTreeSet::new();
    let mut error_codes = BTreeSet::new();
    let mut data = 0;
    for (_, expected) in expectations() {
        match expected {
            Expected::Request(r) => {
                requests.insert(variant_index(&encode_control(&r)));
            }
            Expected::Response(r) => {
                let frame = encode_control(&r);
                if let Response::Error { .. } = r {
                    error_codes.insert(u32::from_be_bytes(frame[9..13].try_into().expect("4 bytes")));
                }
                responses.insert(variant_index(&frame));
            }
            Expected::Data(_) => data += 1,
            Expected::Preamble(_) => {}
        }
    }
    // The counts come from the decoder, not from this file: a variant appended to the enums
    // without a vector here fails the test.
    let request_count = variant_count::<Request>(|n| n.to_be_bytes().to_vec());
    let response_count = variant_count::<Response>(|n| n.to_be_bytes().to_vec());
    assert!(request_count >= 21 && response_count >= 15, "{request_count} requests, {response_count} responses");
    assert_eq!(requests, (0..request_count).collect(), "every Request variant needs a vector");
    assert_eq!(responses, (0..response_count).collect(), "every Response variant needs a vector");
    // Error codes: not each one, but the newest, so an appended code comes with its vector.
    let code_count = variant_count::<Response>(|n| error_with_code(n).to_vec());
    assert!(code_count >= 26, "{code_count} error codes");
    assert!(error_codes.contains(&(code_count - 1)), "the newest ErrorCode ({}) needs a vector", code_count - 1);
    assert!(data >= 2);
}

/// `Response::Error { code, message: "" }` with the raw code index `code`.
fn error_with_code(code: u32) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&11u32.to_be_bytes());
    out[4..8].copy_from_slice(&code.to_be_bytes());
    out
}

/// Whether a decoding failure is an unknown variant index (CTRL-FRAME-4), as opposed to a body
/// cut short: serde names the index it was given and the valid range.
fn unknown_variant(err: &DecodeError, index: u32) -> bool {
    matches!(err, DecodeError::Malformed(m) if m.contains(&format!("integer `{index}`")) && m.contains("variant index"))
}

/// The number of variants of an enum, found by decoding `bytes(n)` for n = 0, 1, ...: every
/// known index decodes or fails for want of its fields; the first unknown one fails as an
/// unknown variant, and so does every index after it that is tried.
fn variant_count<T: serde::de::DeserializeOwned + std::fmt::Debug>(bytes: impl Fn(u32) -> Vec<u8>) -> u32 {
    const MAX_VARIANTS: u32 = 1000;
    for n in 0..MAX_VARIANTS {
        match Frame::decode_control::<T>(&bytes(n)) {
            Err(e) if unknown_variant(&e, n) => {
                for later in [n + 1, n + 100, u32::MAX] {
                    let e = Frame::decode_control::<T>(&bytes(later)).expect_err("past the last variant");
                    assert!(unknown_variant(&e, later), "index {later}: {e:?}");
                }
                return n;
            }
            Ok(_) | Err(DecodeError::Malformed(_)) => {}
            Err(e) => panic!("index {n}: {e:?}"),
        }
    }
    panic!("no unknown variant index below {MAX_VARIANTS}");
}

#[test]
fn tells_an_unknown_variant_from_a_body_cut_short() {
    // Request 0 is Auth: its index alone is a body cut short, not an unknown variant.
    let cut = Frame::decode_control::<Request>(&0u32.to_be_bytes()).expect_err("Auth has fields");
    assert!(matches!(cut, DecodeError::Malformed(_)) && !unknown_variant(&cut, 0), "{cut:?}");
    let count = variant_count::<Request>(|n| n.to_be_bytes().to_vec());
    let unknown = Frame::decode_control::<Request>(&count.to_be_bytes()).expect_err("one past the last request");
    assert!(unknown_variant(&unknown, count), "{unknown:?}");
    // Request count - 1 exists: with its fields from its vector it decodes.
    let last = expectations()
        .into_iter()
        .find_map(|(name, e)| match e {
            Expected::Request(r) if variant_index(&encode_control(&r)) == count - 1 => Some(name),
            _ => None,
        })
        .expect("a vector of the last request");
    assert!(Frame::decode_control::<Request>(&control_payload(last)).is_ok(), "{last}");
}

/// The bincode variant index of an encoded control frame (CTRL-FRAME-4).
fn variant_index(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[5..9].try_into().expect("4 bytes"))
}

// ---- Traceability: vectors and code cite requirement IDs that the spec defines ----

/// Requirement IDs defined in proto-spec/*.md: a table row or paragraph starting with the
/// bold ID, e.g. `| **CTRL-FRAME-2** |` or `**CTRL-FRAME-2**`.
fn defined_ids() -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let dir = manifest_dir().join("proto-spec");
    for entry in std::fs::read_dir(&dir).expect("proto-spec dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&path).expect("readable spec");
            for piece in text.split("**").skip(1).step_by(2) {
                if is_requirement_id(piece) {
                    ids.insert(piece.to_string());
                }
            }
        }
    }
    ids
}

const ID_PREFIXES: [&str; 5] = ["CTRL-", "QUOTA-", "OPS-", "UDP-", "STORE-"];

/// `PREFIX-...-N` with upper-case words and a numeric last part.
fn is_requirement_id(s: &str) -> bool {
    let Some(prefix) = ID_PREFIXES.iter().find(|p| s.starts_with(**p)) else { return false };
    let parts: Vec<&str> = s[prefix.len()..].split('-').collect();
    let (last, words) = parts.split_last().expect("split yields one part");
    !last.is_empty()
        && last.chars().all(|c| c.is_ascii_digit())
        && words.iter().all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
}

/// Every `CTRL-…-N`, `QUOTA-N`, `OPS-…-N`, `UDP-…-N` token in `text`.
fn cited_ids(text: &str) -> Vec<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || c == '-';
    text.split(|c: char| !token(c))
        .map(|t| t.trim_end_matches('-'))
        .filter(|t| is_requirement_id(t))
        .map(String::from)
        .collect()
}

#[test]
fn accepts_vectors_citing_only_defined_requirements() {
    let defined = defined_ids();
    for name in vector_file_names() {
        for id in load(&name).requirements {
            assert!(defined.contains(&id), "{name} cites {id}, which proto-spec does not define");
        }
    }
}

#[test]
fn can_find_cited_ids_in_text() {
    let text =
        "cites (CTRL-PUT-4, CTRL-PUT-*), QUOTA-1; OPS-USAGE-1. CTRL-FRAME-1..5 not-CTRL-X CTRL-lower-1 UDP-ACK-2";
    assert_eq!(cited_ids(text), ["CTRL-PUT-4", "QUOTA-1", "OPS-USAGE-1", "CTRL-FRAME-1", "UDP-ACK-2"]);
}

#[test]
fn defines_every_requirement_the_code_relies_on() {
    let defined = defined_ids();
    let mut required: Vec<String> = [
        "CTRL-HELLO-1",
        "CTRL-HELLO-2",
        "CTRL-ERR-1",
        "CTRL-AUTH-1",
        "CTRL-AUTH-2",
        "CTRL-AUTH-3",
        "CTRL-XFER-1",
        "CTRL-XFER-2",
        "CTRL-XFER-3",
        "CTRL-XFER-8",
        "CTRL-RESUME-1",
        "CTRL-RESUME-2",
        "CTRL-RESUME-3",
        "QUOTA-1",
        "QUOTA-2",
        "QUOTA-3",
        "OPS-USAGE-1",
    ]
    .map(String::from)
    .to_vec();
    required.extend((1..=8).map(|n| format!("CTRL-FRAME-{n}")));
    // Logins, sessions and operations (src/server/, src/auth/).
    required.extend((4..=5).map(|n| format!("CTRL-AUTH-{n}")));
    required.extend((1..=7).map(|n| format!("CTRL-SESS-{n}")));
    required.extend(["OPS-AUDIT-1", "OPS-LOG-1", "OPS-LOG-2", "OPS-METRICS-1"].map(String::from));
    required.extend((1..=6).map(|n| format!("CTRL-PUT-{n}")));
    required.extend((1..=4).map(|n| format!("CTRL-GET-{n}")));
    required.extend((1..=39).map(|n| format!("CTRL-MSG-{n}")));
    // Cited by src/proto/control.rs and src/udp/.
    required.extend((1..=5).map(|n| format!("UDP-CTRL-{n}")));
    required.extend((1..=10).map(|n| format!("UDP-PKT-{n}")));
    required.extend((1..=5).map(|n| format!("UDP-SEAL-{n}")));
    required.extend(["UDP-REPLAY-1", "UDP-AMP-1"].map(String::from));
    let missing: Vec<_> = required.iter().filter(|id| !defined.contains(*id)).collect();
    assert!(missing.is_empty(), "not defined in proto-spec/: {missing:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn accepts_source_citing_only_defined_requirements() {
    let defined = defined_ids();
    let mut files = Vec::new();
    rust_files(&manifest_dir().join("src"), &mut files);
    let mut undefined = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable source");
        for id in cited_ids(&text) {
            if !defined.contains(&id) {
                undefined.push(format!("{}: {id}", path.display()));
            }
        }
    }
    assert!(undefined.is_empty(), "requirement IDs cited in src/ but not defined in proto-spec/: {undefined:#?}");
}

// ---- Decoder rejection rules ----

fn decode_bytes(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    let mut dec = FrameDecoder::new();
    dec.buffer().extend_from_slice(bytes);
    dec.decode()
}

fn control_payload(name: &str) -> Vec<u8> {
    load(name).bytes[5..].to_vec()
}

#[test]
fn rejects_trailing_bytes_after_control_message() {
    for name in ["request-put.hex", "request-bye.hex", "response-listing.hex"] {
        let mut payload = control_payload(name);
        payload.push(0);
        let req = Frame::decode_control::<Request>(&payload).err();
        let resp = Frame::decode_control::<Response>(&payload).err();
        let expected = Some(DecodeError::TrailingBytes(1));
        assert!(req == expected || resp == expected, "{name}: {req:?} / {resp:?}");
    }
    // A whole frame whose length covers an extra byte is rejected the same way.
    let mut frame = encode_control(&Request::Pwd);
    frame.push(0xff);
    let len = (frame.len() - 4) as u32;
    frame[0..4].copy_from_slice(&len.to_be_bytes());
    let Some(Frame::Control(payload)) = decode_bytes(&frame).expect("frame is well formed") else {
        panic!("control frame expected");
    };
    assert_eq!(Frame::decode_control::<Request>(&payload), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn accepts_truncated_frame_as_need_more() {
    for (name, expected) in expectations() {
        if matches!(expected, Expected::Preamble(_)) {
            continue;
        }
        let bytes = load(name).bytes;
        for cut in 0..bytes.len() {
            assert_eq!(decode_bytes(&bytes[..cut]), Ok(None), "{name} cut at {cut}");
        }
    }
}

#[test]
fn rejects_truncated_control_payload() {
    let payload = control_payload("request-put.hex");
    for cut in 0..payload.len() {
        assert!(
            matches!(Frame::decode_control::<Request>(&payload[..cut]), Err(DecodeError::Malformed(_))),
            "cut at {cut}"
        );
    }
}

#[test]
fn rejects_oversize_length() {
    let too_big = MAX_FRAME_LEN + 1;
    assert_eq!(decode_bytes(&too_big.to_be_bytes()), Err(DecodeError::FrameTooLarge(too_big)));
    assert_eq!(decode_bytes(&u32::MAX.to_be_bytes()), Err(DecodeError::FrameTooLarge(u32::MAX)));
    // Known as soon as the length field is in, before any of the body arrives.
    let mut with_body = too_big.to_be_bytes().to_vec();
    with_body.push(FRAME_CONTROL);
    assert_eq!(decode_bytes(&with_body), Err(DecodeError::FrameTooLarge(too_big)));
}

#[test]
fn accepts_max_length_as_need_more() {
    let mut bytes = MAX_FRAME_LEN.to_be_bytes().to_vec();
    bytes.push(FRAME_CONTROL);
    assert_eq!(decode_bytes(&bytes), Ok(None));
}

#[test]
fn accepts_control_frame_of_max_length() {
    let len = MAX_FRAME_LEN as usize;
    let mut bytes = MAX_FRAME_LEN.to_be_bytes().to_vec();
    bytes.push(FRAME_CONTROL);
    bytes.resize(4 + len, 0);
    let Some(Frame::Control(payload)) = decode_bytes(&bytes).expect("within the limit") else {
        panic!("control frame expected");
    };
    assert_eq!(payload.len(), len - 1);
}

#[test]
fn rejects_empty_frame() {
    assert_eq!(decode_bytes(&[0, 0, 0, 0]), Err(DecodeError::EmptyFrame));
}

#[test]
fn rejects_unknown_frame_type() {
    for kind in [0x00, 0x03, 0x7f, 0xff] {
        assert_eq!(decode_bytes(&[0, 0, 0, 1, kind]), Err(DecodeError::UnknownFrameType(kind)));
    }
}

#[test]
fn accepts_control_frame_with_empty_payload_but_not_as_a_message() {
    let Some(Frame::Control(payload)) = decode_bytes(&[0, 0, 0, 1, FRAME_CONTROL]).expect("framing is fine") else {
        panic!("control frame expected");
    };
    assert!(payload.is_empty());
    assert!(matches!(Frame::decode_control::<Request>(&payload), Err(DecodeError::Malformed(_))));
}

#[test]
fn rejects_data_frame_shorter_than_its_header() {
    for body in 0..12usize {
        let mut bytes = ((1 + body) as u32).to_be_bytes().to_vec();
        bytes.push(FRAME_DATA);
        bytes.resize(4 + 1 + body, 0);
        assert_eq!(decode_bytes(&bytes), Err(DecodeError::ShortDataHeader), "body of {body} bytes");
    }
}

#[test]
fn accepts_chunk_of_exactly_chunk_size() {
    let chunk = DataChunk::new(7, Bytes::from(vec![0xa5; CHUNK_SIZE]));
    let mut out = BytesMut::new();
    encode_data(&chunk, &mut out);
    assert_eq!(out.len(), DATA_HEADER_LEN + CHUNK_SIZE);
    assert_eq!(decode_bytes(&out), Ok(Some(Frame::Data(chunk))));
}

#[test]
fn rejects_chunk_over_chunk_size() {
    let chunk = DataChunk::new(0, Bytes::from(vec![0; CHUNK_SIZE + 1]));
    let mut out = BytesMut::new();
    encode_data(&chunk, &mut out);
    assert_eq!(decode_bytes(&out), Err(DecodeError::ChunkTooLarge(CHUNK_SIZE + 1)));
}

#[test]
fn rejects_chunk_ending_past_u64_max() {
    // CTRL-FRAME-8; found by the control_frames fuzz target (fuzz/seeds/control_frames/regress-chunk-past-end).
    let chunk = DataChunk::new(u64::MAX, Bytes::from_static(b"x"));
    let mut out = BytesMut::new();
    encode_data(&chunk, &mut out);
    assert_eq!(decode_bytes(&out), Err(DecodeError::ChunkPastEnd(u64::MAX)));
    let last = DataChunk::new(u64::MAX - 1, Bytes::from_static(b"x"));
    let mut out = BytesMut::new();
    encode_data(&last, &mut out);
    assert_eq!(decode_bytes(&out), Ok(Some(Frame::Data(last))));
}

#[test]
fn rejects_reserving_memory_for_a_declared_length() {
    // CTRL-FRAME-7; found by the control_frames fuzz target (fuzz/seeds/control_frames/regress-declared-len).
    let mut dec = FrameDecoder::new();
    let before = dec.buffer().capacity();
    dec.buffer().extend_from_slice(&(MAX_FRAME_LEN).to_be_bytes());
    dec.buffer().extend_from_slice(&[FRAME_CONTROL]);
    assert_eq!(dec.decode(), Ok(None));
    assert!(dec.buffer().capacity() <= before.max(5 + READ_AHEAD), "capacity {}", dec.buffer().capacity());
}

#[test]
fn accepts_data_frame_with_wrong_crc_for_the_receiver_to_judge() {
    // Framing does not check the crc32; ChunkCheck does (CTRL-XFER-2).
    let mut bytes = load("data-small.hex").bytes;
    bytes[13] ^= 0x01;
    let Some(Frame::Data(chunk)) = decode_bytes(&bytes).expect("framing is fine") else {
        panic!("data frame expected");
    };
    assert!(!chunk.verify());
}

#[test]
fn rejects_bad_magic_in_preamble() {
    for bad in [*b"XFEr\x00\x01", *b"HTTP/1", [0; 6], *b"\x00\x00\x00\x0d\x01\x00"] {
        assert_eq!(decode_preamble(&bad), Err(DecodeError::BadMagic), "{bad:?}");
    }
}

#[test]
fn accepts_preamble_of_any_version_for_the_session_to_judge() {
    assert_eq!(decode_preamble(b"XFER\x00\x02"), Ok(2));
    assert_eq!(decode_preamble(b"XFER\xff\xff"), Ok(u16::MAX));
    assert_eq!(encode_preamble(PROTOCOL_VERSION), *b"XFER\x00\x01");
}

#[test]
fn rejects_unknown_variant_indices() {
    let be = |n: u32| n.to_be_bytes().to_vec();
    assert!(matches!(Frame::decode_control::<Request>(&be(21)), Err(DecodeError::Malformed(_))));
    assert!(matches!(Frame::decode_control::<Response>(&be(15)), Err(DecodeError::Malformed(_))));
    assert!(matches!(Frame::decode_control::<Request>(&be(u32::MAX)), Err(DecodeError::Malformed(_))));
    // Error { code: 26, message: "" }: one past TooManyEntries.
    let err = [be(11), be(26), 0u64.to_be_bytes().to_vec()].concat();
    assert!(matches!(Frame::decode_control::<Response>(&err), Err(DecodeError::Malformed(_))));
    let ok = [be(11), be(24), 0u64.to_be_bytes().to_vec()].concat();
    assert_eq!(
        Frame::decode_control::<Response>(&ok),
        Ok(Response::Error { code: ErrorCode::UnsupportedTransport, message: String::new() })
    );
    // Put with transport 1 is Udp (UDP-CTRL-1); 2 is past the last transport (CTRL-XFER-8).
    let mut put = control_payload("request-put.hex");
    let n = put.len();
    put[n - 4..].copy_from_slice(&1u32.to_be_bytes());
    assert!(matches!(Frame::decode_control::<Request>(&put), Ok(Request::Put { transport: Transport::Udp, .. })));
    put[n - 4..].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(Frame::decode_control::<Request>(&put), Err(DecodeError::Malformed(_))));
}

#[test]
fn rejects_bool_and_option_tags_other_than_0_and_1() {
    // request-put.hex: resume is the byte before the 4-byte transport.
    let mut put = control_payload("request-put.hex");
    let n = put.len();
    put[n - 5] = 2;
    assert!(matches!(Frame::decode_control::<Request>(&put), Err(DecodeError::Malformed(_))));
    // response-put-ready.hex: the Option tag is the last byte.
    let mut ready = control_payload("response-put-ready.hex");
    *ready.last_mut().expect("non-empty") = 2;
    assert!(matches!(Frame::decode_control::<Response>(&ready), Err(DecodeError::Malformed(_))));
}

#[test]
fn rejects_invalid_utf8_in_strings() {
    // Request::Cd { path } with path bytes [0xc3, 0x28] (an invalid two-byte sequence).
    let cd = [2u32.to_be_bytes().to_vec(), 2u64.to_be_bytes().to_vec(), vec![0xc3, 0x28]].concat();
    assert!(matches!(Frame::decode_control::<Request>(&cd), Err(DecodeError::Malformed(_))));
}

#[test]
fn rejects_string_length_past_the_payload_or_the_limit() {
    for len in [3u64, u64::from(MAX_FRAME_LEN) + 1, u64::MAX] {
        let cd = [2u32.to_be_bytes().to_vec(), len.to_be_bytes().to_vec(), b"ab".to_vec()].concat();
        assert!(matches!(Frame::decode_control::<Request>(&cd), Err(DecodeError::Malformed(_))), "length {len}");
    }
}

#[test]
fn rejects_request_bytes_read_as_the_wrong_message_type() {
    // Bye (request 15) has no Response counterpart.
    let bye = control_payload("request-bye.hex");
    assert!(Frame::decode_control::<Response>(&bye).is_err());
}
