//! Pairing a new device: an offer opened for a local client (`agent-host pair`, `up`), and the
//! hello of a new key that names it (see the notes of [`crate::link`]).

use std::sync::Arc;
use std::time::Duration;

use protocol::pairing::{self, PairingSecret};
use protocol::{DeviceId, Pairing, PairingLink, PairingToken, PublicKey, Role};
use tokio::sync::{mpsc, oneshot};

use super::manage::{audit_device_change, check_name};
use crate::devices::{Device, role_name};
use crate::host::{Host, ToLink, lock, now_ms, refuse};
use crate::local_api::{ApiResponse, LocalConn, PairAnswer};
use crate::offers::{MAX_OFFER_SECS, Offer, PairEvent};

/// Opens a pairing offer for a local client and sees it through (see the module docs).
pub(crate) async fn pair_local(
    host: &Arc<Host>,
    conn: &mut LocalConn,
    role: Role,
    name: Option<String>,
    expires_secs: u64,
    yes: bool,
) -> anyhow::Result<()> {
    let Some(setup) = &host.config.relay else {
        return conn
            .send(&ApiResponse::Error {
                message: "this host has no relay to pair through: start it with `agent-host up`, \
                          or `agent-host serve --relay HOST:PORT`"
                    .into(),
            })
            .await;
    };
    if let Some(name) = &name {
        check_name(name)?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = PairingSecret::from_bytes(secret);
    let token = pairing::token(&secret);
    let expires_at_ms = now_ms() + expires_secs.clamp(1, MAX_OFFER_SECS) * 1000;
    let link = PairingLink {
        relay: setup.public.clone(),
        host: host.host_id,
        secret: *secret.as_bytes(),
        expires_at_ms,
        cert_sha256: setup.cert_sha256,
    };
    let (events, mut rx) = mpsc::unbounded_channel();
    let opened = {
        let mut offers = lock(&host.offers);
        let room = offers.open.len() < protocol::relay::MAX_OFFERS;
        if room {
            offers.open.insert(token, Offer { secret, role, name, expires_at_ms, yes, events });
        }
        room
    };
    if !opened {
        return conn
            .send(&ApiResponse::Error { message: "too many pairing offers are open".into() })
            .await;
    }
    host.reregister();
    conn.send(&ApiResponse::PairLink { link: link.to_string(), expires_at_ms }).await?;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(PairEvent::Confirm { device, name, role, answer }) => {
                    conn.send(&ApiResponse::PairConfirm {
                        device: device.to_string(),
                        name,
                        fingerprint: device.key().fingerprint().to_string(),
                        role,
                    })
                    .await?;
                    let accept = matches!(conn.next::<PairAnswer>().await, Ok(Some(a)) if a.accept);
                    let _ = answer.send(accept);
                }
                Some(PairEvent::Done(Ok(device))) => {
                    return conn
                        .send(&ApiResponse::Paired {
                            device: device.id.to_string(),
                            name: device.name,
                            role: device.role,
                        })
                        .await;
                }
                Some(PairEvent::Done(Err(reason))) => {
                    return conn.send(&ApiResponse::PairFailed { reason }).await;
                }
                None => return Ok(()),
            },
            // The client hung up before anyone used the offer: withdraw it.
            gone = conn.next::<PairAnswer>() => {
                if matches!(gone, Ok(None) | Err(_)) {
                    if lock(&host.offers).open.remove(&token).is_some() {
                        host.reregister();
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// A hello from a new key: find the offer, check it, ask the person, answer.
pub(crate) async fn pair_device(
    host: Arc<Host>,
    key: PublicKey,
    token: PairingToken,
    name: String,
    proof: protocol::PairingProof,
) {
    let Some(link) = host.link.clone() else { return };
    let id = DeviceId::new(key);
    let reject = |reason: &str| {
        refuse(&host, &id.to_string(), format!("pairing refused: {reason}"));
        let _ = link
            .send(ToLink::Pairing(*key.as_bytes(), Pairing::Rejected { reason: reason.into() }));
    };
    // The first hello that names an offer uses it up, whatever happens next.
    let Some(offer) = lock(&host.offers).open.remove(&token) else {
        return reject("this pairing offer is not open (used, burned, withdrawn or expired)");
    };
    let finish = |result: Result<Device, String>| {
        let _ = offer.events.send(PairEvent::Done(result));
        // The offer's route at the relay closes; a new device's route opens.
        let _ = link.send(ToLink::Register);
    };
    if now_ms() >= offer.expires_at_ms {
        reject("the pairing offer expired");
        return finish(Err("the offer expired".into()));
    }
    if pairing::check(&offer.secret, &host.key.public_key(), &key, &name, &proof).is_err() {
        reject("wrong proof: this pairing link is burned; make a new one");
        return finish(Err(format!(
            "{id} sent a wrong proof (not the secret of this link, or tampered with); the offer is burned"
        )));
    }
    if lock(&host.devices).get(&id).is_some() {
        reject("this device is already paired");
        return finish(Err("the device is already paired".into()));
    }
    let name = offer.name.clone().unwrap_or(name);
    let accept = if offer.yes {
        true
    } else {
        let (answer, asked) = oneshot::channel();
        let question =
            PairEvent::Confirm { device: id, name: name.clone(), role: offer.role, answer };
        let left = offer.expires_at_ms.saturating_sub(now_ms()).max(60_000);
        offer.events.send(question).is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_millis(left), asked).await,
                Ok(Ok(true))
            )
    };
    if !accept {
        reject("the person at the host did not accept");
        return finish(Err("not accepted at the host".into()));
    }
    let device = Device { id, name, role: offer.role, paired_at_ms: now_ms() };
    if let Err(e) = lock(&host.devices).add(device.clone()) {
        reject("the host could not record the pairing");
        return finish(Err(e.to_string()));
    }
    // Its frames are taken from now on (the core counts them from the start).
    if let Err(e) = host.core.set_device(id, Some(device.role), Default::default()).await {
        reject("the host is stopping");
        return finish(Err(e.to_string()));
    }
    audit_device_change(
        &host,
        id,
        format!("paired as {} ({})", role_name(device.role), device.name),
    );
    let _ = link.send(ToLink::Register);
    let _ = link.send(ToLink::Pairing(
        *key.as_bytes(),
        Pairing::Accepted { role: device.role, host_name: host.config.host_name.clone() },
    ));
    finish(Ok(device));
}
