//! Pairing a new device, as the local client (`agent-host pair`, `up`) and the disk see it: an
//! offer opened through the core, the person's yes or no, and the new device recorded. The
//! rules (the offer used up by the first hello, its expiry, the proof) are the core's
//! ([`crate::host_core`]).

use std::sync::Arc;

use protocol::pairing::{self, PairingSecret};
use protocol::{PairingLink, PairingToken, PublicKey, Role};
use tokio::sync::mpsc;

use super::manage::{audit_device_change, check_name};
use crate::devices::{Device, role_name};
use crate::host::{Host, lock, now_ms};
use crate::host_core::{Command, MAX_OFFER_SECS, OfferTerms, PairEvent};
use crate::local_api::{ApiResponse, LocalApiError, LocalConn, PairAnswer};

/// Opens a pairing offer for a local client and sees it through (see the module docs).
pub(crate) async fn pair_local(
    host: &Arc<Host>,
    conn: &mut LocalConn,
    role: Role,
    name: Option<String>,
    expires_secs: u64,
    yes: bool,
) -> Result<(), LocalApiError> {
    let Some(setup) = &host.config.relay else {
        return conn
            .send(&ApiResponse::Error {
                message: "this host has no relay to pair through: start it with `agent-host up`, \
                          or `agent-host serve --relay HOST:PORT`"
                    .into(),
            })
            .await;
    };
    if let Some(name) = &name
        && let Err(e) = check_name(name)
    {
        return conn.send(&ApiResponse::Error { message: e.to_string() }).await;
    }
    let mut secret = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut secret) {
        return conn.send(&ApiResponse::Error { message: format!("no randomness: {e}") }).await;
    }
    let secret = PairingSecret::from_bytes(secret);
    let token = pairing::token(&secret);
    let expires_at_ms = now_ms() + expires_secs.clamp(1, MAX_OFFER_SECS) * 1000;
    let link = PairingLink {
        relay: setup.public.clone(),
        page: setup.page.clone(),
        host: host.host_id,
        secret: *secret.as_bytes(),
        expires_at_ms,
        cert_sha256: setup.cert_sha256,
    };
    let (events, mut rx) = mpsc::channel(crate::host_core::MAX_PAIR_EVENTS);
    let terms = OfferTerms { secret, role, name, expires_at_ms, yes };
    match host.core.open_offer(token, terms, events).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return conn.send(&ApiResponse::Error { message: e.to_string() }).await,
        Err(e) => return conn.send(&ApiResponse::Error { message: e.to_string() }).await,
    }
    conn.send(&ApiResponse::PairLink { link: link.to_string(), expires_at_ms }).await?;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(PairEvent::Confirm { device, name, role }) => {
                    let question = ApiResponse::PairConfirm {
                        device: device.to_string(),
                        name,
                        fingerprint: device.key().fingerprint().to_string(),
                        role,
                    };
                    // Not asked (the client went): a no.
                    let accept = conn.send(&question).await.is_ok()
                        && matches!(conn.next::<PairAnswer>().await, Ok(Some(a)) if a.accept);
                    if host.core.send(Command::Confirm { token, device, accept }).await.is_err() {
                        return Ok(()); // the host is stopping
                    }
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
                    let _ = host.core.send(Command::CloseOffer { token }).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Records a device that the core paired ([`crate::host_core::Effect::Pair`]): the device
/// list, then the audit log (durably), then the core, which takes its frames from then on and
/// answers it.
pub(crate) async fn record_pairing(
    host: Arc<Host>,
    token: PairingToken,
    key: PublicKey,
    device: Device,
) {
    let _one_at_a_time = host.device_changes.lock().await;
    let added = lock(&host.devices).add(device.clone());
    let device = match added {
        Ok(()) => {
            let change = format!("paired as {} ({})", role_name(device.role), device.name);
            audit_device_change(&host, device.id, change);
            Ok(Box::new(device))
        }
        Err(e) => Err(e.to_string()),
    };
    let _ = host.core.send(Command::Paired { token, key, device }).await;
}
