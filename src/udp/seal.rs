//! Datagram protection (UDP-SEAL-*): AES-128-GCM keyed per flow and direction from the TLS
//! session of the control connection, so only the holder of that session can produce or read a
//! flow's datagrams. Right after the handshake both ends export a 32-byte session secret (RFC
//! 8446 exporter, UDP-SEAL-1); each flow's keys are HKDF-SHA256 of that secret and the flow id.
//! The nonce is the packet number XORed into a per-direction IV, as in TLS 1.3 and QUIC
//! (UDP-SEAL-3); the clear header is the associated data (UDP-SEAL-2). Packet numbers never
//! repeat within a direction (UDP-SEAL-4), and flow ids never repeat within a control connection
//! (UDP-CTRL-1), so no nonce is used twice.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

use super::packet::{PacketError, HEADER_LEN, TAG_LEN};

/// Exporter label of the session secret (UDP-SEAL-1); the exporter context is empty.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-xfer-udp";
/// Bytes of the exported session secret.
pub const SECRET_LEN: usize = 32;
/// HKDF info prefix of a flow's keys; the flow id follows as u64 BE.
pub const FLOW_INFO: &[u8] = b"xfer-udp-flow";
/// Bytes of keying material per flow: client key, server key, client IV, server IV.
pub const EXPORT_LEN: usize = 16 + 16 + 12 + 12;

/// The secret both ends of a control session hold.
pub type SessionSecret = [u8; SECRET_LEN];

struct KeyLen;

impl ring::hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        EXPORT_LEN
    }
}

/// The 56 bytes of keying material of flow `flow` (UDP-SEAL-1).
pub fn flow_material(secret: &SessionSecret, flow: u64) -> [u8; EXPORT_LEN] {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(secret);
    let id = flow.to_be_bytes();
    let info = [FLOW_INFO, &id[..]];
    let mut m = [0u8; EXPORT_LEN];
    // 56 bytes is far below HKDF-SHA256's 8160-byte limit.
    prk.expand(&info, KeyLen).and_then(|okm| okm.fill(&mut m)).expect("HKDF output length within limit");
    m
}

/// One direction's key and IV.
pub struct Sealer {
    key: LessSafeKey,
    iv: [u8; 12],
}

/// Both directions of one flow. A side seals with its own direction and opens with its peer's
/// (UDP-SEAL-5).
pub struct FlowKeys {
    /// Seals what the client sends (and opens it at the server).
    pub client: Sealer,
    /// Seals what the server sends.
    pub server: Sealer,
}

impl FlowKeys {
    /// Keys of flow `flow` (UDP-SEAL-1): HKDF-SHA256 with an empty salt over the session
    /// secret, info = "xfer-udp-flow" || flow id u64 BE, 56 bytes split by
    /// [`FlowKeys::from_exported`].
    pub fn derive(secret: &SessionSecret, flow: u64) -> FlowKeys {
        FlowKeys::from_exported(&flow_material(secret, flow))
    }

    /// Splits exported keying material (UDP-SEAL-1).
    pub fn from_exported(m: &[u8; EXPORT_LEN]) -> FlowKeys {
        FlowKeys { client: Sealer::new(&m[0..16], &m[32..44]), server: Sealer::new(&m[16..32], &m[44..56]) }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)") // never the key
    }
}

impl Sealer {
    fn new(key: &[u8], iv: &[u8]) -> Sealer {
        // 16 bytes always form a valid AES-128 key.
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).expect("16-byte AES-128 key"));
        let mut v = [0u8; 12];
        v.copy_from_slice(iv);
        Sealer { key, iv: v }
    }

    /// IV XOR (4 zero bytes || `pn` BE) (UDP-SEAL-3).
    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Seals a datagram in place (UDP-SEAL-2). `datagram` holds the 18-byte header, the body,
    /// and [`TAG_LEN`] bytes of room for the tag at the end; `pn` must be the header's packet
    /// number, and never one sealed before with this key (UDP-SEAL-4).
    ///
    /// # Panics
    ///
    /// If `datagram` is shorter than [`HEADER_LEN`] + [`TAG_LEN`] (a caller bug).
    pub fn seal(&self, pn: u64, datagram: &mut [u8]) {
        let (header, rest) = datagram.split_at_mut(HEADER_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag_out) = rest.split_at_mut(body_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(pn), Aad::from(&*header), body)
            .expect("AES-GCM sealing cannot fail below its length limit");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Opens a whole datagram in place and returns its body, or `PacketError::Auth` for a
    /// forged, tampered or misdirected datagram (UDP-SEAL-5). Check the replay window before
    /// and commit to it after (UDP-REPLAY-1).
    pub fn open<'a>(&self, pn: u64, datagram: &'a mut [u8]) -> Result<&'a mut [u8], PacketError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(PacketError::Short);
        }
        let (header, rest) = datagram.split_at_mut(HEADER_LEN);
        self.key.open_in_place(self.nonce(pn), Aad::from(&*header), rest).map_err(|_| PacketError::Auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::packet::{Header, PacketKind};

    fn keys() -> FlowKeys {
        let mut m = [0u8; EXPORT_LEN];
        for (i, b) in m.iter_mut().enumerate() {
            *b = i as u8;
        }
        FlowKeys::from_exported(&m)
    }

    fn datagram(pn: u64, body: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        Header { kind: PacketKind::Probe, flow: 7, pn }.encode(&mut d);
        d.extend_from_slice(body);
        d.extend_from_slice(&[0; TAG_LEN]);
        d
    }

    #[test]
    fn derives_flow_keys_as_rfc5869_hkdf_sha256() {
        // Independently computed (Python `cryptography`, HKDF-SHA256, no salt).
        let secret: SessionSecret = core::array::from_fn(|i| i as u8);
        let want = "0bcdbac83156ea6c2acc74832f66024992021414aaca09ab2d8474b6686c7dc6\
                    d266d199e1dbfffd01445841eba17cf685d76272838fc0be";
        assert_eq!(hex::encode(flow_material(&secret, 0x0102_0304_0506_0708)), want);
        assert_ne!(flow_material(&secret, 1), flow_material(&secret, 2));
    }

    #[test]
    fn can_round_trip() {
        let k = keys();
        let mut d = datagram(3, b"payload");
        k.client.seal(3, &mut d);
        assert_ne!(&d[HEADER_LEN..HEADER_LEN + 7], b"payload");
        assert_eq!(k.client.open(3, &mut d).unwrap(), b"payload");
    }

    #[test]
    fn rejects_tampering_wrong_direction_and_wrong_pn() {
        let k = keys();
        let mut sealed = datagram(3, b"payload");
        k.client.seal(3, &mut sealed);
        for i in 0..sealed.len() {
            let mut d = sealed.clone();
            d[i] ^= 0x01;
            assert_eq!(k.client.open(3, &mut d), Err(PacketError::Auth), "flipped byte {i}");
        }
        assert_eq!(k.server.open(3, &mut sealed.clone()), Err(PacketError::Auth));
        assert_eq!(k.client.open(4, &mut sealed.clone()), Err(PacketError::Auth));
    }
}
