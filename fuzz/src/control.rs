//! Control connection decoders (proto-spec/control.md): framing, both message enums, data
//! chunks.

use bytes::BytesMut;
use serde::{de::DeserializeOwned, Serialize};
use xfer::proto::codec::{check_frame, encode_control, encode_data};
use xfer::proto::{Frame, FrameDecoder, Request, Response};

/// Treats `data` as a received control stream: the first byte picks the size of the pieces
/// the rest arrives in (1 to 256 bytes, as reads would deliver it), and every decoded frame
/// must re-encode to its bytes (CTRL-FRAME-1..6). Stops at the first error, as the connection
/// does.
pub fn control_frames(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else { return };
    let mut decoder = FrameDecoder::new();
    let mut start = 0; // offset in `stream` of the first undecoded frame
    let mut fed = 0;
    for piece in stream.chunks(usize::from(step) + 1) {
        decoder.buffer().extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode() {
                Ok(Some(frame)) => {
                    let total = check_frame(&stream[start..]).ok().flatten().expect("a decoded frame was whole");
                    frame_re_encodes(frame, &stream[start..start + total]);
                    start += total;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert_eq!(decoder.pending(), fed - start, "the decoder holds exactly the undecoded bytes");
    }
}

/// A control payload decoded as a `Request` re-encodes to the same bytes (CTRL-FRAME-4, -5).
pub fn control_request(payload: &[u8]) {
    message_re_encodes::<Request>(payload);
}

/// A control payload decoded as a `Response` re-encodes to the same bytes (CTRL-FRAME-4, -5).
pub fn control_response(payload: &[u8]) {
    message_re_encodes::<Response>(payload);
}

fn frame_re_encodes(frame: Frame, bytes: &[u8]) {
    match frame {
        Frame::Control(payload) => {
            assert_eq!(&payload[..], &bytes[5..]);
            if let Ok(r) = Frame::decode_control::<Request>(&payload) {
                assert_eq!(encode_control(&r), bytes, "a decoded request frame re-encodes to its bytes");
            }
            if let Ok(r) = Frame::decode_control::<Response>(&payload) {
                assert_eq!(encode_control(&r), bytes, "a decoded response frame re-encodes to its bytes");
            }
        }
        Frame::Data(chunk) => {
            assert!(chunk.offset.checked_add(chunk.data.len() as u64).is_some(), "a chunk ends within u64");
            assert_eq!(chunk.end() - chunk.offset, chunk.data.len() as u64);
            let mut again = BytesMut::new();
            encode_data(&chunk, &mut again);
            assert_eq!(&again[..], bytes, "a decoded data frame re-encodes to its bytes");
        }
    }
}

fn message_re_encodes<T: DeserializeOwned + Serialize>(payload: &[u8]) {
    if let Ok(msg) = Frame::decode_control::<T>(payload) {
        assert_eq!(&encode_control(&msg)[5..], payload, "a decoded message re-encodes to its bytes");
    }
}
