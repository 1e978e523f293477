//! Pairing offers and who is online, in the core: an offer opened at this machine
//! ([`HostCore::open_offer`]), the hello of a new key that names it (from
//! [`HostCore::handle_frame`]), the person's yes or no ([`HostCore::confirm`]), and the end of
//! it ([`HostCore::paired`], [`HostCore::pair_failed`]); offers lapse on the core's timer.
//!
//! The offer is used up by the first hello that names it, whatever happens next: a wrong proof
//! burns it, a late one is refused, and a good one is shown to the person at the machine
//! (unless the offer said yes ahead). The new device is recorded by the driver
//! ([`Effect::Pair`]); only then does the core take its frames and answer it.
//!
//! It must not write the device list or the audit log: those are the driver's.

use protocol::pairing::{self, PairingSecret};
use protocol::{
    DeviceId, ErrorCode, HostEvent, Pairing, PairingProof, PairingToken, PublicKey, Role,
};

use super::{Effect, HostCore};
use crate::devices::Device;

/// The longest a pairing offer may stay open.
pub const MAX_OFFER_SECS: u64 = 60 * 60;

/// The least time a person has to answer a hello (more when the offer has longer to run).
pub const MIN_CONFIRM_MS: u64 = 60_000;

/// What an offer's client is told waits for it at most: an offer is used up by the first hello
/// that names it, so it makes one [`PairEvent::Confirm`] at most, then one [`PairEvent::Done`].
pub const MAX_PAIR_EVENTS: usize = 2;

/// What a pairing offer tells the client that opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairEvent {
    /// A device proved the secret: yes or no ([`HostCore::confirm`])?
    Confirm {
        /// The new device.
        device: DeviceId,
        /// Its name, as it will be kept.
        name: String,
        /// The role it will have.
        role: Role,
    },
    /// Over: paired, or why not.
    Done(Result<Device, String>),
}

/// What an offer opened at this machine grants.
#[derive(Clone)]
pub struct OfferTerms {
    /// The one-time secret, which travels only in the link.
    pub secret: PairingSecret,
    /// The new device's role.
    pub role: Role,
    /// The name to give it instead of its own.
    pub name: Option<String>,
    /// When the offer lapses (Unix ms).
    pub expires_at_ms: u64,
    /// Said yes ahead: no question at the machine.
    pub yes: bool,
}

impl std::fmt::Debug for OfferTerms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferTerms")
            .field("role", &self.role)
            .field("name", &self.name)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("yes", &self.yes)
            .finish_non_exhaustive()
    }
}

/// A hello that proved its offer's secret, waiting for the person's answer.
#[derive(Debug, Clone)]
pub(super) struct Confirming {
    token: PairingToken,
    key: PublicKey,
    device: Device,
    deadline_ms: u64,
}

/// Why an offer was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// As many offers are open as the relay registers.
    #[error("too many pairing offers are open")]
    Full,
}

impl HostCore {
    /// Opens an offer: the relay is told its token, so that a new device can reach the host.
    pub fn open_offer(&mut self, token: PairingToken, terms: OfferTerms) -> Result<(), OfferError> {
        // The tokens of hellos still under way are registered too.
        let held = self.confirming.len() + self.pairing.len();
        if self.offers.len() + held >= protocol::relay::MAX_OFFERS {
            return Err(OfferError::Full);
        }
        self.offers.insert(token, terms);
        self.register();
        Ok(())
    }

    /// Withdraws an offer (its client hung up): unused, it goes; a hello that used it and waits
    /// for the client's yes is refused.
    pub fn close_offer(&mut self, token: PairingToken) {
        if self.offers.remove(&token).is_some() {
            self.register();
        }
        let asked = self.confirming.iter().find(|(_, c)| c.token == token).map(|(d, _)| *d);
        if let Some(device) = asked {
            self.confirm(token, device, false);
        }
    }

    /// The person's answer, through the client of offer `token`, about a device that proved
    /// its secret.
    pub fn confirm(&mut self, token: PairingToken, device: DeviceId, accept: bool) {
        if self.confirming.get(&device).is_none_or(|c| c.token != token) {
            return;
        }
        let Some(c) = self.confirming.remove(&device) else { return };
        if accept {
            self.pair(c.token, c.key, c.device);
        } else {
            self.reject_hello(
                c.key,
                c.token,
                "the person at the host did not accept",
                "not accepted at the host".into(),
            );
        }
    }

    /// The driver recorded the new device: its frames are taken from now on, it is told, and so
    /// is the client of its offer.
    pub fn paired(&mut self, token: PairingToken, key: PublicKey, device: Device) {
        if self.pairing.remove(&device.id) != Some(token) {
            return;
        }
        self.set_device(device.id, Some(device.role), protocol::ReplayState::default());
        let answer = Pairing::Accepted {
            role: device.role,
            host_name: self.host_name.clone(),
            channel_key: self.channel_key,
        };
        self.effects.push_back(Effect::SendPairing { key, answer });
        self.effects.push_back(Effect::OfferEvent { token, event: PairEvent::Done(Ok(device)) });
    }

    /// The driver could not record the new device.
    pub fn pair_failed(&mut self, token: PairingToken, key: PublicKey, why: String) {
        if self.pairing.remove(&DeviceId::new(key)) != Some(token) {
            return;
        }
        self.reject_hello(key, token, "the host could not record the pairing", why);
    }

    /// A hello accepted: the driver records the device; its offer's route stays open meanwhile.
    fn pair(&mut self, token: PairingToken, key: PublicKey, device: Device) {
        self.pairing.insert(device.id, token);
        self.effects.push_back(Effect::Pair { token, key, device });
    }

    /// Which devices are online now.
    pub fn online(&self) -> Vec<DeviceId> {
        self.online.iter().copied().collect()
    }

    /// The relay says a device came online or went: one that comes sees what is open.
    pub fn handle_presence(&mut self, device: DeviceId, online: bool) {
        if online {
            if self.devices.contains_key(&device) {
                self.online.insert(device);
                self.sync(device, None);
            }
        } else {
            self.online.remove(&device);
        }
    }

    /// A new key's hello, its signature verified (see the module notes).
    pub(super) fn hello(
        &mut self,
        now: u64,
        key: PublicKey,
        token: PairingToken,
        name: String,
        proof: PairingProof,
        channel_key: Option<protocol::ChannelKey>,
    ) {
        let id = DeviceId::new(key);
        // The first hello that names an offer uses it up, whatever happens next.
        let Some(offer) = self.offers.remove(&token) else {
            let reason = "this pairing offer is not open (used, burned, withdrawn or expired)";
            return self.reject(key, reason);
        };
        if now >= offer.expires_at_ms {
            return self.reject_hello(
                key,
                token,
                "the pairing offer expired",
                "the offer expired".into(),
            );
        }
        if pairing::check(&offer.secret, &self.me, &key, &name, &proof).is_err() {
            let why = format!(
                "{id} sent a wrong proof (not the secret of this link, or tampered with); the offer is burned"
            );
            return self.reject_hello(
                key,
                token,
                "wrong proof: this pairing link is burned; make a new one",
                why,
            );
        }
        if self.confirming.contains_key(&id) || self.pairing.contains_key(&id) {
            return self.reject_hello(
                key,
                token,
                "a pairing of this device is already under way",
                "the device is being paired through another offer".into(),
            );
        }
        if name.chars().any(char::is_control) {
            let reason = "a device name is text without control characters";
            return self.reject_hello(
                key,
                token,
                reason,
                format!("{id} gave a name with control characters"),
            );
        }
        // Every message after pairing travels in the end-to-end channel: a device without a
        // key for it could never be reached, so it is not paired (nor the offer spent on it
        // unnoticed: the offer's client is told).
        let Some(channel_key) = channel_key else {
            let reason = "the device has no end-to-end channel key (upgrade it, then pair again)";
            return self.reject_hello(key, token, reason, format!("{id}: {reason}"));
        };
        if !protocol::channel::usable_public(&channel_key.0) {
            let reason = "the device's channel key is not a usable X25519 key";
            return self.reject_hello(key, token, reason, format!("{id} sent {reason}"));
        }
        let channel_key = Some(channel_key);
        let device = Device {
            id,
            name: offer.name.unwrap_or(name),
            role: offer.role,
            paired_at_ms: now,
            channel_key,
            push: None,
        };
        if offer.yes {
            return self.pair(token, key, device);
        }
        let question =
            PairEvent::Confirm { device: id, name: device.name.clone(), role: device.role };
        self.effects.push_back(Effect::OfferEvent { token, event: question });
        let deadline_ms =
            now.saturating_add(offer.expires_at_ms.saturating_sub(now).max(MIN_CONFIRM_MS));
        // The offer's route at the relay stays open until the device has its answer.
        self.confirming.insert(id, Confirming { token, key, device, deadline_ms });
    }

    /// Drops lapsed offers and unanswered questions.
    pub(super) fn expire_pairing(&mut self, now: u64) {
        let lapsed: Vec<PairingToken> =
            self.offers.iter().filter(|(_, o)| now >= o.expires_at_ms).map(|(t, _)| *t).collect();
        for token in &lapsed {
            self.offers.remove(token);
            let event = PairEvent::Done(Err("the offer expired unused".into()));
            self.effects.push_back(Effect::OfferEvent { token: *token, event });
        }
        if !lapsed.is_empty() {
            self.register();
        }
        let unanswered: Vec<(DeviceId, PairingToken)> = self
            .confirming
            .iter()
            .filter(|(_, c)| now >= c.deadline_ms)
            .map(|(d, c)| (*d, c.token))
            .collect();
        for (device, token) in unanswered {
            self.confirm(token, device, false);
        }
    }

    /// When the next offer or question lapses.
    pub(super) fn next_pairing_timeout(&self) -> Option<u64> {
        let offers = self.offers.values().map(|o| o.expires_at_ms);
        offers.chain(self.confirming.values().map(|c| c.deadline_ms)).min()
    }

    /// Refuses a hello, and tells the new key why.
    fn reject(&mut self, key: PublicKey, reason: &str) {
        let claimed = DeviceId::new(key).to_string();
        self.effects
            .push_back(Effect::Refuse { claimed, reason: format!("pairing refused: {reason}") });
        let answer = Pairing::Rejected { reason: reason.into() };
        self.effects.push_back(Effect::SendPairing { key, answer });
    }

    /// Refuses a hello that used up an offer, and tells the offer's client.
    fn reject_hello(&mut self, key: PublicKey, token: PairingToken, reason: &str, why: String) {
        self.reject(key, reason);
        self.effects.push_back(Effect::OfferEvent { token, event: PairEvent::Done(Err(why)) });
        self.register();
    }

    /// Tells the relay the devices and offers to route (after a change of either): the open
    /// offers, and those whose hello is still under way (asked of the person, or being
    /// recorded), so that the new key hears its answer.
    pub(super) fn register(&mut self) {
        let devices = self.devices.keys().map(|d| protocol::RelayKey::of(&d.key())).collect();
        let held = self.confirming.values().map(|c| c.token).chain(self.pairing.values().copied());
        let offers = self.offers.keys().copied().chain(held).collect();
        // Only an open offer takes a new pairing channel.
        let psks = self
            .offers
            .iter()
            .map(|(token, o)| (*token, zeroize::Zeroizing::new(pairing::channel_psk(&o.secret))))
            .collect();
        self.effects.push_back(Effect::Register { devices, offers, psks });
    }

    /// A device revoked at this machine is told why it hears nothing more, while its route is
    /// still open (the registration that closes it follows).
    pub(super) fn revoked(&mut self, device: DeviceId) {
        self.online.remove(&device);
        self.forget_delivery(device);
        let event = HostEvent::Error {
            request: None,
            code: ErrorCode::Revoked,
            message: "this device was revoked at the host; pair it again to use it".into(),
        };
        self.effects.push_back(Effect::Send { device, event });
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Message, SealContext, SecretKey};

    use super::*;

    const NOW: u64 = 1_000_000;

    fn host() -> (HostCore, SecretKey) {
        let key = SecretKey::from_seed(&[1; 32]);
        (HostCore::new(key.public_key(), 10_000, false).named("box"), key)
    }

    fn effects(core: &mut HostCore) -> Vec<Effect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    fn offer(core: &mut HostCore, seed: u8, yes: bool) -> (PairingSecret, PairingToken) {
        let secret = PairingSecret::from_bytes([seed; 32]);
        let token = pairing::token(&secret);
        let terms = OfferTerms {
            secret: secret.clone(),
            role: Role::Approver,
            name: None,
            expires_at_ms: NOW + 5_000,
            yes,
        };
        core.open_offer(token, terms).unwrap();
        let got = effects(core);
        assert!(
            matches!(&got[..], [Effect::Register { offers, .. }] if offers.contains(&token)),
            "{got:?}"
        );
        (secret, token)
    }

    /// A new device's hello, proving `secret` (or not) for `name`.
    fn hello(
        core: &mut HostCore,
        host: &PublicKey,
        device: &SecretKey,
        counter: u64,
        token: PairingToken,
        secret: &PairingSecret,
    ) {
        hello_with_channel_key(core, host, device, counter, token, secret, [0x42; 32]);
    }

    fn hello_with_channel_key(
        core: &mut HostCore,
        host: &PublicKey,
        device: &SecretKey,
        counter: u64,
        token: PairingToken,
        secret: &PairingSecret,
        channel_key: impl Into<Option<[u8; 32]>>,
    ) {
        let proof = pairing::prove(secret, host, &device.public_key(), "phone");
        let message = Message::Pairing(Pairing::Hello {
            token,
            name: "phone".into(),
            proof,
            channel_key: channel_key.into().map(protocol::ChannelKey),
        });
        let ctx = SealContext {
            recipient: host,
            counter,
            issued_at_ms: NOW,
            expires_at_ms: NOW + 60_000,
        };
        let frame = protocol::seal(device, &ctx, &message).unwrap();
        core.handle_frame(NOW, protocol::RelayKey::of(&device.public_key()), &frame);
    }

    fn done(got: &[Effect]) -> Option<&Result<Device, String>> {
        got.iter().find_map(|e| match e {
            Effect::OfferEvent { event: PairEvent::Done(result), .. } => Some(result),
            _ => None,
        })
    }

    fn rejected(got: &[Effect]) -> bool {
        got.iter()
            .any(|e| matches!(e, Effect::SendPairing { answer: Pairing::Rejected { .. }, .. }))
            && got.iter().any(|e| matches!(e, Effect::Refuse { .. }))
    }

    /// A channel key of small order would make every channel with the device all zeros, and a
    /// device without one could never be reached: the hello is refused, and the offer spent.
    #[test]
    fn a_hello_without_a_usable_channel_key_pairs_nothing() {
        let (mut core, host) = host();
        let me = host.public_key();
        let (secret, token) = offer(&mut core, 8, true);
        hello_with_channel_key(
            &mut core,
            &me,
            &SecretKey::from_seed(&[4; 32]),
            1,
            token,
            &secret,
            None,
        );
        let got = effects(&mut core);
        assert!(rejected(&got), "{got:?}");
        assert!(
            matches!(done(&got), Some(Err(why)) if why.contains("no end-to-end channel key")),
            "{got:?}"
        );
        let (secret, token) = offer(&mut core, 9, true);
        let phone = SecretKey::from_seed(&[2; 32]);
        hello_with_channel_key(&mut core, &me, &phone, 1, token, &secret, [0; 32]);
        let got = effects(&mut core);
        assert!(rejected(&got), "{got:?}");
        assert!(matches!(done(&got), Some(Err(why)) if why.contains("channel key")), "{got:?}");
        // The offer is spent: a good hello on it now pairs nothing.
        hello(&mut core, &me, &SecretKey::from_seed(&[3; 32]), 1, token, &secret);
        let got = effects(&mut core);
        assert!(rejected(&got) && !got.iter().any(|e| matches!(e, Effect::Pair { .. })), "{got:?}");
    }

    #[test]
    fn a_good_hello_pairs_once_recorded_and_its_frames_count_from_then() {
        let (mut core, host) = host();
        let me = host.public_key();
        let (secret, token) = offer(&mut core, 9, true);
        let phone = SecretKey::from_seed(&[2; 32]);
        hello(&mut core, &me, &phone, 1, token, &secret);
        let got = effects(&mut core);
        let [Effect::Pair { device, .. }] = &got[..] else { panic!("{got:?}") };
        assert_eq!((device.role, device.name.as_str()), (Role::Approver, "phone"));
        // Not yet recorded: its frames are not taken.
        let sync = Message::Request(protocol::Request::Sync { id: protocol::RequestId([1; 16]) });
        let ctx =
            SealContext { recipient: &me, counter: 2, issued_at_ms: NOW, expires_at_ms: NOW + 1 };
        let frame = protocol::seal(&phone, &ctx, &sync).unwrap();
        core.handle_frame(NOW, protocol::RelayKey::of(&phone.public_key()), &frame);
        assert!(matches!(&effects(&mut core)[..], [Effect::Refuse { .. }]));
        // Recorded: the relay routes it, it is told, then the client is.
        core.paired(token, phone.public_key(), device.clone());
        let got = effects(&mut core);
        assert!(
            matches!(&got[0], Effect::Register { devices, offers, .. } if devices.len() == 1 && offers.is_empty())
        );
        assert!(
            matches!(&got[1], Effect::SendPairing { answer: Pairing::Accepted { host_name, .. }, .. } if host_name == "box")
        );
        assert!(matches!(done(&got), Some(Ok(d)) if d == device));
        core.handle_frame(NOW, protocol::RelayKey::of(&phone.public_key()), &frame);
        assert!(matches!(&effects(&mut core)[..], [Effect::Persist { .. }]));
    }

    #[test]
    fn the_first_hello_uses_the_offer_up_and_a_wrong_proof_burns_it() {
        let (mut core, host) = host();
        let me = host.public_key();
        let (secret, token) = offer(&mut core, 9, true);
        let thief = SecretKey::from_seed(&[3; 32]);
        hello(&mut core, &me, &thief, 1, token, &PairingSecret::from_bytes([8; 32]));
        let got = effects(&mut core);
        assert!(rejected(&got), "{got:?}");
        assert!(matches!(done(&got), Some(Err(why)) if why.contains("wrong proof")));
        // The right secret, after: the offer is gone.
        let phone = SecretKey::from_seed(&[2; 32]);
        hello(&mut core, &me, &phone, 1, token, &secret);
        let got = effects(&mut core);
        assert!(rejected(&got), "{got:?}");
        assert_eq!(done(&got), None, "the client heard the end already");
    }

    #[test]
    fn offers_and_questions_lapse_on_the_timer() {
        let (mut core, host) = host();
        let me = host.public_key();
        let (_, token) = offer(&mut core, 9, true);
        assert_eq!(core.poll_timeout(), Some(NOW + 5_000));
        core.handle_timeout(NOW + 4_999);
        assert!(effects(&mut core).is_empty());
        core.handle_timeout(NOW + 5_000);
        let got = effects(&mut core);
        assert!(matches!(done(&got), Some(Err(why)) if why.contains("expired")), "{got:?}");
        assert!(matches!(got.last(), Some(Effect::Register { offers, .. }) if offers.is_empty()));
        assert_eq!(core.poll_timeout(), None);
        let _ = token;
        // Asked at the machine: nobody answers, and it is a no.
        let (secret, token) = offer(&mut core, 10, false);
        let phone = SecretKey::from_seed(&[2; 32]);
        hello(&mut core, &me, &phone, 1, token, &secret);
        let got = effects(&mut core);
        assert!(matches!(&got[0], Effect::OfferEvent { event: PairEvent::Confirm { .. }, .. }));
        assert_eq!(core.poll_timeout(), Some(NOW + MIN_CONFIRM_MS));
        core.handle_timeout(NOW + MIN_CONFIRM_MS);
        let got = effects(&mut core);
        assert!(rejected(&got), "{got:?}");
        assert!(matches!(done(&got), Some(Err(why)) if why.contains("not accepted")));
        // An answer after that changes nothing.
        core.confirm(token, DeviceId::new(phone.public_key()), true);
        assert!(effects(&mut core).is_empty());
    }

    #[test]
    fn a_yes_at_the_machine_pairs_and_a_no_refuses() {
        let (mut core, host) = host();
        let me = host.public_key();
        for (seed, accept) in [(10, false), (11, true)] {
            let (secret, token) = offer(&mut core, seed, false);
            let phone = SecretKey::from_seed(&[seed; 32]);
            hello(&mut core, &me, &phone, 1, token, &secret);
            let got = effects(&mut core);
            let [Effect::OfferEvent { event: PairEvent::Confirm { device, .. }, .. }] = &got[..]
            else {
                panic!("{got:?}")
            };
            core.confirm(token, *device, accept);
            let got = effects(&mut core);
            assert_eq!(matches!(&got[..], [Effect::Pair { .. }]), accept, "{got:?}");
            assert_eq!(rejected(&got), !accept, "{got:?}");
        }
    }

    /// While a hello waits for the person (or is being recorded), its offer's route stays
    /// registered, so that the new key hears its answer whatever else changes meanwhile; and
    /// it counts towards the offers the relay registers.
    #[test]
    fn a_hello_under_way_keeps_its_route_and_its_place() {
        let (mut core, host) = host();
        let me = host.public_key();
        let (secret, token) = offer(&mut core, 10, false);
        let phone = SecretKey::from_seed(&[2; 32]);
        hello(&mut core, &me, &phone, 1, token, &secret);
        effects(&mut core);
        // Another offer opens: both tokens are registered.
        let (_, other) = offer(&mut core, 11, true);
        core.close_offer(other);
        let got = effects(&mut core);
        assert!(
            matches!(&got[..], [Effect::Register { offers, .. }] if *offers == vec![token]),
            "{got:?}"
        );
        // A late answer for another offer's client changes nothing; this one's does.
        let device = DeviceId::new(phone.public_key());
        core.confirm(other, device, true);
        assert!(effects(&mut core).is_empty());
        core.confirm(token, device, true);
        let got = effects(&mut core);
        let [Effect::Pair { device: d, .. }] = &got[..] else { panic!("{got:?}") };
        // Being recorded: still registered, still counted.
        for n in 0..protocol::relay::MAX_OFFERS - 1 {
            offer(&mut core, 20 + n as u8, true);
        }
        let full = PairingSecret::from_bytes([99; 32]);
        let terms = OfferTerms {
            secret: full.clone(),
            role: Role::Viewer,
            name: None,
            expires_at_ms: NOW + 1,
            yes: true,
        };
        assert_eq!(core.open_offer(pairing::token(&full), terms), Err(OfferError::Full));
        core.paired(token, phone.public_key(), d.clone());
        let got = effects(&mut core);
        assert!(
            matches!(&got[0], Effect::Register { devices, offers, .. } if devices.len() == 1 && !offers.contains(&token)),
            "{got:?}"
        );
    }

    /// The client that opened an offer hangs up while its question waits: the hello is
    /// refused at once (and the device may pair again through a new offer).
    #[test]
    fn a_question_whose_client_went_is_a_no() {
        let (mut core, host) = host();
        let me = host.public_key();
        let (secret, token) = offer(&mut core, 10, false);
        let phone = SecretKey::from_seed(&[2; 32]);
        hello(&mut core, &me, &phone, 1, token, &secret);
        effects(&mut core);
        core.close_offer(token);
        let got = effects(&mut core);
        assert!(rejected(&got), "{got:?}");
        // The answer reaches the key before the route closes.
        let sent = got.iter().position(|e| matches!(e, Effect::SendPairing { .. })).unwrap();
        let closed = got.iter().position(|e| matches!(e, Effect::Register { .. })).unwrap();
        assert!(sent < closed, "{got:?}");
        let (secret, token) = offer(&mut core, 11, true);
        hello(&mut core, &me, &phone, 2, token, &secret);
        assert!(matches!(&effects(&mut core)[..], [Effect::Pair { .. }]));
    }
}
