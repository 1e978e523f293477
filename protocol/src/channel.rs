//! The end-to-end channel between a host and one paired device, without I/O: a Noise handshake
//! (`Noise_KK_25519_AESGCM_SHA256`, through `snow`), then messages split into chunks that are
//! padded to a few size classes and encrypted, so that what passes the relay shows routing,
//! timing, each frame's kind and size class, and how many chunks a message took (its size to
//! within 64 KiB) only. The browser's side is `web/src/noise.js` and
//! `web/src/channel.js`; `golden/channel.json` pins the bytes both must make.
//!
//! Keys: each side has a static X25519 key of its own, apart from its Ed25519 identity, and knows
//! the other's from pairing (KK). The prologue names both Ed25519 identities, so a session is
//! bound to them as well. The device starts a handshake on every new connection of its own
//! (a fresh ephemeral key each time: forward secrecy per connection); the host answers.
//!
//! Frames (each one message of the resume layer, which delivers them once and in order):
//!
//! ```text
//! 0x01 ‖ handshake message 1   (device → host: e, es, ss; empty payload)
//! 0x02 ‖ handshake message 2   (host → device: e, ee, se; empty payload)
//! 0x03 ‖ transport message     (either way)
//! ```
//!
//! A transport message's plaintext is one chunk: `flags` (bit 0: the message's last chunk) ‖
//! `length` (u16, big-endian) ‖ that many bytes of the message ‖ zeros up to the next size class
//! ([`SIZE_CLASSES`]). Chunks of one message follow each other; a receiver refuses a message
//! over its limit before it is whole.
//!
//! It must not decide who may talk: the caller gives the keys it trusts (from its registry or
//! its pairing), and what comes out still goes through the signed envelope's checks.

use snow::params::NoiseParams;
use zeroize::Zeroizing;

/// The Noise protocol of every channel.
pub const PROTOCOL: &str = "Noise_KK_25519_AESGCM_SHA256";

/// What the prologue starts with; both Ed25519 identities follow (host, then device).
pub const PROLOGUE_LABEL: &[u8] = b"agent-bridge channel 1";

/// A handshake message from the device.
pub const KIND_HELLO: u8 = 0x01;
/// The host's answer.
pub const KIND_ANSWER: u8 = 0x02;
/// A transport message.
pub const KIND_DATA: u8 = 0x03;

/// Sizes a chunk's plaintext is padded up to (the last is the largest a Noise message holds
/// beside its 16-byte tag).
pub const SIZE_CLASSES: [usize; 6] = [256, 1024, 4096, 16384, 32768, 65519];

/// A chunk's header: flags and length.
const CHUNK_HEADER: usize = 3;
/// The most bytes of a message one chunk carries.
pub const MAX_CHUNK_DATA: usize = 65519 - CHUNK_HEADER;
const TAG: usize = 16;
const LAST: u8 = 1;

/// Why a frame was refused or a message could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The frame is empty or of a kind this side does not expect now.
    #[error("not a frame this side expects now")]
    Unexpected,
    /// Noise refused it: a tampered or misdirected message, or keys that do not match.
    #[error("the channel refused a message: {0}")]
    Noise(String),
    /// A chunk's header or padding is not as written here.
    #[error("a chunk is malformed")]
    Malformed,
    /// The message would be larger than the receiver takes.
    #[error("a message over {0} bytes")]
    TooLarge(usize),
    /// An earlier chunk was malformed or over the limit: the peer is not keeping to this
    /// format, and what it sends next could be read as a message it never was. Nothing more
    /// is taken; a new handshake starts again.
    #[error("the channel was closed after a bad chunk")]
    Closed,
}

impl From<snow::Error> for ChannelError {
    fn from(e: snow::Error) -> Self {
        Self::Noise(e.to_string())
    }
}

/// Both sides' keys, as one side holds them.
#[derive(Clone)]
pub struct ChannelKeys {
    /// This side's static X25519 private key (wiped when dropped).
    pub local_static: Zeroizing<[u8; 32]>,
    /// The peer's static X25519 public key, from pairing.
    pub remote_static: [u8; 32],
    /// The host's Ed25519 identity.
    pub host: crate::PublicKey,
    /// The device's Ed25519 identity.
    pub device: crate::PublicKey,
}

impl std::fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelKeys")
            .field("remote_static", &hex::encode(self.remote_static))
            .finish_non_exhaustive()
    }
}

/// A new static X25519 key pair: (private, wiped when dropped; public).
pub fn generate_static() -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), ChannelError> {
    let mut pair = snow::Builder::with_resolver(params(), resolver()).generate_keypair()?;
    let private = pair.private.as_slice().try_into().map_err(|_| ChannelError::Malformed);
    zeroize::Zeroize::zeroize(&mut pair.private);
    let public = pair.public.as_slice().try_into().map_err(|_| ChannelError::Malformed)?;
    Ok((Zeroizing::new(private?), public))
}

fn x25519() -> Result<Box<dyn snow::types::Dh>, ChannelError> {
    use snow::resolvers::{CryptoResolver as _, DefaultResolver};
    DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or_else(|| ChannelError::Noise("no X25519".into()))
}

/// The public half of a static X25519 private key.
pub fn public_of(private: &[u8; 32]) -> Result<[u8; 32], ChannelError> {
    let mut dh = x25519()?;
    dh.set(private);
    dh.pubkey().try_into().map_err(|_| ChannelError::Malformed)
}

/// Whether `public` is a key a channel can be made with: not of small order (every X25519
/// agreement with such a key gives all zeros, whatever the other key, which snow does not
/// refuse). A peer's static key is checked with this when it is learnt, at pairing.
pub fn usable_public(public: &[u8; 32]) -> bool {
    let Ok(mut dh) = x25519() else { return false };
    // Any scalar will do: X25519 clamps it to a multiple of the cofactor, which sends every
    // point of small order to zero and no other.
    dh.set(&[0x55; 32]);
    let mut out = [0u8; 32];
    dh.dh(public, &mut out).is_ok() && out != [0; 32]
}

/// The primitives every channel runs on: ring's AES-GCM and SHA-256 (the ring the TLS stack
/// uses), snow's own X25519. The known-answer vectors run through the same
/// (`tests/noise_vectors.rs`).
pub fn resolver() -> snow::resolvers::BoxedCryptoResolver {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    Box::new(FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)))
}

fn params() -> NoiseParams {
    // A constant that parses: checked by the tests.
    PROTOCOL.parse().unwrap_or_else(|_| unreachable!("{PROTOCOL} parses"))
}

fn prologue(keys: &ChannelKeys) -> Vec<u8> {
    [PROLOGUE_LABEL, keys.host.as_bytes(), keys.device.as_bytes()].concat()
}

fn builder<'a>(
    keys: &'a ChannelKeys,
    prologue: &'a [u8],
    ephemeral: Option<&'a [u8; 32]>,
) -> Result<snow::Builder<'a>, ChannelError> {
    let mut b = snow::Builder::with_resolver(params(), resolver())
        .prologue(prologue)?
        .local_private_key(keys.local_static.as_slice())?
        .remote_public_key(&keys.remote_static)?;
    if let Some(e) = ephemeral {
        b = b.fixed_ephemeral_key_for_testing_only(e);
    }
    Ok(b)
}

/// The device's side of a handshake under way.
pub struct Initiator {
    state: snow::HandshakeState,
    max_message: usize,
}

/// Starts a handshake from the device: the state, and the hello frame to send.
pub fn initiate(
    keys: &ChannelKeys,
    max_message: usize,
) -> Result<(Initiator, Vec<u8>), ChannelError> {
    initiate_with(keys, max_message, None)
}

/// [`initiate`] with a fixed ephemeral key: for known-answer tests only (never in use: it
/// gives up forward secrecy and more).
#[doc(hidden)]
pub fn initiate_with(
    keys: &ChannelKeys,
    max_message: usize,
    ephemeral: Option<&[u8; 32]>,
) -> Result<(Initiator, Vec<u8>), ChannelError> {
    let prologue = prologue(keys);
    let mut state = builder(keys, &prologue, ephemeral)?.build_initiator()?;
    let mut frame = vec![0; 1 + 64 + TAG];
    frame[0] = KIND_HELLO;
    let n = state.write_message(&[], &mut frame[1..])?;
    frame.truncate(1 + n);
    Ok((Initiator { state, max_message }, frame))
}

impl Initiator {
    /// Reads the host's answer: the channel is open.
    pub fn finish(mut self, frame: &[u8]) -> Result<Channel, ChannelError> {
        let [KIND_ANSWER, message @ ..] = frame else { return Err(ChannelError::Unexpected) };
        let mut payload = [0u8; 64];
        let n = self.state.read_message(message, &mut payload)?;
        if n != 0 {
            return Err(ChannelError::Malformed);
        }
        Channel::new(self.state, self.max_message)
    }
}

/// The host's side: reads a device's hello, and returns the open channel and the answer.
pub fn respond(
    keys: &ChannelKeys,
    hello: &[u8],
    max_message: usize,
) -> Result<(Channel, Vec<u8>), ChannelError> {
    respond_with(keys, hello, max_message, None)
}

/// [`respond`] with a fixed ephemeral key: for known-answer tests only.
#[doc(hidden)]
pub fn respond_with(
    keys: &ChannelKeys,
    hello: &[u8],
    max_message: usize,
    ephemeral: Option<&[u8; 32]>,
) -> Result<(Channel, Vec<u8>), ChannelError> {
    let [KIND_HELLO, message @ ..] = hello else { return Err(ChannelError::Unexpected) };
    let prologue = prologue(keys);
    let mut state = builder(keys, &prologue, ephemeral)?.build_responder()?;
    let mut payload = [0u8; 64];
    if state.read_message(message, &mut payload)? != 0 {
        return Err(ChannelError::Malformed);
    }
    let mut frame = vec![0; 1 + 32 + TAG];
    frame[0] = KIND_ANSWER;
    let n = state.write_message(&[], &mut frame[1..])?;
    frame.truncate(1 + n);
    Ok((Channel::new(state, max_message)?, frame))
}

/// An open channel: seals messages into frames and opens frames into messages.
pub struct Channel {
    transport: snow::TransportState,
    handshake_hash: Vec<u8>,
    /// The chunks of a message not yet whole.
    partial: Vec<u8>,
    max_message: usize,
    /// A chunk was refused after it decrypted ([`ChannelError::Closed`]).
    closed: bool,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("partial", &self.partial.len()).finish_non_exhaustive()
    }
}

/// The size class a chunk of `len` bytes of plaintext is padded up to.
pub fn size_class(len: usize) -> usize {
    SIZE_CLASSES.into_iter().find(|&class| class >= len).unwrap_or(len)
}

impl Channel {
    fn new(state: snow::HandshakeState, max_message: usize) -> Result<Self, ChannelError> {
        let handshake_hash = state.get_handshake_hash().to_vec();
        Ok(Self {
            transport: state.into_transport_mode()?,
            handshake_hash,
            partial: Vec::new(),
            max_message,
            closed: false,
        })
    }

    fn close(&mut self) {
        self.closed = true;
        self.partial = Vec::new();
    }

    /// The handshake hash (both sides have the same one).
    pub fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Seals `message` into one frame per chunk.
    pub fn seal(&mut self, message: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let mut frames = Vec::with_capacity(message.len() / MAX_CHUNK_DATA + 1);
        let mut chunks = message.chunks(MAX_CHUNK_DATA).peekable();
        let mut plaintext = Vec::new();
        loop {
            let data = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            plaintext.clear();
            plaintext.push(if last { LAST } else { 0 });
            plaintext
                .extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
            plaintext.extend_from_slice(data);
            plaintext.resize(size_class(plaintext.len()), 0);
            let mut frame = vec![0; 1 + plaintext.len() + TAG];
            frame[0] = KIND_DATA;
            let n = self.transport.write_message(&plaintext, &mut frame[1..])?;
            frame.truncate(1 + n);
            frames.push(frame);
            if last {
                return Ok(frames);
            }
        }
    }

    /// Opens a frame: the message, once its last chunk is in. A frame that does not decrypt
    /// changes nothing (the same frame, untouched, still opens); a chunk that decrypts but is
    /// malformed or over the limit closes the channel ([`ChannelError::Closed`]).
    pub fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        if self.closed {
            return Err(ChannelError::Closed);
        }
        let [KIND_DATA, ciphertext @ ..] = frame else { return Err(ChannelError::Unexpected) };
        let mut plaintext = vec![0; ciphertext.len()];
        let n = self.transport.read_message(ciphertext, &mut plaintext)?;
        let chunk = &plaintext[..n];
        let [flags, hi, lo, rest @ ..] = chunk else { return Err(ChannelError::Malformed) };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if flags & !LAST != 0
            || len > rest.len()
            || chunk.len() != size_class(CHUNK_HEADER + len)
            || rest[len..].iter().any(|&b| b != 0)
        {
            self.close();
            return Err(ChannelError::Malformed);
        }
        if self.partial.len() + len > self.max_message {
            self.close();
            return Err(ChannelError::TooLarge(self.max_message));
        }
        self.partial.extend_from_slice(&rest[..len]);
        Ok((flags & LAST != 0).then(|| std::mem::take(&mut self.partial)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use super::*;

    fn pair() -> (ChannelKeys, ChannelKeys) {
        let (host_x, host_xp) = generate_static().unwrap();
        let (dev_x, dev_xp) = generate_static().unwrap();
        let host = crate::SecretKey::from_seed(&[1; 32]).public_key();
        let device = crate::SecretKey::from_seed(&[2; 32]).public_key();
        (
            ChannelKeys { local_static: host_x, remote_static: dev_xp, host, device },
            ChannelKeys { local_static: dev_x, remote_static: host_xp, host, device },
        )
    }

    fn open_pair() -> (Channel, Channel) {
        let (host, device) = pair();
        let (initiator, hello) = initiate(&device, 1 << 20).unwrap();
        let (at_host, answer) = respond(&host, &hello, 1 << 20).unwrap();
        let at_device = initiator.finish(&answer).unwrap();
        assert_eq!(at_host.handshake_hash(), at_device.handshake_hash());
        (at_host, at_device)
    }

    #[test]
    fn messages_of_every_size_go_both_ways_padded_to_their_class() {
        let (mut host, mut device) = open_pair();
        for len in [0, 1, 252, 253, 5000, MAX_CHUNK_DATA, MAX_CHUNK_DATA + 1, 200_000] {
            let message: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frames = device.seal(&message).unwrap();
            assert_eq!(frames.len(), len.div_ceil(MAX_CHUNK_DATA).max(1), "{len}");
            for frame in &frames {
                assert!(SIZE_CLASSES.contains(&(frame.len() - 1 - TAG)), "{len}: {}", frame.len());
            }
            let mut got = None;
            for frame in &frames {
                assert!(got.is_none());
                got = host.open(frame).unwrap();
            }
            assert_eq!(got.unwrap(), message);
            let back = host.seal(&message).unwrap();
            let last = back.iter().map(|f| device.open(f).unwrap()).last().unwrap();
            assert_eq!(last.unwrap(), message);
        }
    }

    #[test]
    fn tampered_replayed_or_misdirected_frames_are_refused() {
        let (mut host, mut device) = open_pair();
        let frame = device.seal(b"run cargo test").unwrap().remove(0);
        for at in 1..frame.len() {
            let mut tampered = frame.clone();
            tampered[at] ^= 1;
            let (mut host, _) = open_pair();
            assert!(host.open(&tampered).is_err(), "byte {at}");
        }
        assert_eq!(host.open(&frame).unwrap().unwrap(), b"run cargo test");
        assert!(host.open(&frame).is_err(), "replayed");
        // A frame of one session is nothing in another.
        let (mut other_host, _) = open_pair();
        let next = device.seal(b"x").unwrap().remove(0);
        assert!(other_host.open(&next).is_err());
    }

    #[test]
    fn a_hello_for_other_keys_is_refused() {
        let (host, device) = pair();
        let (_, stranger) = pair();
        let (_, hello) = initiate(&stranger, 1 << 20).unwrap();
        assert!(respond(&host, &hello, 1 << 20).is_err());
        // Same static keys, but the prologue names another device identity.
        let mut renamed = device;
        renamed.device = crate::SecretKey::from_seed(&[3; 32]).public_key();
        let (_, hello) = initiate(&renamed, 1 << 20).unwrap();
        assert!(respond(&host, &hello, 1 << 20).is_err());
        assert!(matches!(respond(&host, &[KIND_DATA], 1 << 20), Err(ChannelError::Unexpected)));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_it_is_whole() {
        let (host, device) = pair();
        let (initiator, hello) = initiate(&device, 1 << 20).unwrap();
        let (mut small, answer) = respond(&host, &hello, 100_000).unwrap();
        let mut device = initiator.finish(&answer).unwrap();
        let frames = device.seal(&vec![7; 200_000]).unwrap();
        assert_eq!(small.open(&frames[0]).unwrap(), None);
        assert_eq!(small.open(&frames[1]), Err(ChannelError::TooLarge(100_000)));
        // The rest of that message is not taken for a message of its own; nor is anything after.
        for frame in &frames[2..] {
            assert_eq!(small.open(frame), Err(ChannelError::Closed));
        }
        let next = device.seal(b"after").unwrap().remove(0);
        assert_eq!(small.open(&next), Err(ChannelError::Closed));
    }

    #[test]
    fn keys_of_small_order_are_not_usable() {
        let (_, public) = generate_static().unwrap();
        assert!(usable_public(&public));
        // The points of order 1, 2, 4 and 8 (as RFC 7748's implementations list them), and
        // the same with the unused top bit set.
        let small = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
        ];
        for key in small {
            let key: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
            assert!(!usable_public(&key), "{}", hex::encode(key));
        }
    }

    #[test]
    fn the_protocol_name_parses_and_a_public_key_is_its_private_keys() {
        let _ = params();
        let (private, public) = generate_static().unwrap();
        assert_eq!(public_of(&private).unwrap(), public);
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(257), 1024);
        assert_eq!(size_class(65519), 65519);
    }
}
