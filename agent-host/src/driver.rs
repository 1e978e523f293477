//! The core's driver: the one task that owns the host's decision state ([`HostCore`]) and
//! carries out what it says, in the order it says it: audit records and refusals, replay
//! windows to disk (then the message they admitted back to the core), events to the devices
//! and registrations at the relay, a device's request down the one path of [`crate::actions`],
//! a newly paired device to the device list (then back to the core), news for the client of a
//! pairing offer, waking the requesters.
//!
//! It decides only what a failed write means: a decision whose record could not be written
//! takes no effect, and a message whose counter could not be written is refused.
//!
//! It must not decide anything else: every rule is the core's.

use std::sync::Arc;

use protocol::{Action, DeviceId, HostEvent, RequestId, Verdict};

use crate::approvals::Requester;
use crate::audit::Event;
use crate::host::{Host, ToLink, lock, now_ms, pending_event, refuse};
use crate::host_core::{Effect, HostCore, PairEvent};

/// A device's request, through the one path every action takes; its refusal, now or once a
/// person decided, goes back through the core to the device ([`HostCore::handle_done`]).
async fn submit(host: Arc<Host>, device: DeviceId, id: RequestId, action: Action) {
    let (first, later) =
        crate::actions::submit(host.clone(), Requester::Device(device), id, action).await;
    if let Some(event) = first.error_event() {
        let _ = host.core.done(Some(device), event).await;
    }
    if let Some(later) = later
        && let Ok(last) = later.await
        && let Some(event) = last.error_event()
    {
        let _ = host.core.done(Some(device), event).await;
    }
}

/// Checks and keeps (or clears) a device's push subscription: what changed, or why not.
fn set_push(
    host: &Host,
    device: DeviceId,
    subscription: Option<protocol::PushSubscription>,
) -> Result<crate::host_core::PushChange, String> {
    use crate::host_core::PushChange;
    if subscription.is_some() && host.pusher.is_none() {
        return Err("this host does not push notifications (see its log)".into());
    }
    if let Some(s) = &subscription {
        crate::push::Subscription::from_wire(s)
            .and_then(|sub| sub.check_service(&host.config.push.allow))
            .map_err(|e| e.to_string())?;
    }
    if lock(&host.devices).get(&device).is_some_and(|d| d.push == subscription) {
        // Nothing changes (a page that subscribes at each load).
        return Ok(PushChange::Unchanged);
    }
    let change = match &subscription {
        Some(s) => PushChange::Set { hide_detail: s.hide_detail },
        None => PushChange::Cleared,
    };
    let what = match &subscription {
        Some(s) => format!("push to {}", crate::push::Subscription::origin_of(&s.endpoint)),
        None => "no push".into(),
    };
    lock(&host.devices).set_push(&device, subscription).map_err(|e| e.to_string())?;
    crate::host::audit(host, Event::Device { device: device.to_string(), change: what });
    Ok(change)
}

/// The core's driver: the one owner of the [`HostCore`]. It applies what the rest of the host
/// asks, in the order asked, fires the core's timer when the next pending action, pairing offer
/// or question about a new device lapses, and
/// carries out the core's effects in the order the core gives them.
pub(crate) async fn drive(
    host: Arc<Host>,
    mut core: HostCore,
    mut commands: tokio::sync::mpsc::Receiver<crate::host_core::Command>,
) {
    let mut waiters = crate::host_core::Waiters::default();
    // Decisions whose record could not be written: they take no effect.
    let mut unrecorded = std::collections::HashSet::new();
    loop {
        let lapse = core.poll_timeout().map(|at| {
            let wait = std::time::Duration::from_millis(at.saturating_sub(now_ms()));
            tokio::time::Instant::now() + wait
        });
        let timer = async {
            match lapse {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => crate::host_core::apply(&mut core, &mut waiters, now_ms(), command),
                None => return,
            },
            () = timer => core.handle_timeout(now_ms()),
        }
        while let Some(effect) = core.poll_effect() {
            match effect {
                Effect::Audit(event) => {
                    let request = match &event {
                        Event::Approval { request, .. } => Some(request.clone()),
                        _ => None,
                    };
                    if let Err(e) = host.record(event) {
                        tracing::error!("audit: {e}; the decision takes no effect");
                        unrecorded.extend(request);
                    }
                }
                Effect::Pending(p) => {
                    host.broadcast(pending_event(&host, &p));
                    crate::notices::ntfy(&host);
                }
                Effect::Push { device, generation, pending } => {
                    let requests: Vec<RequestId> = pending.iter().map(|p| p.id).collect();
                    if let Err(outcome) = crate::notices::push(&host, device, generation, pending) {
                        core.pushed(now_ms(), device, generation, &requests, outcome);
                    }
                }
                Effect::DropPush { device } => {
                    if let Err(e) = lock(&host.devices).set_push(&device, None) {
                        tracing::warn!("push: cannot forget device {device}'s subscription: {e}");
                    }
                }
                Effect::SetPush { device, request, subscription } => {
                    let outcome = set_push(&host, device, subscription);
                    core.push_changed(now_ms(), device, request, outcome);
                }
                Effect::Report(what) => tracing::warn!("{what}"),
                Effect::Progress { request, devices } => {
                    // To those who answer (a viewer only watches: where other devices are,
                    // and when their people look, is not its business).
                    let (devices, to) = {
                        let registry = lock(&host.devices);
                        let devices: Vec<protocol::DeviceProgress> = devices
                            .into_iter()
                            .map(|(device, stage)| protocol::DeviceProgress {
                                device,
                                name: registry.get(&device).map(|d| d.name.clone()),
                                stage,
                            })
                            .collect();
                        let to: Vec<DeviceId> = registry
                            .list()
                            .into_iter()
                            .filter(|(d, _)| d.role >= protocol::Role::Approver)
                            .map(|(d, _)| d.id)
                            .collect();
                        (devices, to)
                    };
                    for device in to {
                        let event = HostEvent::ActionProgress { request, devices: devices.clone() };
                        host.send(device, event);
                    }
                }
                Effect::Refuse { claimed, reason } => refuse(&host, &claimed, reason),
                Effect::Persist { device, rx, at, message } => {
                    let recorded = lock(&host.devices).accepted(&device, rx, at);
                    match recorded {
                        Ok(()) => {
                            host.syncer.soon();
                            // Its effects join the queue, after those already in it.
                            core.handle_message(now_ms(), device, *message);
                        }
                        Err(e) => {
                            refuse(
                                &host,
                                &device.to_string(),
                                format!("cannot record its counter: {e}"),
                            );
                        }
                    }
                }
                Effect::Pair { token, key, device } => {
                    tokio::spawn(crate::link::record_pairing(host.clone(), token, key, device));
                }
                Effect::OfferEvent { token, event } => {
                    let done = matches!(event, PairEvent::Done(_));
                    let client = if done {
                        waiters.offers.remove(&token)
                    } else {
                        waiters.offers.get(&token).cloned()
                    };
                    if let Some(client) = client {
                        // Room enough: see `MAX_PAIR_EVENTS`.
                        let _ = client.try_send(event);
                    }
                }
                Effect::SendPairing { key, answer } => {
                    if let Some(link) = &host.link {
                        link.send(ToLink::Pairing(key, answer));
                    }
                }
                Effect::Register { devices, offers, psks } => {
                    if let Some(link) = &host.link {
                        link.send(ToLink::Register { devices, offers, psks });
                    }
                }
                Effect::Submit { device, id, action } => {
                    tokio::spawn(submit(host.clone(), device, id, *action));
                }
                Effect::Send { device, event } => host.send(device, event),
                Effect::Broadcast(event) => host.broadcast(event),
                Effect::Decided { request, verdict, by, note } => {
                    // A decision the log does not hold is told as a denial by nobody.
                    let (verdict, by, note) = if unrecorded.contains(&request.to_string()) {
                        (Verdict::Deny, None, None)
                    } else {
                        (verdict, by, note)
                    };
                    host.broadcast(HostEvent::ActionDecided {
                        request,
                        verdict,
                        decided_by: by.as_ref().map(|by| host.actor(by)),
                        note,
                    });
                }
                Effect::Sync { device, request, pending, sessions } => {
                    crate::host::send_sync(&host, device, request, &pending, sessions);
                }
                Effect::Settled(resolution) => {
                    let waiter = waiters.resolutions.remove(&resolution.pending.id);
                    // Unrecorded: the waiter is dropped unanswered, which its requester takes
                    // as a failure (nothing is done).
                    if unrecorded.remove(&resolution.pending.id.to_string()) {
                        continue;
                    }
                    let (id, approved) =
                        (resolution.pending.id, resolution.verdict == Verdict::Approve);
                    let local = resolution.pending.requested_by.device().is_none();
                    if let Some(waiter) = waiter
                        && waiter.send(*resolution).is_ok()
                        && approved
                        && local
                    {
                        // A requester at this machine carries it out itself once told.
                        core.applied(id);
                    }
                }
            }
        }
    }
}
