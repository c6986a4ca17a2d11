//! Datagram decoders (proto-spec/udp.md): the clear header, sealed bodies, every body kind.

use xfer::udp::packet::{
    decode_challenge, decode_close, decode_hello, Ack, DataFields, Header, PacketKind, HEADER_LEN, TAG_LEN,
};
use xfer::udp::seal::{FlowKeys, EXPORT_LEN};

/// The keys of the datagram vectors (exported keying material 00 01 ... 37), so that the
/// vectors in `proto-spec/vectors/udp-*.hex` make a seed corpus that opens.
pub fn fixed_keys() -> FlowKeys {
    let mut m = [0u8; EXPORT_LEN];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    FlowKeys::from_exported(&m)
}

/// Treats `data` as a received datagram, as a receiver would up to the body (UDP-VALID-1):
/// decodes the header, opens it with both directions' fixed keys, and decodes what opened by
/// its kind. A mutated datagram never gets past the AEAD, so the body decoders also run on the
/// bytes between header and tag as if they had opened. Panics if a decoder panics or if a
/// decoded body does not re-encode to the same bytes.
pub fn datagram(data: &[u8]) {
    let Ok(header) = Header::decode(data) else { return };
    let mut again = Vec::with_capacity(HEADER_LEN);
    header.encode(&mut again);
    assert_eq!(&again[..], &data[..HEADER_LEN], "a decoded header re-encodes to its bytes");

    let keys = fixed_keys();
    for sealer in [&keys.client, &keys.server] {
        let mut d = data.to_vec();
        if let Ok(body) = sealer.open(header.pn, &mut d) {
            body_by_kind(header.kind, body);
        }
    }
    body_by_kind(header.kind, &data[HEADER_LEN..data.len() - TAG_LEN]);
}

/// Decodes `body` as a `kind` body; whatever decodes must re-encode to the same bytes (for
/// `Hello`, its leading u16; padding is not checked).
pub fn body_by_kind(kind: PacketKind, body: &[u8]) {
    match kind {
        PacketKind::Hello => {
            if let Ok(max) = decode_hello(body) {
                assert_eq!(max.to_be_bytes(), body[..2]);
            }
        }
        PacketKind::PathChallenge | PacketKind::PathResponse => {
            if let Ok(c) = decode_challenge(kind, body) {
                assert_eq!(&c[..], body);
            }
        }
        PacketKind::Data => {
            if let Ok((fields, payload)) = DataFields::decode(body) {
                assert_eq!(usize::from(fields.len), payload.len());
                let mut again = Vec::with_capacity(body.len());
                fields.encode(&mut again);
                again.extend_from_slice(payload);
                assert_eq!(again, body);
            }
        }
        PacketKind::Ack => {
            let mut ack = Ack::default();
            if ack.decode_into(body).is_ok() {
                assert_eq!(ack.encoded_len(), body.len());
                let mut again = Vec::with_capacity(body.len());
                ack.encode(&mut again);
                assert_eq!(again, body);
            }
        }
        PacketKind::Probe => {}
        PacketKind::Close => {
            if let Ok(reason) = decode_close(body) {
                assert_eq!(reason.to_be_bytes(), body);
            }
        }
    }
}

/// Treats `data` as the plaintext of a datagram (header and body, no tag), seals it with each
/// direction's fixed key, and runs [`datagram`] on the result, so the body decoders run behind
/// a real open (UDP-SEAL-2, UDP-SEAL-5). Opening gives back exactly the sealed body.
pub fn datagram_sealed(data: &[u8]) {
    let mut plain = data.to_vec();
    plain.extend_from_slice(&[0; TAG_LEN]);
    let Ok(header) = Header::decode(&plain) else { return };
    let keys = fixed_keys();
    for sealer in [&keys.client, &keys.server] {
        let mut sealed = plain.clone();
        sealer.seal(header.pn, &mut sealed);
        datagram(&sealed);
        let body = sealer.open(header.pn, &mut sealed).expect("what was sealed opens");
        assert_eq!(body, &data[HEADER_LEN..], "opening gives back the sealed body");
    }
}
