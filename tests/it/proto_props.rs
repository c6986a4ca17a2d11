//! Property tests of the wire format (proto-spec/control.md):
//!
//! - every `Request` and `Response`, with arbitrary strings, sizes, options and error codes,
//!   round-trips through `encode_control` -> `FrameDecoder` (fed in arbitrary pieces) ->
//!   `Frame::decode_control` (CTRL-FRAME-1, CTRL-FRAME-4), with the variant indices of CTRL-MSG-*;
//! - data chunks round-trip the same way (CTRL-FRAME-3);
//! - arbitrary bytes never make the decoder panic, and whatever decodes re-encodes to the same
//!   bytes (the encoding is canonical, CTRL-FRAME-5).

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use xfer::proto::codec::{encode_control, encode_data, FRAME_CONTROL};
use xfer::proto::control::{ByteRange, Md5Digest};
use xfer::proto::{
    DataChunk, Entry, EntryKind, ErrorCode, Frame, FrameDecoder, Request, Response, Transport, TreeEntry,
};

// ---- Variant indices, written out so that the compiler checks they are exhaustive ----

/// Wire index of a request variant (CTRL-MSG-1..16, then CTRL-MSG-30).
fn request_index(r: &Request) -> u32 {
    match r {
        Request::Auth { .. } => 0,
        Request::Pwd => 1,
        Request::Cd { .. } => 2,
        Request::List { .. } => 3,
        Request::Stat { .. } => 4,
        Request::Mkdir { .. } => 5,
        Request::Remove { .. } => 6,
        Request::Rmdir { .. } => 7,
        Request::Rename { .. } => 8,
        Request::Df => 9,
        Request::Sum { .. } => 10,
        Request::Put { .. } => 11,
        Request::PutEnd { .. } => 12,
        Request::Get { .. } => 13,
        Request::Abort => 14,
        Request::Bye => 15,
        Request::GetUdp { .. } => 16,
        Request::SetAttrs { .. } => 17,
        Request::Walk { .. } => 18,
        Request::Glob { .. } => 19,
        Request::Copy { .. } => 20,
        Request::GetAuto { .. } => 21,
        Request::PutFlow { .. } => 22,
        Request::GetFlow { .. } => 23,
    }
}

/// Wire index of a response variant (CTRL-MSG-17..28, then CTRL-MSG-31..32).
fn response_index(r: &Response) -> u32 {
    match r {
        Response::Ok => 0,
        Response::Authed { .. } => 1,
        Response::Pwd { .. } => 2,
        Response::Listing { .. } => 3,
        Response::Stat { .. } => 4,
        Response::Df { .. } => 5,
        Response::Sum { .. } => 6,
        Response::PutReady { .. } => 7,
        Response::PutDone { .. } => 8,
        Response::GetReady { .. } => 9,
        Response::GetEnd { .. } => 10,
        Response::Error { .. } => 11,
        Response::UdpPutReady { .. } => 12,
        Response::UdpGetReady { .. } => 13,
        Response::Tree { .. } => 14,
    }
}

/// Wire index of an error code (CTRL-ERR-1).
fn error_index(c: ErrorCode) -> u32 {
    use ErrorCode::*;
    match c {
        BadRequest => 0,
        NotAuthenticated => 1,
        AuthFailed => 2,
        Throttled => 3,
        NotFound => 4,
        AlreadyExists => 5,
        NotADirectory => 6,
        IsADirectory => 7,
        DirectoryNotEmpty => 8,
        InvalidPath => 9,
        PathEscapes => 10,
        PermissionDenied => 11,
        QuotaExceeded => 12,
        FileQuotaExceeded => 13,
        ChunkCorrupt => 14,
        DigestMismatch => 15,
        SourceChanged => 16,
        TooLarge => 17,
        Busy => 18,
        DiskFull => 19,
        Internal => 20,
        UnsupportedVersion => 21,
        IdleTimeout => 22,
        ShuttingDown => 23,
        UnsupportedTransport => 24,
        TooManyEntries => 25,
    }
}

const ALL_ERROR_CODES: [ErrorCode; 26] = {
    use ErrorCode::*;
    [
        BadRequest,
        NotAuthenticated,
        AuthFailed,
        Throttled,
        NotFound,
        AlreadyExists,
        NotADirectory,
        IsADirectory,
        DirectoryNotEmpty,
        InvalidPath,
        PathEscapes,
        PermissionDenied,
        QuotaExceeded,
        FileQuotaExceeded,
        ChunkCorrupt,
        DigestMismatch,
        SourceChanged,
        TooLarge,
        Busy,
        DiskFull,
        Internal,
        UnsupportedVersion,
        IdleTimeout,
        ShuttingDown,
        UnsupportedTransport,
        TooManyEntries,
    ]
};

// ---- Strategies ----

/// Strings of any Unicode scalar values (NUL, controls and non-ASCII included), plus short
/// path-like ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..48).prop_map(|cs| cs.into_iter().collect::<String>()),
        "[a-z0-9éß日本 ./_-]{0,24}",
        Just(String::new()),
    ]
}

fn md5() -> impl Strategy<Value = Md5Digest> {
    any::<[u8; 16]>()
}

/// Sizes and offsets: small, near the chunk size, and anywhere up to u64::MAX.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4096, (1u64 << 20) - 2..(1u64 << 20) + 2, any::<u64>(), Just(u64::MAX)]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop::sample::select(vec![Transport::Tcp, Transport::Udp])
}

/// Byte ranges as `GetUdp` and `UdpPutReady` carry them (CTRL-MSG-33). The codec does not
/// check order or overlap, so any pairs must round-trip.
fn byte_ranges() -> impl Strategy<Value = Vec<ByteRange>> {
    vec((size(), size()), 0..6)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ALL_ERROR_CODES.to_vec())
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop::sample::select(vec![EntryKind::File, EntryKind::Dir, EntryKind::Symlink, EntryKind::Other])
}

fn entry() -> impl Strategy<Value = Entry> {
    (text(), entry_kind(), size(), any::<i64>()).prop_map(|(name, kind, size, mtime)| Entry { name, kind, size, mtime })
}

fn tree_entry() -> impl Strategy<Value = TreeEntry> {
    (text(), entry_kind(), size(), any::<i64>(), any::<u32>()).prop_map(|(path, kind, size, mtime, mode)| TreeEntry {
        path,
        kind,
        size,
        mtime,
        mode,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (text(), text()).prop_map(|(user, password)| Request::Auth { user, password }),
        Just(Request::Pwd),
        text().prop_map(|path| Request::Cd { path }),
        text().prop_map(|path| Request::List { path }),
        text().prop_map(|path| Request::Stat { path }),
        text().prop_map(|path| Request::Mkdir { path }),
        text().prop_map(|path| Request::Remove { path }),
        text().prop_map(|path| Request::Rmdir { path }),
        (text(), text()).prop_map(|(from, to)| Request::Rename { from, to }),
        Just(Request::Df),
        text().prop_map(|path| Request::Sum { path }),
        (text(), size(), any::<bool>(), transport()).prop_map(|(path, size, resume, transport)| Request::Put {
            path,
            size,
            resume,
            transport
        }),
        md5().prop_map(|md5| Request::PutEnd { md5 }),
        (text(), size(), proptest::option::of(md5()), transport())
            .prop_map(|(path, offset, prefix_md5, transport)| { Request::Get { path, offset, prefix_md5, transport } }),
        Just(Request::Abort),
        Just(Request::Bye),
        (text(), byte_ranges(), proptest::option::of(md5()), proptest::option::of(size()))
            .prop_map(|(path, held, held_md5, rate_limit)| Request::GetUdp { path, held, held_md5, rate_limit }),
        (text(), any::<i64>(), proptest::option::of(any::<u32>()), proptest::option::of(md5()))
            .prop_map(|(path, mtime, mode, upload_md5)| Request::SetAttrs { path, mtime, mode, upload_md5 }),
        text().prop_map(|path| Request::Walk { path }),
        text().prop_map(|pattern| Request::Glob { pattern }),
        (text(), text()).prop_map(|(from, to)| Request::Copy { from, to }),
        (text(), byte_ranges(), proptest::option::of(md5()), proptest::option::of(size()), size()).prop_map(
            |(path, held, held_md5, rate_limit, tcp_max)| Request::GetAuto {
                path,
                held,
                held_md5,
                rate_limit,
                tcp_max
            }
        ),
        (text(), size(), any::<bool>(), any::<u64>()).prop_map(|(path, size, resume, flow)| Request::PutFlow {
            path,
            size,
            resume,
            flow
        }),
        (
            text(),
            byte_ranges(),
            proptest::option::of(md5()),
            proptest::option::of(size()),
            proptest::option::of(size()),
            any::<u64>()
        )
            .prop_map(|(path, held, held_md5, rate_limit, tcp_max, flow)| Request::GetFlow {
                path,
                held,
                held_md5,
                rate_limit,
                tcp_max,
                flow
            }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Ok),
        text().prop_map(|cwd| Response::Authed { cwd }),
        text().prop_map(|path| Response::Pwd { path }),
        vec(entry(), 0..8).prop_map(|entries| Response::Listing { entries }),
        entry().prop_map(|entry| Response::Stat { entry }),
        (size(), size(), size(), proptest::option::of(size()), size()).prop_map(
            |(used_bytes, quota_bytes, used_files, max_files, reserved_bytes)| Response::Df {
                used_bytes,
                quota_bytes,
                used_files,
                max_files,
                reserved_bytes
            }
        ),
        (md5(), size()).prop_map(|(md5, size)| Response::Sum { md5, size }),
        (size(), proptest::option::of(md5()))
            .prop_map(|(offset, prefix_md5)| Response::PutReady { offset, prefix_md5 }),
        (size(), md5()).prop_map(|(size, md5)| Response::PutDone { size, md5 }),
        (size(), size()).prop_map(|(size, offset)| Response::GetReady { size, offset }),
        md5().prop_map(|md5| Response::GetEnd { md5 }),
        (error_code(), text()).prop_map(|(code, message)| Response::Error { code, message }),
        (any::<u64>(), byte_ranges(), proptest::option::of(md5()))
            .prop_map(|(flow, held, held_md5)| Response::UdpPutReady { flow, held, held_md5 }),
        (any::<u64>(), size()).prop_map(|(flow, size)| Response::UdpGetReady { flow, size }),
        vec(tree_entry(), 0..8).prop_map(|entries| Response::Tree { entries }),
    ]
}

// ---- Helpers ----

/// Feeds `bytes` to a decoder in pieces cut at `cuts` (taken modulo the length) and returns
/// every frame decoded, or the first error.
fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, xfer::proto::DecodeError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    for piece in points.windows(2) {
        dec.buffer().extend_from_slice(&bytes[piece[0]..piece[1]]);
        while let Some(frame) = dec.decode()? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

/// Checks the frame header of an encoded control message and returns its payload.
fn control_payload(frame: &[u8]) -> &[u8] {
    let len = u32::from_be_bytes(frame[0..4].try_into().expect("4 bytes"));
    assert_eq!(len as usize, frame.len() - 4, "length field counts type + body (CTRL-FRAME-1)");
    assert_eq!(frame[4], FRAME_CONTROL);
    &frame[5..]
}

fn index_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[0..4].try_into().expect("variant index"))
}

/// Decodes `payload` as `T`; if that succeeds, re-encoding must give the same bytes back.
fn check_canonical<T>(payload: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Ok(msg) = Frame::decode_control::<T>(payload) {
        let again = encode_control(&msg);
        assert_eq!(control_payload(&again), payload, "{msg:?} has a second encoding");
    }
}

// ---- Round trips ----

proptest! {
    #[test]
    fn can_round_trip_every_request(req in request(), cuts in vec(any::<usize>(), 0..4)) {
        let bytes = encode_control(&req);
        prop_assert_eq!(index_of(control_payload(&bytes)), request_index(&req));
        let frames = decode_in_pieces(&bytes, &cuts).expect("a valid frame decodes");
        prop_assert_eq!(frames.len(), 1);
        let Frame::Control(payload) = &frames[0] else { panic!("control frame expected") };
        prop_assert_eq!(Frame::decode_control::<Request>(payload), Ok(req));
    }

    #[test]
    fn can_round_trip_every_response(resp in response(), cuts in vec(any::<usize>(), 0..4)) {
        let bytes = encode_control(&resp);
        prop_assert_eq!(index_of(control_payload(&bytes)), response_index(&resp));
        if let Response::Error { code, .. } = &resp {
            prop_assert_eq!(index_of(&control_payload(&bytes)[4..]), error_index(*code));
        }
        let frames = decode_in_pieces(&bytes, &cuts).expect("a valid frame decodes");
        prop_assert_eq!(frames.len(), 1);
        let Frame::Control(payload) = &frames[0] else { panic!("control frame expected") };
        prop_assert_eq!(Frame::decode_control::<Response>(payload), Ok(resp));
    }

    #[test]
    fn can_round_trip_data_chunks(offset in size(), data in vec(any::<u8>(), 0..4096), cuts in vec(any::<usize>(), 0..4)) {
        // A valid chunk ends within u64 (CTRL-FRAME-8).
        let offset = offset.min(u64::MAX - data.len() as u64);
        let chunk = DataChunk::new(offset, Bytes::from(data));
        let mut out = BytesMut::new();
        encode_data(&chunk, &mut out);
        let frames = decode_in_pieces(&out, &cuts).expect("a valid frame decodes");
        prop_assert_eq!(frames, vec![Frame::Data(chunk)]);
    }

    #[test]
    fn can_round_trip_a_stream_of_mixed_frames(
        reqs in vec(request(), 0..6),
        chunks in vec((size(), vec(any::<u8>(), 0..64)), 0..6),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (req, (offset, data)) in reqs.iter().zip(chunks.iter()) {
            bytes.extend_from_slice(&encode_control(req));
            expected.push(Frame::Control(Bytes::from(encode_control(req)[5..].to_vec())));
            let offset = (*offset).min(u64::MAX - data.len() as u64); // CTRL-FRAME-8
            let chunk = DataChunk::new(offset, Bytes::from(data.clone()));
            let mut out = BytesMut::new();
            encode_data(&chunk, &mut out);
            bytes.extend_from_slice(&out);
            expected.push(Frame::Data(chunk));
        }
        prop_assert_eq!(decode_in_pieces(&bytes, &cuts).expect("valid frames decode"), expected);
    }
}

#[test]
fn can_round_trip_every_error_code() {
    for (i, code) in ALL_ERROR_CODES.into_iter().enumerate() {
        assert_eq!(error_index(code), i as u32, "ALL_ERROR_CODES is in wire order");
        let resp = Response::Error { code, message: format!("code {i}") };
        let bytes = encode_control(&resp);
        let payload = control_payload(&bytes);
        assert_eq!(&payload[4..8], &(i as u32).to_be_bytes());
        assert_eq!(Frame::decode_control::<Response>(payload), Ok(resp));
    }
    // One past the last code does not decode.
    let past = [11u32.to_be_bytes(), 26u32.to_be_bytes(), [0; 4], [0; 4]].concat();
    assert!(Frame::decode_control::<Response>(&past).is_err());
}

// ---- Robustness ----

/// A frame-shaped byte string: a small length (sometimes off by a little) and a type byte from
/// the valid ones and their neighbours, then random body bytes.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x03, 0xff]), vec(any::<u8>(), 0..80), -2i64..=2).prop_map(
        |(kind, body, delta)| {
            let len = (body.len() as i64 + 1 + delta).max(0) as u32;
            let mut out = len.to_be_bytes().to_vec();
            out.push(kind);
            out.extend_from_slice(&body);
            out
        },
    )
}

/// Feeds `bytes` in pieces; decodes every control frame as both message types. Stops at the
/// first framing error, as a connection would.
fn feed_never_panics(bytes: &[u8], cuts: &[usize]) {
    if let Ok(frames) = decode_in_pieces(bytes, cuts) {
        for frame in frames {
            match frame {
                Frame::Control(payload) => {
                    check_canonical::<Request>(&payload);
                    check_canonical::<Response>(&payload);
                }
                Frame::Data(chunk) => {
                    let _ = chunk.verify();
                    assert!(chunk.data.len() <= xfer::proto::CHUNK_SIZE);
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn accepts_arbitrary_bytes_in_arbitrary_splits_without_panicking(
        bytes in vec(any::<u8>(), 0..2048),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        feed_never_panics(&bytes, &cuts);
    }

    #[test]
    fn accepts_arbitrary_frame_like_streams_without_panicking(
        frames in vec(frame_like(), 0..8),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        feed_never_panics(&frames.concat(), &cuts);
    }

    #[test]
    fn accepts_arbitrary_payloads_without_panicking(payload in vec(any::<u8>(), 0..512)) {
        check_canonical::<Request>(&payload);
        check_canonical::<Response>(&payload);
    }

    #[test]
    fn accepts_payloads_with_plausible_variant_index_without_panicking(
        index in 0u32..20,
        rest in vec(any::<u8>(), 0..128),
    ) {
        let payload = [index.to_be_bytes().to_vec(), rest].concat();
        check_canonical::<Request>(&payload);
        check_canonical::<Response>(&payload);
    }

    #[test]
    fn accepts_mutated_requests_without_panicking(req in request(), at in any::<usize>(), byte in any::<u8>()) {
        let bytes = encode_control(&req);
        let mut payload = control_payload(&bytes).to_vec();
        let i = at % payload.len();
        payload[i] = byte;
        check_canonical::<Request>(&payload);
        payload.truncate(i);
        check_canonical::<Request>(&payload);
    }

    #[test]
    fn accepts_mutated_responses_without_panicking(resp in response(), at in any::<usize>(), byte in any::<u8>()) {
        let bytes = encode_control(&resp);
        let mut payload = control_payload(&bytes).to_vec();
        let i = at % payload.len();
        payload[i] = byte;
        check_canonical::<Response>(&payload);
        payload.truncate(i);
        check_canonical::<Response>(&payload);
    }
}
