//! Changes made at this machine to the paired devices (revoke, rename, set a role), and their
//! listing with who is online.

use std::collections::HashSet;

use protocol::DeviceId;

use crate::audit::Event;
use crate::devices::{Registry, role_name};
use crate::host::{Host, audit, lock};
use crate::local_api::{DeviceChange, DeviceInfo};

/// Records a change of the device list, durably before going on.
pub(crate) fn audit_device_change(host: &Host, device: DeviceId, change: String) {
    audit(host, Event::Device { device: device.to_string(), change });
    if let Err(e) = host.commit() {
        tracing::error!("{e}");
    }
}

/// The paired devices, for listing.
pub fn device_infos(registry: &Registry, online: &HashSet<DeviceId>) -> Vec<DeviceInfo> {
    registry
        .list()
        .into_iter()
        .map(|(d, c)| DeviceInfo {
            id: d.id.to_string(),
            name: d.name,
            role: d.role,
            fingerprint: d.id.key().fingerprint().to_string(),
            paired_at_ms: d.paired_at_ms,
            last_seen_ms: c.last_seen_ms,
            online: online.contains(&d.id),
            channel_key: d.channel_key.is_some(),
        })
        .collect()
}

/// Why a change of a paired device was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceChangeError {
    /// The registry refused it (no such device, or it could not be written).
    #[error(transparent)]
    Registry(#[from] crate::devices::RegistryError),
    /// Not a name a device may have.
    #[error(
        "a device name is non-empty text without control characters, at most {} bytes",
        protocol::limits::MAX_TEXT
    )]
    BadName,
    /// The host is stopping (the registry changed; the audit log says so).
    #[error(transparent)]
    Core(#[from] crate::host_core::CoreError),
}

/// Applies a change made at this machine to a paired device; returns what was done.
pub fn apply_change(
    registry: &mut Registry,
    id: &str,
    change: &DeviceChange,
) -> Result<(DeviceId, String), DeviceChangeError> {
    let id = registry.find(id)?;
    let what = match change {
        DeviceChange::Revoke => {
            let device = registry.revoke(&id)?;
            format!("revoked ({})", device.name)
        }
        DeviceChange::Rename { name } => {
            check_name(name)?;
            registry.rename(&id, name.clone())?;
            format!("renamed to {name}")
        }
        DeviceChange::SetRole { role } => {
            registry.set_role(&id, *role)?;
            format!("role set to {}", role_name(*role))
        }
    };
    Ok((id, what))
}

pub(super) fn check_name(name: &str) -> Result<(), DeviceChangeError> {
    if name.trim().is_empty()
        || name.chars().any(char::is_control)
        || name.len() > protocol::limits::MAX_TEXT
    {
        return Err(DeviceChangeError::BadName);
    }
    Ok(())
}

/// A change through the running host: applied, audited, and (for a revocation) the device is
/// told and cut off at the relay at once (by the core). The core judges every frame it takes
/// after the change by it, before the change is recorded: nothing the device sent is acted on
/// under its old role after the record of the new one.
pub(crate) async fn change_device(
    host: &Host,
    id: &str,
    change: DeviceChange,
) -> Result<String, DeviceChangeError> {
    let _one_at_a_time = host.device_changes.lock().await;
    let (device, what, rx) = {
        let mut registry = lock(&host.devices);
        let (device, what) = apply_change(&mut registry, id, &change)?;
        (device, what, registry.rx(&device))
    };
    let role = match &change {
        DeviceChange::Revoke => Some(None),
        DeviceChange::SetRole { role } => Some(Some(*role)),
        DeviceChange::Rename { .. } => None,
    };
    let told = match role {
        Some(role) => host.core.set_device(device, role, rx).await,
        None => Ok(()),
    };
    // Recorded even if the core is gone (the host is stopping): the registry changed.
    audit_device_change(host, device, what.clone());
    told?;
    Ok(format!("{device}: {what}"))
}
