//! A device's conversation with its host through the relay: every message it sends is sealed
//! with the device key and a fresh counter; every event it accepts is verified against the host
//! key learnt at pairing, addressed to this device, unexpired, and newer than any counter
//! accepted before (by this or an earlier command of the same profile). Anything else is
//! dropped, and counted.

use std::time::Instant;

use protocol::{
    HostEvent, Message, PublicKey, ReplayState, ReplayWindow, SealContext, Sealed, SecretKey,
    VerifyContext,
};
/// What the end-to-end channel is made with ([`Link::channel`]).
pub use relay_client::ChannelSetup;
use relay_client::{Client, ClientConfig, Inbound};

use crate::profile::{CounterBlocks, Profile, ProfileError};

/// Why a session could not be opened, or a message not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The profile (its key, pairing or counters).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The system's trusted certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] relay_client::LinkError),
    /// The pairing's certificate pin is not one.
    #[error("the pairing's certificate pin: {0}")]
    Pin(#[from] protocol::relay::RelayAuthError),
    /// The message could not be sealed (over a limit, or never valid).
    #[error(transparent)]
    Seal(#[from] protocol::SealError),
    /// The link to the relay stopped, or has too much queued to take more.
    #[error(transparent)]
    Link(#[from] relay_client::SendError),
    /// The end-to-end channel's keys are not usable.
    #[error("the end-to-end channel: {0}")]
    Channel(#[from] relay_client::SetupError),
    /// The profile was paired before the end-to-end channel: it has no channel keys.
    #[error(
        "this profile was paired before the end-to-end channel and has no channel keys: pair it \
         again (`remote pair LINK --force`)"
    )]
    NoChannel,
}

/// How long a message the device sends stays valid.
const LIFETIME_MS: u64 = 2 * 60 * 1000;

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why no answer came.
#[derive(Debug)]
pub enum Silence {
    /// Nothing valid arrived in time.
    Timeout {
        /// Whether the relay said the host is offline.
        host_offline: bool,
    },
    /// The relay has no route to the host for this device: not registered (revoked?).
    NoRoute,
    /// The link stopped.
    Stopped,
}

impl std::error::Error for Silence {}

impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout { host_offline: true } => {
                f.write_str("no answer: the relay says the host is offline")
            }
            Self::Timeout { host_offline: false } => f.write_str("no answer from the host in time"),
            Self::NoRoute => f.write_str(
                "the relay will not route to the host for this device: it is not paired there \
                 (revoked?)",
            ),
            Self::Stopped => f.write_str("the link to the relay stopped"),
        }
    }
}

/// Where to connect and whom to trust.
pub struct Link {
    /// The relay, `host:port`.
    pub relay: String,
    /// Its certificate's SHA-256, pinned; `None` trusts the system's authorities.
    pub cert_sha256: Option<[u8; 32]>,
    /// The host.
    pub host: PublicKey,
    /// For pairing: the host key and the offer token to knock with.
    pub knock: Option<(protocol::RelayKey, protocol::PairingToken)>,
    /// The end-to-end channel's keys.
    pub channel: ChannelSetup,
}

/// A connected device.
pub struct Session {
    client: Client,
    key: SecretKey,
    host: PublicKey,
    profile: Option<Profile>,
    /// Counters towards the host.
    counters: CounterBlocks,
    /// The highest counter accepted from the host when the session started.
    received_at_start: u64,
    window: ReplayWindow,
    host_offline: bool,
    /// Frames dropped because they did not verify.
    pub dropped: u64,
}

/// The name the relay's certificate is for: its host's (the first node's, for several).
fn server_name(relay: &str) -> String {
    let first = protocol::link::relay_addresses(relay).next().unwrap_or(relay);
    let host = first.rsplit_once(':').map_or(first, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

impl Session {
    /// Connects as `key`. With a profile, counters come from and go to it; without one (while
    /// pairing) they start afresh.
    pub fn start(
        link: Link,
        key: SecretKey,
        profile: Option<Profile>,
        received: u64,
    ) -> Result<Self, SessionError> {
        let tls = match link.cert_sha256 {
            Some(pin) => relay_client::pinned_config(pin),
            None => relay_client::system_roots_config()?,
        };
        let mut config = ClientConfig::new(
            link.relay.clone(),
            server_name(&link.relay),
            tls,
            SecretKey::from_seed(&key.to_seed()),
            protocol::relay::Side::Device,
            link.channel,
        );
        config.knock = link.knock;
        // Everything up to the highest counter accepted before counts as seen.
        let window = ReplayWindow::restore(ReplayState {
            highest: received,
            seen: if received == 0 { 0 } else { u64::MAX },
        });
        Ok(Self {
            client: Client::start(config)?,
            key,
            host: link.host,
            counters: CounterBlocks::new(profile.clone()),
            profile,
            received_at_start: received,
            window,
            host_offline: false,
            dropped: 0,
        })
    }

    /// Connects as a paired profile, to the host and through the relay it was paired with.
    pub fn open(profile: &Profile) -> Result<(crate::profile::Pairing, Self), SessionError> {
        let pairing = profile.pairing()?;
        let key = profile.key()?;
        let cert_sha256 = match &pairing.cert_sha256 {
            Some(hex) => Some(protocol::relay::hex32(hex, "certificate")?),
            None => None,
        };
        let received = profile.update_counters(|c| c.received)?;
        let (Some(host_static), Ok(local_static)) =
            (pairing.host_channel_key, profile.channel_key())
        else {
            return Err(SessionError::NoChannel);
        };
        let host = pairing.host.key();
        let link = Link {
            relay: pairing.relay.clone(),
            cert_sha256,
            host,
            knock: None,
            channel: ChannelSetup::Device {
                local_static,
                host: protocol::RelayKey::of(&host),
                host_static: host_static.0,
            },
        };
        let session = Self::start(link, key, Some(profile.clone()), received)?;
        Ok((pairing, session))
    }

    /// Seals and queues a message to the host; returns the frame as sealed.
    pub fn send(&mut self, message: &Message) -> Result<Vec<u8>, SessionError> {
        let counter = self.counters.take()?;
        let now = now_ms();
        let ctx = SealContext {
            recipient: &self.host,
            counter,
            issued_at_ms: now,
            expires_at_ms: now + LIFETIME_MS,
        };
        let frame = protocol::seal(&self.key, &ctx, message)?;
        let host = protocol::RelayKey::of(&self.host);
        self.client.send(host, frame.clone())?;
        self.counters.reserve_ahead();
        Ok(frame)
    }

    /// Queues a frame sealed before, as it is (what a device that lost track of what it sent
    /// might do: the host takes each frame once).
    pub fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), SessionError> {
        self.client.send(protocol::RelayKey::of(&self.host), frame)?;
        Ok(())
    }

    /// The next verified message from the host, waiting until `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Result<Message, Silence> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let inbound = match tokio::time::timeout(left, self.client.next()).await {
                Err(_) => return Err(Silence::Timeout { host_offline: self.host_offline }),
                Ok(None) => return Err(Silence::Stopped),
                Ok(Some(i)) => i,
            };
            match inbound {
                Inbound::Message { from, bytes } => {
                    if from != protocol::RelayKey::of(&self.host) {
                        self.dropped += 1;
                        continue;
                    }
                    if let Some(message) = self.verify(&bytes) {
                        return Ok(message);
                    }
                }
                Inbound::Undeliverable { offline: false, .. } => return Err(Silence::NoRoute),
                Inbound::Undeliverable { offline: true, .. } => self.host_offline = true,
                Inbound::Refused(reason) => {
                    eprintln!("remote: the relay refused: {reason}");
                }
                // Tampered or replayed on the way: dropped, and counted.
                Inbound::ChannelRefused { .. } => self.dropped += 1,
                Inbound::Presence { .. } | Inbound::Connected => {}
            }
        }
    }

    /// The next host event, waiting until `deadline`.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<HostEvent, Silence> {
        loop {
            if let Message::Event(event) = self.next(deadline).await? {
                return Ok(event);
            }
        }
    }

    /// This device's key.
    pub fn key(&self) -> PublicKey {
        self.key.public_key()
    }

    fn verify(&mut self, frame: &[u8]) -> Option<Message> {
        let me = self.key.public_key();
        let sealed = Sealed::decode(frame).ok()?;
        let verified =
            sealed.verify(&self.host, &VerifyContext::new(&me, now_ms()), &mut self.window);
        let Ok(verified) = verified else {
            self.dropped += 1;
            return None;
        };
        Some(verified.into_parts().1)
    }
}

impl Drop for Session {
    /// Records the highest counter accepted, so later commands of this profile refuse it and
    /// anything older. (Were it lost in a crash, a later command could be shown an old event
    /// again: events carry request ids it would not be waiting for, and the host refuses any
    /// answer to what is no longer pending.)
    fn drop(&mut self) {
        let highest = self.window.export().highest;
        if let Some(profile) = &self.profile
            && highest > self.received_at_start
        {
            let _ = profile.update_counters(|c| c.received = c.received.max(highest));
        }
    }
}
