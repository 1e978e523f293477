//! The end-to-end channel between a host and one paired device, without I/O: a Noise handshake
//! through `snow` for every connection a device makes, then every resume payload
//! ([`crate::resume`]) between them sealed and padded ([`size_class`]), so that what passes the
//! relay shows routing, timing, each frame's kind and its padded size only. The browser's side is
//! `web/src/noise.js` and `web/src/channel.js`; `golden/channel.json` pins the bytes both must
//! make.
//!
//! Keys: each side has a static X25519 key of its own, apart from its Ed25519 identity, and knows
//! the other's from pairing: `Noise_KK_25519_AESGCM_SHA256`. The prologue names both Ed25519
//! identities, so a channel is bound to them as well. A device that is pairing has no such key
//! yet: its one channel is `Noise_NNpsk0_25519_AESGCM_SHA256` under a key derived from the
//! pairing link's secret ([`crate::pairing::channel_psk`]), which the relay never sees; it
//! carries the pairing messages only.
//!
//! A device starts a handshake on every connection of its own (a fresh ephemeral key each time:
//! forward secrecy per connection) and names the channel with 8 random bytes; the host answers.
//! The hello's payload is the device's incarnation (8 bytes, fixed for the life of the process),
//! so that the host replaces the channel of a process that connected again instead of keeping
//! both. Frames (each one relay data frame's payload):
//!
//! ```text
//! 0x11 ‖ id (8) ‖ KK message 1            device → host: e, es, ss; payload: incarnation
//! 0x12 ‖ id (8) ‖ KK message 2            host → device: e, ee, se; empty payload
//! 0x13 ‖ id (8) ‖ nonce (u64 BE) ‖ ciphertext      either way
//! 0x14 ‖ id (8)                           host → device: "no such channel here: open one"
//!                                         (id all zeros: any process of this key)
//! 0x15 ‖ id (8) ‖ token (32) ‖ NNpsk0 message 1    pairing device → host: psk, e; payload:
//!                                                   incarnation
//! 0x16 ‖ id (8) ‖ NNpsk0 message 2        host → pairing device: e, ee; empty payload
//! ```
//!
//! Messages may be lost between connections (the resume layer sends them again, sealed anew), so
//! each data frame carries its nonce (Noise's `SetNonce`, section 11.4 of its specification);
//! a receiver takes each nonce once and only above the last it took (a relay cannot replay a
//! frame, and frames of one channel cannot pass each other on the relay's ordered connections).
//! A data frame's plaintext is one chunk: `flags` (bit 0: a payload's last chunk, bit 1: its
//! first) ‖ `length` (u16, big-endian) ‖ that many bytes of the payload ‖ zeros up to the next
//! size ([`size_class`]). The chunks of one payload have consecutive nonces; a chunk
//! that does not follow its predecessor is dropped with what came before it (the resume layer
//! sends the whole payload again), and a receiver refuses a payload over its limit before it is
//! whole.
//!
//! `0x14` is not authenticated (nothing can be before a channel exists): a relay that forges it
//! makes a device shake hands again, which it could as well by dropping the connection.
//!
//! It must not decide who may talk: the caller gives the keys it trusts (from its registry or
//! its pairing), and what comes out still goes through the signed envelope's checks.

use snow::params::NoiseParams;
use zeroize::Zeroizing;

use crate::ids::PairingToken;

/// The Noise protocol of a paired device's channel.
pub const PROTOCOL: &str = "Noise_KK_25519_AESGCM_SHA256";
/// The Noise protocol of a pairing device's channel.
pub const PAIRING_PROTOCOL: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";

/// What the prologue of a paired device's channel starts with; both Ed25519 identities follow
/// (host, then device).
pub const PROLOGUE_LABEL: &[u8] = b"agent-bridge channel 1";
/// What the prologue of a pairing channel starts with; both Ed25519 identities and the offer's
/// token follow.
pub const PAIRING_PROLOGUE_LABEL: &[u8] = b"agent-bridge pairing channel 1";

/// A handshake message from a paired device.
pub const KIND_HELLO: u8 = 0x11;
/// The host's answer to it.
pub const KIND_ANSWER: u8 = 0x12;
/// A sealed chunk.
pub const KIND_DATA: u8 = 0x13;
/// The host knows no such channel.
pub const KIND_UNKNOWN: u8 = 0x14;
/// A handshake message from a pairing device.
pub const KIND_PAIR_HELLO: u8 = 0x15;
/// The host's answer to it.
pub const KIND_PAIR_ANSWER: u8 = 0x16;

/// The least a chunk's plaintext is padded up to: every small message (a keystroke, a decision,
/// an acknowledgement) looks the same.
pub const MIN_PADDED: usize = 256;
/// The largest chunk plaintext: the largest a Noise message holds beside its 16-byte tag.
pub const MAX_PADDED: usize = 65519;

/// A chunk's header: flags and length.
const CHUNK_HEADER: usize = 3;
/// The most bytes of a payload one chunk carries.
pub const MAX_CHUNK_DATA: usize = 65519 - CHUNK_HEADER;
const TAG: usize = 16;
const LAST: u8 = 1;
const FIRST: u8 = 2;
/// The bytes before a data frame's ciphertext.
pub const DATA_HEADER: usize = 1 + 8 + 8;
/// The largest frame of any kind.
pub const MAX_FRAME: usize = DATA_HEADER + 65535;

/// A channel's name, chosen by the device for each handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 8]);

impl ChannelId {
    /// "Any channel of this key" (in [`Frame::Unknown`] only).
    pub const ANY: Self = Self([0; 8]);
}

/// One channel frame, as it travels in a relay data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A paired device's handshake message.
    Hello {
        /// The channel it opens.
        id: ChannelId,
        /// Noise message 1.
        message: &'a [u8],
    },
    /// The host's answer to a [`Frame::Hello`].
    Answer {
        /// The channel.
        id: ChannelId,
        /// Noise message 2.
        message: &'a [u8],
    },
    /// A sealed chunk.
    Data {
        /// The channel.
        id: ChannelId,
        /// Its nonce.
        nonce: u64,
        /// The chunk, encrypted, with its tag.
        ciphertext: &'a [u8],
    },
    /// "No such channel here: open one."
    Unknown {
        /// The channel the host does not know, or [`ChannelId::ANY`].
        id: ChannelId,
    },
    /// A pairing device's handshake message.
    PairHello {
        /// The channel it opens.
        id: ChannelId,
        /// The offer's token (the relay knows it already: it routed the device by it).
        token: PairingToken,
        /// Noise message 1.
        message: &'a [u8],
    },
    /// The host's answer to a [`Frame::PairHello`].
    PairAnswer {
        /// The channel.
        id: ChannelId,
        /// Noise message 2.
        message: &'a [u8],
    },
}

fn id_at(bytes: &[u8], at: usize) -> Option<ChannelId> {
    Some(ChannelId(bytes.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Frame<'a> {
    /// Reads a frame (its shape only: nothing is decrypted).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ChannelError> {
        let (&kind, _) = bytes.split_first().ok_or(ChannelError::Malformed)?;
        if bytes.len() > MAX_FRAME {
            return Err(ChannelError::Malformed);
        }
        let id = id_at(bytes, 1).ok_or(ChannelError::Malformed)?;
        let rest = &bytes[9..];
        Ok(match kind {
            KIND_HELLO => Self::Hello { id, message: rest },
            KIND_ANSWER => Self::Answer { id, message: rest },
            KIND_DATA => {
                let nonce = rest.get(..8).ok_or(ChannelError::Malformed)?;
                let nonce =
                    u64::from_be_bytes(nonce.try_into().map_err(|_| ChannelError::Malformed)?);
                Self::Data { id, nonce, ciphertext: &rest[8..] }
            }
            KIND_UNKNOWN if rest.is_empty() => Self::Unknown { id },
            KIND_PAIR_HELLO => {
                let token = rest.get(..32).ok_or(ChannelError::Malformed)?;
                let token = PairingToken(token.try_into().map_err(|_| ChannelError::Malformed)?);
                Self::PairHello { id, token, message: &rest[32..] }
            }
            KIND_PAIR_ANSWER => Self::PairAnswer { id, message: rest },
            _ => return Err(ChannelError::Malformed),
        })
    }

    /// Writes a frame.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, id, parts): (u8, ChannelId, [&[u8]; 2]) = match self {
            Self::Hello { id, message } => (KIND_HELLO, *id, [message, &[]]),
            Self::Answer { id, message } => (KIND_ANSWER, *id, [message, &[]]),
            Self::Data { id, nonce, ciphertext } => {
                let mut out = Vec::with_capacity(DATA_HEADER + ciphertext.len());
                out.push(KIND_DATA);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(ciphertext);
                return out;
            }
            Self::Unknown { id } => (KIND_UNKNOWN, *id, [&[], &[]]),
            Self::PairHello { id, token, message } => (KIND_PAIR_HELLO, *id, [&token.0, message]),
            Self::PairAnswer { id, message } => (KIND_PAIR_ANSWER, *id, [message, &[]]),
        };
        [&[kind], &id.0[..], parts[0], parts[1]].concat()
    }
}

/// Why a frame was refused or a payload could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Noise refused it: a tampered or misdirected message, or keys that do not match.
    #[error("the channel refused a message: {0}")]
    Noise(String),
    /// A frame's or a chunk's layout is not as written here.
    #[error("a channel frame is malformed")]
    Malformed,
    /// A data frame whose nonce is not above the last one taken: a replay.
    #[error("a channel frame came again")]
    Replayed,
    /// The payload would be larger than the receiver takes.
    #[error("a payload over {0} bytes")]
    TooLarge(usize),
    /// An earlier chunk decrypted but was malformed or over the limit: the peer is not keeping
    /// to this format, and what it sends next could be read as a payload it never was. Nothing
    /// more is taken; a new handshake starts again.
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

/// What a pairing channel is made with: the pre-shared key from the link's secret, the offer's
/// token and both identities.
#[derive(Clone)]
pub struct PairingKeys {
    /// [`crate::pairing::channel_psk`] of the link's secret (wiped when dropped).
    pub psk: Zeroizing<[u8; 32]>,
    /// The offer's token.
    pub token: PairingToken,
    /// The host's Ed25519 identity.
    pub host: crate::PublicKey,
    /// The new device's Ed25519 identity.
    pub device: crate::PublicKey,
}

impl std::fmt::Debug for PairingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingKeys").field("token", &self.token).finish_non_exhaustive()
    }
}

/// A new static X25519 key pair: (private, wiped when dropped; public).
pub fn generate_static() -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), ChannelError> {
    let mut pair = snow::Builder::with_resolver(params(PROTOCOL), resolver()).generate_keypair()?;
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

fn params(name: &str) -> NoiseParams {
    // Two constants that parse: checked by the tests.
    name.parse().unwrap_or_else(|_| unreachable!("{name} parses"))
}

/// How a handshake is made: its keys, and a fixed ephemeral key for known-answer tests.
enum Keys<'a> {
    Paired(&'a ChannelKeys),
    Pairing(&'a PairingKeys),
}

impl Keys<'_> {
    fn prologue(&self) -> Vec<u8> {
        match self {
            Self::Paired(k) => [PROLOGUE_LABEL, k.host.as_bytes(), k.device.as_bytes()].concat(),
            Self::Pairing(k) => {
                [PAIRING_PROLOGUE_LABEL, k.host.as_bytes(), k.device.as_bytes(), &k.token.0]
                    .concat()
            }
        }
    }

    fn state(
        &self,
        initiator: bool,
        ephemeral: Option<&[u8; 32]>,
    ) -> Result<snow::HandshakeState, ChannelError> {
        let prologue = self.prologue();
        let mut b = match self {
            Self::Paired(k) => snow::Builder::with_resolver(params(PROTOCOL), resolver())
                .prologue(&prologue)?
                .local_private_key(k.local_static.as_slice())?
                .remote_public_key(&k.remote_static)?,
            Self::Pairing(k) => snow::Builder::with_resolver(params(PAIRING_PROTOCOL), resolver())
                .prologue(&prologue)?
                .psk(0, &k.psk)?,
        };
        if let Some(e) = ephemeral {
            b = b.fixed_ephemeral_key_for_testing_only(e);
        }
        Ok(if initiator { b.build_initiator()? } else { b.build_responder()? })
    }
}

/// The device's side of a handshake under way.
pub struct Initiator {
    id: ChannelId,
    /// Taken when the channel opens.
    state: Option<snow::HandshakeState>,
    max_payload: usize,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Starts a paired device's handshake: the state, and the hello frame to send. `incarnation`
/// names this process ([`crate::resume`]'s epoch will do); `max_payload` is the largest payload
/// taken from the host.
pub fn initiate(
    keys: &ChannelKeys,
    id: ChannelId,
    incarnation: u64,
    max_payload: usize,
) -> Result<(Initiator, Vec<u8>), ChannelError> {
    start(Keys::Paired(keys), id, incarnation, max_payload, None)
}

/// Starts a pairing device's handshake, as [`initiate`].
pub fn initiate_pairing(
    keys: &PairingKeys,
    id: ChannelId,
    incarnation: u64,
    max_payload: usize,
) -> Result<(Initiator, Vec<u8>), ChannelError> {
    start(Keys::Pairing(keys), id, incarnation, max_payload, None)
}

/// [`initiate`] or [`initiate_pairing`] with a fixed ephemeral key: for known-answer tests
/// only (never in use: it gives up forward secrecy and more).
#[doc(hidden)]
pub fn initiate_with(
    keys: Result<&ChannelKeys, &PairingKeys>,
    id: ChannelId,
    incarnation: u64,
    max_payload: usize,
    ephemeral: &[u8; 32],
) -> Result<(Initiator, Vec<u8>), ChannelError> {
    let keys = keys.map_or_else(Keys::Pairing, Keys::Paired);
    start(keys, id, incarnation, max_payload, Some(ephemeral))
}

fn start(
    keys: Keys<'_>,
    id: ChannelId,
    incarnation: u64,
    max_payload: usize,
    ephemeral: Option<&[u8; 32]>,
) -> Result<(Initiator, Vec<u8>), ChannelError> {
    let mut state = keys.state(true, ephemeral)?;
    let mut message = vec![0; 64 + 8 + TAG];
    let n = state.write_message(&incarnation.to_be_bytes(), &mut message)?;
    message.truncate(n);
    let frame = match keys {
        Keys::Paired(_) => Frame::Hello { id, message: &message },
        Keys::Pairing(k) => Frame::PairHello { id, token: k.token, message: &message },
    };
    Ok((Initiator { id, state: Some(state), max_payload }, frame.encode()))
}

impl Initiator {
    /// The channel this handshake opens.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Reads the host's answer (the message of a [`Frame::Answer`] or [`Frame::PairAnswer`] for
    /// this id, as the handshake was): the channel is open. An answer that does not verify (one
    /// the relay made up) changes nothing: the real one still opens it.
    pub fn finish(&mut self, answer: &[u8]) -> Result<Channel, ChannelError> {
        let state = self.state.as_mut().ok_or(ChannelError::Closed)?;
        let mut payload = [0u8; 64];
        // snow leaves the handshake as it was when a message does not verify.
        if state.read_message(answer, &mut payload)? != 0 {
            return Err(ChannelError::Malformed);
        }
        let state = self.state.take().ok_or(ChannelError::Closed)?;
        Channel::new(self.id, state, self.max_payload)
    }
}

/// The host's side of a paired device's hello: the open channel, the answer frame, and the
/// incarnation the device named.
pub fn respond(
    keys: &ChannelKeys,
    id: ChannelId,
    hello: &[u8],
    max_payload: usize,
) -> Result<(Channel, Vec<u8>, u64), ChannelError> {
    answer(Keys::Paired(keys), id, hello, max_payload, None)
}

/// The host's side of a pairing device's hello, as [`respond`].
pub fn respond_pairing(
    keys: &PairingKeys,
    id: ChannelId,
    hello: &[u8],
    max_payload: usize,
) -> Result<(Channel, Vec<u8>, u64), ChannelError> {
    answer(Keys::Pairing(keys), id, hello, max_payload, None)
}

/// [`respond`] or [`respond_pairing`] with a fixed ephemeral key: for known-answer tests only.
#[doc(hidden)]
pub fn respond_with(
    keys: Result<&ChannelKeys, &PairingKeys>,
    id: ChannelId,
    hello: &[u8],
    max_payload: usize,
    ephemeral: &[u8; 32],
) -> Result<(Channel, Vec<u8>, u64), ChannelError> {
    let keys = keys.map_or_else(Keys::Pairing, Keys::Paired);
    answer(keys, id, hello, max_payload, Some(ephemeral))
}

fn answer(
    keys: Keys<'_>,
    id: ChannelId,
    hello: &[u8],
    max_payload: usize,
    ephemeral: Option<&[u8; 32]>,
) -> Result<(Channel, Vec<u8>, u64), ChannelError> {
    let mut state = keys.state(false, ephemeral)?;
    let mut payload = [0u8; 64];
    let n = state.read_message(hello, &mut payload)?;
    let incarnation: [u8; 8] = payload[..n].try_into().map_err(|_| ChannelError::Malformed)?;
    let mut message = vec![0; 32 + TAG];
    let n = state.write_message(&[], &mut message)?;
    message.truncate(n);
    let frame = match keys {
        Keys::Paired(_) => Frame::Answer { id, message: &message },
        Keys::Pairing(_) => Frame::PairAnswer { id, message: &message },
    };
    let channel = Channel::new(id, state, max_payload)?;
    Ok((channel, frame.encode(), u64::from_be_bytes(incarnation)))
}

/// An open channel: seals payloads into frames and opens frames into payloads.
pub struct Channel {
    id: ChannelId,
    transport: snow::StatelessTransportState,
    handshake_hash: Vec<u8>,
    /// The nonce of the next chunk sealed.
    next_nonce: u64,
    /// The last nonce taken.
    last_opened: Option<u64>,
    /// The chunks of a payload not yet whole, and the nonce the next of them must have.
    partial: Vec<u8>,
    partial_next: Option<u64>,
    max_payload: usize,
    /// A chunk was refused after it decrypted ([`ChannelError::Closed`]).
    closed: bool,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("partial", &self.partial.len())
            .finish_non_exhaustive()
    }
}

/// What a chunk of `len` bytes of plaintext is padded up to: [`MIN_PADDED`] at least, and above
/// that Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
/// Communication with PURBs", PETS 2019): a length of `E = ⌊log2 len⌋` bits keeps its top
/// `⌊log2 E⌋ + 1` bits and rounds up the rest, so padding costs at most 12 % (a 1 KiB message
/// pays 6 %) and a size gives away O(log log) bits; never past [`MAX_PADDED`]. (Powers of two
/// cost up to twice the bytes, and 4–22 % of the relay's messages per second at 1 KiB:
/// BENCHMARKS.md, "End-to-end channel".)
pub fn size_class(len: usize) -> usize {
    if len <= MIN_PADDED {
        return MIN_PADDED;
    }
    let e = len.ilog2();
    let s = e.ilog2() + 1;
    let mask = (1usize << (e - s)) - 1;
    ((len + mask) & !mask).min(MAX_PADDED.max(len))
}

impl Channel {
    fn new(
        id: ChannelId,
        state: snow::HandshakeState,
        max_payload: usize,
    ) -> Result<Self, ChannelError> {
        let handshake_hash = state.get_handshake_hash().to_vec();
        Ok(Self {
            id,
            transport: state.into_stateless_transport_mode()?,
            handshake_hash,
            next_nonce: 0,
            last_opened: None,
            partial: Vec::new(),
            partial_next: None,
            max_payload,
            closed: false,
        })
    }

    /// The channel's id.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// The handshake hash (both sides have the same one).
    pub fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Seals `payload` into one data frame per chunk.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let mut frames = Vec::with_capacity(payload.len() / MAX_CHUNK_DATA + 1);
        let mut chunks = payload.chunks(MAX_CHUNK_DATA).peekable();
        let mut plaintext = Vec::new();
        let mut first = FIRST;
        loop {
            let data = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            plaintext.clear();
            plaintext.push(first | if last { LAST } else { 0 });
            first = 0;
            plaintext
                .extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
            plaintext.extend_from_slice(data);
            plaintext.resize(size_class(plaintext.len()), 0);
            let nonce = self.next_nonce;
            // Nonce u64::MAX is reserved by Noise; a channel never comes near it.
            self.next_nonce = nonce
                .checked_add(1)
                .filter(|&n| n < u64::MAX)
                .ok_or_else(|| ChannelError::Noise("the channel's nonces are used up".into()))?;
            let mut frame = vec![0; DATA_HEADER + plaintext.len() + TAG];
            frame[0] = KIND_DATA;
            frame[1..9].copy_from_slice(&self.id.0);
            frame[9..DATA_HEADER].copy_from_slice(&nonce.to_be_bytes());
            let n = self.transport.write_message(nonce, &plaintext, &mut frame[DATA_HEADER..])?;
            frame.truncate(DATA_HEADER + n);
            frames.push(frame);
            if last {
                return Ok(frames);
            }
        }
    }

    /// Opens a data frame's chunk (the caller found this channel by the frame's id): the
    /// payload, once its last chunk is in. A frame that does not decrypt, or came again,
    /// changes nothing; a chunk that decrypts but is malformed or over the limit closes the
    /// channel ([`ChannelError::Closed`]).
    pub fn open(&mut self, nonce: u64, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        if self.closed {
            return Err(ChannelError::Closed);
        }
        if self.last_opened.is_some_and(|last| nonce <= last) {
            return Err(ChannelError::Replayed);
        }
        let mut plaintext = vec![0; ciphertext.len()];
        let n = self.transport.read_message(nonce, ciphertext, &mut plaintext)?;
        self.last_opened = Some(nonce);
        let chunk = &plaintext[..n];
        let [flags, hi, lo, rest @ ..] = chunk else {
            self.close();
            return Err(ChannelError::Malformed);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if flags & !(LAST | FIRST) != 0
            || len > rest.len()
            || chunk.len() != size_class(CHUNK_HEADER + len)
            || rest[len..].iter().any(|&b| b != 0)
        {
            self.close();
            return Err(ChannelError::Malformed);
        }
        if flags & FIRST != 0 {
            self.partial.clear();
        } else if self.partial_next != Some(nonce) {
            // Its predecessors were lost: so is this payload, which comes again whole.
            self.partial = Vec::new();
            self.partial_next = None;
            return Ok(None);
        }
        if self.partial.len() + len > self.max_payload {
            self.close();
            return Err(ChannelError::TooLarge(self.max_payload));
        }
        self.partial.extend_from_slice(&rest[..len]);
        if flags & LAST != 0 {
            self.partial_next = None;
            Ok(Some(std::mem::take(&mut self.partial)))
        } else {
            self.partial_next = nonce.checked_add(1);
            Ok(None)
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.partial = Vec::new();
        self.partial_next = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use super::*;

    const MAX: usize = 1 << 20;

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

    fn hello_message(frame: &[u8]) -> (ChannelId, &[u8]) {
        match Frame::decode(frame).unwrap() {
            Frame::Hello { id, message } | Frame::PairHello { id, message, .. } => (id, message),
            other => panic!("{other:?}"),
        }
    }

    fn answer_message(frame: &[u8]) -> &[u8] {
        match Frame::decode(frame).unwrap() {
            Frame::Answer { message, .. } | Frame::PairAnswer { message, .. } => message,
            other => panic!("{other:?}"),
        }
    }

    fn open_pair() -> (Channel, Channel) {
        let (host, device) = pair();
        let (mut initiator, hello) = initiate(&device, ChannelId([7; 8]), 42, MAX).unwrap();
        let (id, message) = hello_message(&hello);
        let (at_host, answer, incarnation) = respond(&host, id, message, MAX).unwrap();
        assert_eq!((id, incarnation), (ChannelId([7; 8]), 42));
        let at_device = initiator.finish(answer_message(&answer)).unwrap();
        assert_eq!(at_host.handshake_hash(), at_device.handshake_hash());
        (at_host, at_device)
    }

    /// Opens each frame through its header, as a receiver does.
    fn open(channel: &mut Channel, frame: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        match Frame::decode(frame)? {
            Frame::Data { id, nonce, ciphertext } => {
                assert_eq!(id, channel.id());
                channel.open(nonce, ciphertext)
            }
            _ => Err(ChannelError::Malformed),
        }
    }

    #[test]
    fn payloads_of_every_size_go_both_ways_padded_to_their_class() {
        let (mut host, mut device) = open_pair();
        for len in [0, 1, 252, 253, 5000, MAX_CHUNK_DATA, MAX_CHUNK_DATA + 1, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frames = device.seal(&payload).unwrap();
            assert_eq!(frames.len(), len.div_ceil(MAX_CHUNK_DATA).max(1), "{len}");
            for frame in &frames {
                let padded = frame.len() - DATA_HEADER - TAG;
                assert!((MIN_PADDED..=MAX_PADDED).contains(&padded), "{len}: {}", frame.len());
                assert_eq!(padded, size_class(padded), "{len}: a size padding gives");
            }
            let mut got = None;
            for frame in &frames {
                assert!(got.is_none());
                got = open(&mut host, frame).unwrap();
            }
            assert_eq!(got.unwrap(), payload);
            let back = host.seal(&payload).unwrap();
            let last = back.iter().map(|f| open(&mut device, f).unwrap()).last().unwrap();
            assert_eq!(last.unwrap(), payload);
        }
    }

    #[test]
    fn tampered_replayed_or_misdirected_frames_are_refused() {
        let (mut host, mut device) = open_pair();
        let frame = device.seal(b"run cargo test").unwrap().remove(0);
        for at in DATA_HEADER..frame.len() {
            let mut tampered = frame.clone();
            tampered[at] ^= 1;
            assert!(open(&mut host, &tampered).is_err(), "byte {at}");
        }
        // A nonce changed: it decrypts under another nonce, which fails.
        let mut renonced = frame.clone();
        renonced[16] ^= 1;
        assert!(open(&mut host, &renonced).is_err());
        // Refused frames changed nothing.
        assert_eq!(open(&mut host, &frame).unwrap().unwrap(), b"run cargo test");
        assert_eq!(open(&mut host, &frame), Err(ChannelError::Replayed));
        // A frame of one channel is nothing in another.
        let (mut other_host, _) = open_pair();
        let next = device.seal(b"x").unwrap().remove(0);
        assert!(open(&mut other_host, &next).is_err());
    }

    #[test]
    fn lost_frames_lose_their_payload_only() {
        let (mut host, mut device) = open_pair();
        let big = vec![9; MAX_CHUNK_DATA * 2 + 10];
        let lost = device.seal(&big).unwrap();
        assert_eq!(lost.len(), 3);
        // The first chunk arrives, the second is lost: the third is dropped with the first.
        assert_eq!(open(&mut host, &lost[0]).unwrap(), None);
        assert_eq!(open(&mut host, &lost[2]).unwrap(), None);
        // A small payload lost entirely; then the big one again, sealed anew.
        let _ = device.seal(b"lost").unwrap();
        let again = device.seal(&big).unwrap();
        let got = again.iter().map(|f| open(&mut host, f).unwrap()).last().unwrap();
        assert_eq!(got.unwrap(), big);
        // An older frame after a newer one: refused.
        assert_eq!(open(&mut host, &lost[1]), Err(ChannelError::Replayed));
    }

    #[test]
    fn a_forged_answer_leaves_the_handshake_for_the_real_one() {
        let (host, device) = pair();
        let (mut initiator, hello) = initiate(&device, ChannelId([7; 8]), 1, MAX).unwrap();
        let (id, message) = hello_message(&hello);
        let (mut at_host, answer, _) = respond(&host, id, message, MAX).unwrap();
        assert!(initiator.finish(&[0x24; 48]).is_err());
        let mut at_device = initiator.finish(answer_message(&answer)).unwrap();
        assert!(initiator.finish(answer_message(&answer)).is_err(), "open once");
        let frame = at_device.seal(b"x").unwrap().remove(0);
        assert_eq!(open(&mut at_host, &frame).unwrap().unwrap(), b"x");
    }

    #[test]
    fn a_hello_for_other_keys_is_refused() {
        let (host, device) = pair();
        let (_, stranger) = pair();
        let (_, hello) = initiate(&stranger, ChannelId([1; 8]), 1, MAX).unwrap();
        let (id, message) = hello_message(&hello);
        assert!(respond(&host, id, message, MAX).is_err());
        // Same static keys, but the prologue names another device identity.
        let mut renamed = device;
        renamed.device = crate::SecretKey::from_seed(&[3; 32]).public_key();
        let (_, hello) = initiate(&renamed, ChannelId([1; 8]), 1, MAX).unwrap();
        let (id, message) = hello_message(&hello);
        assert!(respond(&host, id, message, MAX).is_err());
    }

    fn pairing_keys(secret: u8) -> PairingKeys {
        PairingKeys {
            psk: Zeroizing::new(crate::pairing::channel_psk(
                &crate::pairing::PairingSecret::from_bytes([secret; 32]),
            )),
            token: PairingToken([5; 32]),
            host: crate::SecretKey::from_seed(&[1; 32]).public_key(),
            device: crate::SecretKey::from_seed(&[2; 32]).public_key(),
        }
    }

    #[test]
    fn a_pairing_channel_needs_the_links_secret() {
        let keys = pairing_keys(9);
        let (mut initiator, hello) = initiate_pairing(&keys, ChannelId([3; 8]), 77, MAX).unwrap();
        let Frame::PairHello { id, token, message } = Frame::decode(&hello).unwrap() else {
            panic!()
        };
        assert_eq!(token, keys.token);
        // Without the secret, or for another device key, the host cannot read the hello.
        assert!(respond_pairing(&pairing_keys(8), id, message, MAX).is_err());
        let mut other = pairing_keys(9);
        other.device = crate::SecretKey::from_seed(&[4; 32]).public_key();
        assert!(respond_pairing(&other, id, message, MAX).is_err());
        let (mut host, answer, incarnation) = respond_pairing(&keys, id, message, MAX).unwrap();
        assert_eq!(incarnation, 77);
        let mut device = initiator.finish(answer_message(&answer)).unwrap();
        let frame = device.seal(b"hello").unwrap().remove(0);
        assert_eq!(open(&mut host, &frame).unwrap().unwrap(), b"hello");
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_before_it_is_whole() {
        let (host, device) = pair();
        let (mut initiator, hello) = initiate(&device, ChannelId([1; 8]), 1, MAX).unwrap();
        let (id, message) = hello_message(&hello);
        let (mut small, answer, _) = respond(&host, id, message, 100_000).unwrap();
        let mut device = initiator.finish(answer_message(&answer)).unwrap();
        let frames = device.seal(&vec![7; 200_000]).unwrap();
        assert_eq!(open(&mut small, &frames[0]).unwrap(), None);
        assert_eq!(open(&mut small, &frames[1]), Err(ChannelError::TooLarge(100_000)));
        // The rest of that payload is not taken for one of its own; nor is anything after.
        for frame in &frames[2..] {
            assert_eq!(open(&mut small, frame), Err(ChannelError::Closed));
        }
        let next = device.seal(b"after").unwrap().remove(0);
        assert_eq!(open(&mut small, &next), Err(ChannelError::Closed));
    }

    #[test]
    fn frames_decode_as_they_encode_and_malformed_ones_are_named() {
        let id = ChannelId([1, 2, 3, 4, 5, 6, 7, 8]);
        let token = PairingToken([6; 32]);
        for frame in [
            Frame::Hello { id, message: b"m1" },
            Frame::Answer { id, message: b"m2" },
            Frame::Data { id, nonce: 258, ciphertext: b"ct" },
            Frame::Unknown { id: ChannelId::ANY },
            Frame::PairHello { id, token, message: b"p1" },
            Frame::PairAnswer { id, message: b"" },
        ] {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
        for bad in [&[][..], &[KIND_HELLO, 1, 2], &[KIND_DATA, 0, 0, 0, 0, 0, 0, 0, 0, 1], &[0; 20]]
        {
            assert_eq!(Frame::decode(bad), Err(ChannelError::Malformed), "{bad:?}");
        }
        let mut unknown = Frame::Unknown { id }.encode();
        unknown.push(0);
        assert_eq!(Frame::decode(&unknown), Err(ChannelError::Malformed));
        assert_eq!(Frame::decode(&vec![KIND_DATA; MAX_FRAME + 1]), Err(ChannelError::Malformed));
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
    fn the_protocol_names_parse_and_a_public_key_is_its_private_keys() {
        let _ = params(PROTOCOL);
        let _ = params(PAIRING_PROTOCOL);
        let (private, public) = generate_static().unwrap();
        assert_eq!(public_of(&private).unwrap(), public);
        // Padmé's own examples, and the ends.
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(257), 272);
        assert_eq!(size_class(1027), 1088);
        assert_eq!(size_class(9000), 9216);
        assert_eq!(size_class(65000), 65519);
        assert_eq!(size_class(65519), 65519);
        for len in 1..=MAX_PADDED {
            let padded = size_class(len);
            assert!(padded >= len && padded <= MAX_PADDED);
            assert!(len <= MIN_PADDED || padded * 100 <= len * 112, "{len} → {padded}");
            assert_eq!(size_class(padded), padded, "{len}: padding is idempotent");
        }
    }
}
