//! The paired devices and their counters.
//!
//! Files in the state directory:
//! - `devices.json` (replaced atomically: temp, fsync, rename): who is paired, with which role,
//!   since when (changed only at this machine: pairing, `agent-host devices
//!   revoke|rename|set-role`);
//! - `counters.json` (replaced atomically) and `counters.journal` (appended to): for each
//!   device, the replay window of what it sent, how far the host's own counter towards it is
//!   reserved, and when it was last seen. Each accepted message appends its device's new window
//!   to the journal as one numbered line, at once, so a message accepted once bounces after
//!   the host is stopped or killed. The journal is synced ([`JournalSync`], one `fdatasync`
//!   however many lines) in the background a few milliseconds after each line, so a power
//!   loss can only lose the lines of the last few messages. What protects an action then is
//!   the audit log, synced before the action starts: a restarted host refuses a device's
//!   request whose record it holds from before (`host::recent_request`), and pending
//!   actions, which an old approval could name, do not survive a restart. At worst a request
//!   and its approval were accepted and the power went before the action's commit: a relay
//!   replaying both after the restart gets the approved action run then, once, as it never
//!   ran; never twice. Loading applies the journal's lines numbered past the one
//!   `counters.json` records; every [`JOURNAL_COMPACT`] lines (and whenever `counters.json` is
//!   written anyway) the state is written whole and the journal emptied. The background sync
//!   does that ([`Registry::compaction`]): the state is taken under the registry's lock and
//!   written without it, so no message waits for the disk, and the journal is emptied only if
//!   no line came meanwhile. A torn last line
//!   (power lost, or the host killed, mid-write) was never synced: it is dropped, and cut off
//!   before the next line is appended. Each update is thus atomic (a whole line, or none)
//!   without a temporary file and a rename per message.
//!
//! The host's counter towards a device is reserved in blocks of [`TX_BLOCK`]: the state records
//! the end of the block in use, and a restarted host starts after it, so a counter is never
//! reused even though the host does not write the file for every event it sends. The next
//! block is reserved ahead, by a journal line, while the last quarter of the current one is
//! used; the line is synced in the background, and only if it is not yet on disk when the
//! block runs out does the event that needs it wait for the sync. A block
//! is thus never used before its reservation is durable. A starting host reserves a fresh block
//! for every device and opens the journal before it serves ([`Registry::prepare`]), so no event
//! waits for a rewrite of `counters.json`, nor any message for the journal's first open.
//!
//! A file that exists but does not parse stops the host (fail closed): it never starts with
//! an empty device list or forgotten counters in its place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::{DeviceId, ReplayState, Role};
use serde::{Deserialize, Serialize};

mod journal;
pub use journal::{Compaction, JournalSync, Tx};
use journal::{JOURNAL, lock_file, read_journal};

/// How many outgoing counters are reserved at a time.
pub const TX_BLOCK: u64 = 1024;

/// Journal lines after which the counters are written whole and the journal emptied.
pub const JOURNAL_COMPACT: u64 = 4096;

/// The most paired devices (the relay's registration limit).
pub const MAX_DEVICES: usize = protocol::relay::MAX_DEVICES;

/// One paired device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Its id (its public key).
    pub id: DeviceId,
    /// The name it gave itself, or the one set here.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was paired (Unix ms).
    pub paired_at_ms: u64,
    /// Its static key for the end-to-end channel, as its pairing hello said (devices paired
    /// before the channel have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_key: Option<protocol::ChannelKey>,
    /// Where its notifications are pushed (a browser's Web Push subscription), when it asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<protocol::PushSubscription>,
}

/// The counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// What it sent: the replay window.
    pub rx: ReplayState,
    /// The host's counter towards it is reserved up to here (inclusive).
    pub tx_reserved: u64,
    /// When a verified message from it last arrived (Unix ms).
    pub last_seen_ms: Option<u64>,
}

/// Why the registry could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A state file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A state file does not parse: the host refuses to start rather than forget devices.
    #[error("{path} is damaged ({error}); refusing to go on without it")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parse error.
        error: serde_json::Error,
    },
    /// No paired device has this id (or unique prefix).
    #[error("no paired device matches {0}")]
    Unknown(String),
    /// Several devices match the prefix.
    #[error("{0} matches several devices; give more of the id")]
    Ambiguous(String),
    /// The device is already paired.
    #[error("{0} is already paired")]
    AlreadyPaired(DeviceId),
    /// No room for another device.
    #[error("at most {MAX_DEVICES} devices can be paired")]
    Full,
    /// The host's counters towards this device are used up (a damaged or forged state file
    /// can say so): nothing more is sent to it rather than a counter twice.
    #[error("the counters towards {0} are used up; pair it again")]
    Exhausted(DeviceId),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesFile {
    devices: Vec<Device>,
}

/// `counters.json`: the counters, and the last journal line they include.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountersFile {
    journal: u64,
    devices: BTreeMap<DeviceId, Counters>,
}

/// `counters.json` as this version writes it, or as an earlier one did (the map alone).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyCountersFile {
    Current(CountersFile),
    Earlier(BTreeMap<DeviceId, Counters>),
}

impl Default for AnyCountersFile {
    fn default() -> Self {
        Self::Current(CountersFile::default())
    }
}

/// The registry, as loaded from the state directory.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    devices: BTreeMap<DeviceId, Device>,
    counters: BTreeMap<DeviceId, Counters>,
    /// The next counter to use towards each device (in memory; see [`TX_BLOCK`]).
    tx_next: BTreeMap<DeviceId, u64>,
    /// Blocks reserved ahead by a journal line not known to be synced: the line's number, and
    /// the end of the reservation that is durable until then.
    tx_ahead: BTreeMap<DeviceId, (u64, u64)>,
    /// The number of the last journal line (written or loaded).
    journal_n: u64,
    /// Journal lines since `counters.json` was last written.
    journal_lines: u64,
    /// The journal, once opened for appending (on the first message accepted).
    journal: Option<std::fs::File>,
    /// What syncs the journal, without the registry's lock.
    journal_sync: Arc<JournalSync>,
    /// How many times the state was written whole by [`Registry::save_counters`].
    saves: u64,
    /// Taken by every writer of `counters.json`, holding the number of the last
    /// [`Registry::save_counters`] on disk: a [`Compaction`] taken before a later save must not
    /// replace what that save wrote.
    counters_file: Arc<Mutex<u64>>,
}

fn read_json<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T, RegistryError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|error| RegistryError::Damaged { path: path.to_path_buf(), error }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(error) => Err(RegistryError::Io { path: path.to_path_buf(), error }),
    }
}

impl Registry {
    /// Loads the registry kept in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Self, RegistryError> {
        let file: DevicesFile = read_json(&state_dir.join("devices.json"))?;
        let (mut journal_n, mut counters) = match read_json(&state_dir.join("counters.json"))? {
            AnyCountersFile::Current(f) => (f.journal, f.devices),
            AnyCountersFile::Earlier(devices) => (0, devices),
        };
        let mut journal_lines = 0;
        for line in read_journal(&state_dir.join(JOURNAL))? {
            journal_lines += 1;
            if line.n > journal_n {
                journal_n = line.n;
                let c = counters.entry(line.id).or_default();
                if let Some(rx) = line.rx {
                    c.rx = rx;
                }
                if let Some(seen) = line.seen_ms {
                    c.last_seen_ms = Some(seen);
                }
                if let Some(tx) = line.tx_reserved {
                    c.tx_reserved = c.tx_reserved.max(tx);
                }
            }
        }
        // Continue after every reserved block: counters handed out before a crash stay used.
        let tx_next =
            counters.iter().map(|(id, c)| (*id, c.tx_reserved.saturating_add(1))).collect();
        Ok(Self {
            dir: state_dir.to_path_buf(),
            devices: file.devices.into_iter().map(|d| (d.id, d)).collect(),
            counters,
            tx_next,
            tx_ahead: BTreeMap::new(),
            journal_n,
            journal_lines,
            journal: None,
            journal_sync: Arc::default(),
            saves: 0,
            counters_file: Arc::default(),
        })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let path = self.dir.join(name);
        crate::fsutil::write_atomic(&path, bytes, 0o600)
            .map_err(|error| RegistryError::Io { path, error })
    }

    fn save_devices(&self) -> Result<(), RegistryError> {
        let file = DevicesFile { devices: self.devices.values().cloned().collect() };
        self.write("devices.json", &serde_json::to_vec_pretty(&file).unwrap_or_default())
    }

    /// Writes the counters file whole, then empties the journal (whose lines it includes).
    pub fn save_counters(&mut self) -> Result<(), RegistryError> {
        let file = CountersFile { journal: self.journal_n, devices: self.counters.clone() };
        {
            let mut on_disk = lock_file(&self.counters_file);
            self.write("counters.json", &serde_json::to_vec_pretty(&file).unwrap_or_default())?;
            self.saves += 1;
            *on_disk = self.saves;
        }
        if self.journal_lines > 0 {
            let path = self.dir.join(JOURNAL);
            let io = |error| RegistryError::Io { path: path.clone(), error };
            let journal = match self.journal.take() {
                Some(f) => f,
                None => std::fs::OpenOptions::new().append(true).open(&path).map_err(io)?,
            };
            journal.set_len(0).map_err(io)?;
            journal.sync_data().map_err(io)?;
            if self.journal_sync.file.get().is_none() {
                let _ = self.journal_sync.file.set(journal.try_clone().map_err(io)?);
            }
            self.journal = Some(journal);
            self.journal_lines = 0;
        }
        // Every reservation is in the file now.
        self.tx_ahead.clear();
        Ok(())
    }

    /// What syncs the journal.
    pub fn journal_sync(&self) -> Arc<JournalSync> {
        self.journal_sync.clone()
    }

    /// Every paired device, by id.
    pub fn list(&self) -> Vec<(Device, Counters)> {
        self.devices
            .values()
            .map(|d| (d.clone(), self.counters.get(&d.id).copied().unwrap_or_default()))
            .collect()
    }

    /// One paired device.
    pub fn get(&self, id: &DeviceId) -> Option<&Device> {
        self.devices.get(id)
    }

    /// The paired devices.
    pub fn ids(&self) -> Vec<DeviceId> {
        self.devices.keys().copied().collect()
    }

    /// The device an id or unique prefix of one names.
    pub fn find(&self, prefix: &str) -> Result<DeviceId, RegistryError> {
        let matches: Vec<DeviceId> =
            self.devices.keys().filter(|id| id.to_string().starts_with(prefix)).copied().collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(RegistryError::Unknown(prefix.into())),
            _ => Err(RegistryError::Ambiguous(prefix.into())),
        }
    }

    /// Adds a newly paired device; its counters start afresh.
    pub fn add(&mut self, device: Device) -> Result<(), RegistryError> {
        if self.devices.contains_key(&device.id) {
            return Err(RegistryError::AlreadyPaired(device.id));
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(RegistryError::Full);
        }
        let id = device.id;
        // A newly paired device counts from 1 again; the host's own counter towards it goes on
        // after anything it ever reserved for that key, from a first block reserved in the same
        // write (so its first event does not wait for another).
        let tx_from = self.counters.get(&id).map_or(1, |c| c.tx_reserved.saturating_add(1));
        self.devices.insert(id, device);
        let tx_reserved = tx_from.saturating_add(TX_BLOCK - 1);
        self.counters.insert(id, Counters { tx_reserved, ..Counters::default() });
        self.tx_next.insert(id, tx_from);
        self.save_counters()?;
        self.save_devices()
    }

    /// Removes a device. Its frames are refused from now on (it is no longer paired). Were the
    /// same key paired again, its counters would start afresh, as the device's own do when it
    /// pairs (old frames would still be bounded by their expiry).
    pub fn revoke(&mut self, id: &DeviceId) -> Result<Device, RegistryError> {
        let device = self.devices.remove(id).ok_or(RegistryError::Unknown(id.to_string()))?;
        self.save_devices()?;
        Ok(device)
    }

    /// Renames a device.
    pub fn rename(&mut self, id: &DeviceId, name: String) -> Result<(), RegistryError> {
        self.devices.get_mut(id).ok_or(RegistryError::Unknown(id.to_string()))?.name = name;
        self.save_devices()
    }

    /// Changes a device's role.
    pub fn set_role(&mut self, id: &DeviceId, role: Role) -> Result<(), RegistryError> {
        self.devices.get_mut(id).ok_or(RegistryError::Unknown(id.to_string()))?.role = role;
        self.save_devices()
    }

    /// Sets (or with `None` clears) where a device's notifications are pushed.
    pub fn set_push(
        &mut self,
        id: &DeviceId,
        push: Option<protocol::PushSubscription>,
    ) -> Result<(), RegistryError> {
        self.devices.get_mut(id).ok_or(RegistryError::Unknown(id.to_string()))?.push = push;
        self.save_devices()
    }

    /// Whether `id` has counters here: paired now, or before (a revoked device keeps them, so
    /// that what the host still tells it goes on from its last counter).
    pub fn knows(&self, id: &DeviceId) -> bool {
        self.counters.contains_key(id)
    }

    /// The persisted replay window of what `id` sent.
    pub fn rx(&self, id: &DeviceId) -> ReplayState {
        self.counters.get(id).map(|c| c.rx).unwrap_or_default()
    }
}

/// A role as people and the CLI spell it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Approver => "approver",
        Role::Operator => "operator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ReplayWindow, SecretKey};

    fn device(seed: u8) -> Device {
        Device {
            id: DeviceId::new(SecretKey::from_seed(&[seed; 32]).public_key()),
            name: format!("phone {seed}"),
            role: Role::Approver,
            paired_at_ms: 1,
            channel_key: seed.is_multiple_of(2).then_some(protocol::ChannelKey([seed; 32])),
            push: None,
        }
    }

    /// A registry in a new directory, with one device paired.
    fn one_device() -> (tempfile::TempDir, Registry, Device) {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::load(dir.path()).unwrap();
        let d = device(1);
        reg.add(d.clone()).unwrap();
        (dir, reg, d)
    }

    #[test]
    fn counters_survive_a_restart_and_are_never_reused() {
        let (dir, mut reg, d) = one_device();
        assert!(matches!(reg.add(d.clone()), Err(RegistryError::AlreadyPaired(_))));
        let mut window = ReplayWindow::restore(reg.rx(&d.id));
        window.commit(7).unwrap();
        reg.accepted(&d.id, window.export(), 99).unwrap();
        let sent: Vec<u64> = (0..3).map(|_| reg.next_tx(&d.id).unwrap().counter).collect();
        assert_eq!(sent, [1, 2, 3]);

        let mut again = Registry::load(dir.path()).unwrap();
        let mut window = ReplayWindow::restore(again.rx(&d.id));
        assert!(window.commit(7).is_err(), "a message accepted before the restart bounces");
        assert!(again.next_tx(&d.id).unwrap().counter > 3, "a counter used before is never reused");
        assert_eq!(again.list()[0].1.last_seen_ms, Some(99));
    }

    /// A device paired while the host runs gets its first block in the pairing's own write.
    #[test]
    fn a_newly_paired_device_sends_without_another_save() {
        let (dir, mut reg, d) = one_device();
        let file = dir.path().join("counters.json");
        let before = std::fs::read(&file).unwrap();
        assert_eq!(reg.next_tx(&d.id).unwrap().counter, 1);
        assert_eq!(std::fs::read(&file).unwrap(), before, "no whole save for the first event");
    }

    /// A started host writes nothing on the way of a message or an event: every device has a
    /// fresh block and the journal is open before anyone talks.
    #[test]
    fn a_prepared_registry_sends_and_accepts_without_writing_the_state_whole() {
        let (dir, mut reg, d) = one_device();
        let used = reg.next_tx(&d.id).unwrap().counter;
        drop(reg);
        let mut reg = Registry::load(dir.path()).unwrap();
        reg.prepare().unwrap();
        let before =
            std::fs::metadata(dir.path().join("counters.json")).unwrap().modified().unwrap();
        assert!(reg.journal.is_some(), "the journal is open");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let next = reg.next_tx(&d.id).unwrap().counter;
        assert!(next > used);
        let mut window = ReplayWindow::restore(reg.rx(&d.id));
        window.commit(1).unwrap();
        reg.accepted(&d.id, window.export(), 5).unwrap();
        let after =
            std::fs::metadata(dir.path().join("counters.json")).unwrap().modified().unwrap();
        assert_eq!(before, after, "counters.json was not rewritten on the way");
        // And a restart goes past the prepared block.
        let mut again = Registry::load(dir.path()).unwrap();
        assert!(again.next_tx(&d.id).unwrap().counter >= next + TX_BLOCK - 1);
    }

    /// Compaction writes the state without the lock; a line that comes meanwhile is not lost
    /// by emptying the journal.
    #[test]
    fn compaction_keeps_a_line_that_came_while_it_wrote() {
        let (dir, mut reg, d) = one_device();
        reg.prepare().unwrap();
        let mut window = ReplayWindow::restore(reg.rx(&d.id));
        for counter in 1..=3 {
            window.commit(counter).unwrap();
            reg.accepted(&d.id, window.export(), counter).unwrap();
        }
        let compaction = reg.compaction();
        // A message is accepted while the state is being written.
        window.commit(4).unwrap();
        reg.accepted(&d.id, window.export(), 4).unwrap();
        compaction.write().unwrap();
        reg.compacted(&compaction).unwrap();
        let journal = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(journal.lines().count(), 4, "not emptied: a line came meanwhile");
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.rx(&d.id), window.export());
        // With nothing in between, it is emptied, and the state survives in the file alone.
        let compaction = reg.compaction();
        compaction.write().unwrap();
        reg.compacted(&compaction).unwrap();
        assert_eq!(std::fs::read(dir.path().join(JOURNAL)).unwrap().len(), 0);
        assert!(!reg.compaction_due());
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.rx(&d.id), window.export());
        assert!(ReplayWindow::restore(again.rx(&d.id)).commit(4).is_err());
        // The next line goes to the emptied journal and is read back.
        window.commit(5).unwrap();
        reg.accepted(&d.id, window.export(), 5).unwrap();
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.rx(&d.id), window.export());
    }

    /// Found by review: a compaction taken before a whole save (a device paired, a block
    /// reserved) replaced that save's newer file with its older state.
    #[test]
    fn a_compaction_never_replaces_a_newer_save() {
        let (dir, mut reg, d) = one_device();
        reg.prepare().unwrap();
        let compaction = reg.compaction();
        // A device is paired meanwhile: the state is saved whole, with it.
        let other = device(2);
        reg.add(other.clone()).unwrap();
        compaction.write().unwrap();
        reg.compacted(&compaction).unwrap();
        let file: CountersFile =
            serde_json::from_slice(&std::fs::read(dir.path().join("counters.json")).unwrap())
                .unwrap();
        assert!(file.devices.contains_key(&other.id), "the newer save stays on disk");
        assert!(file.devices.contains_key(&d.id));
    }

    #[test]
    fn the_next_block_is_reserved_ahead_and_used_only_once_on_disk() {
        let (dir, mut reg, d) = one_device();
        let synced = |reg: &Registry| *reg.journal_sync.synced.lock().unwrap();
        let mut taken = Vec::new();
        let mut take = |reg: &mut Registry| {
            let tx = reg.next_tx(&d.id).unwrap();
            taken.push(tx.counter);
            tx
        };
        // The last quarter of the first block: the next one is reserved by a journal line.
        let ahead_from = TX_BLOCK - TX_BLOCK / 4 + 1;
        for _ in 1..ahead_from {
            assert!(!take(&mut reg).reserved_ahead);
        }
        assert!(take(&mut reg).reserved_ahead);
        let journal = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        let line = journal.lines().last().unwrap();
        assert!(line.contains(&format!("\"tx_reserved\":{}", 2 * TX_BLOCK)), "{line}");
        let file: CountersFile =
            serde_json::from_slice(&std::fs::read(dir.path().join("counters.json")).unwrap())
                .unwrap();
        assert_eq!(file.devices[&d.id].tx_reserved, TX_BLOCK, "counters.json is not rewritten");

        // Were the power lost now, the line with it, a restart still goes past every counter
        // used, as they all come from the block on disk.
        let lost = tempfile::tempdir().unwrap();
        for name in ["devices.json", "counters.json"] {
            std::fs::copy(dir.path().join(name), lost.path().join(name)).unwrap();
        }
        let kept = journal.len() - line.len() - 1;
        std::fs::write(lost.path().join(JOURNAL), &journal[..kept]).unwrap();
        let first = Registry::load(lost.path()).unwrap().next_tx(&d.id).unwrap().counter;
        assert_eq!(first, TX_BLOCK + 1);

        // The rest of the block does not wait for the line; the next block does.
        let line_n = reg.journal_n;
        while take(&mut reg).counter < TX_BLOCK {}
        assert!(synced(&reg) < line_n, "nothing synced before the block ran out");
        assert_eq!(take(&mut reg).counter, TX_BLOCK + 1);
        assert!(synced(&reg) >= line_n, "the reservation is on disk before its first counter");
        assert!(taken.iter().copied().eq(1..=TX_BLOCK + 1), "one run, nothing skipped or repeated");

        // A restart goes on after the block reserved ahead.
        let first = Registry::load(dir.path()).unwrap().next_tx(&d.id).unwrap().counter;
        assert_eq!(first, 2 * TX_BLOCK + 1);
    }

    #[test]
    fn revoke_rename_and_set_role_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::load(dir.path()).unwrap();
        let (a, b) = (device(1), device(2));
        reg.add(a.clone()).unwrap();
        reg.add(b.clone()).unwrap();
        assert!(matches!(reg.find("dev1"), Err(RegistryError::Ambiguous(_))));
        assert_eq!(reg.find(&a.id.to_string()).unwrap(), a.id);
        reg.rename(&a.id, "kitchen tablet".into()).unwrap();
        reg.set_role(&a.id, Role::Viewer).unwrap();
        reg.revoke(&b.id).unwrap();
        let again = Registry::load(dir.path()).unwrap();
        let list = again.list();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].0.name.as_str(), list[0].0.role), ("kitchen tablet", Role::Viewer));
        assert!(again.get(&b.id).is_none());
    }

    #[test]
    fn windows_come_back_from_the_journal_and_stale_or_torn_lines_change_nothing() {
        let (dir, mut reg, d) = one_device();
        let mut window = ReplayWindow::restore(reg.rx(&d.id));
        for counter in [3, 5, 9] {
            window.commit(counter).unwrap();
            reg.accepted(&d.id, window.export(), counter).unwrap();
        }
        let journal = dir.path().join(JOURNAL);
        let written = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(written.lines().count(), 3, "one line per message, nothing else rewritten");
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.rx(&d.id), window.export());
        assert_eq!(again.list()[0].1.last_seen_ms, Some(9));

        // A torn last line (a crash mid-write) is dropped.
        std::fs::write(&journal, format!("{written}{{\"n\":4,\"id\":")).unwrap();
        assert_eq!(Registry::load(dir.path()).unwrap().rx(&d.id), window.export());

        // Written whole: the journal empties, and a line it held that outlived the rewrite (a
        // crash between the two) is older than the file, so it changes nothing.
        let mut reg = Registry::load(dir.path()).unwrap();
        reg.save_counters().unwrap();
        assert_eq!(std::fs::read(&journal).unwrap().len(), 0);
        let stale = written.lines().next().unwrap();
        std::fs::write(&journal, format!("{stale}\n")).unwrap();
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.rx(&d.id), window.export());
        let mut replayed = ReplayWindow::restore(again.rx(&d.id));
        assert!(replayed.commit(5).is_err() && replayed.commit(3).is_err());

        // A bad line before the last is damage, not a crash: the host stops.
        std::fs::write(&journal, format!("garbage\n{stale}\n")).unwrap();
        assert!(matches!(Registry::load(dir.path()), Err(RegistryError::Damaged { .. })));
    }

    #[test]
    fn a_message_accepted_after_a_torn_journal_line_survives_the_next_load() {
        let (dir, mut reg, d) = one_device();
        let mut window = ReplayWindow::restore(reg.rx(&d.id));
        window.commit(3).unwrap();
        reg.accepted(&d.id, window.export(), 3).unwrap();
        drop(reg);
        // A crash in the middle of the next line.
        let journal = dir.path().join(JOURNAL);
        let written = std::fs::read_to_string(&journal).unwrap();
        std::fs::write(&journal, format!("{written}{{\"n\":2,\"id\":")).unwrap();
        // The restarted host accepts another message: its line must not join the torn one.
        let mut reg = Registry::load(dir.path()).unwrap();
        window.commit(4).unwrap();
        reg.accepted(&d.id, window.export(), 4).unwrap();
        drop(reg);
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.rx(&d.id), window.export());
        // So a relay replaying that message is refused.
        assert!(ReplayWindow::restore(again.rx(&d.id)).commit(4).is_err());
    }

    #[test]
    fn an_earlier_counters_file_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(1);
        let earlier = format!(
            "{{\"{}\": {{\"rx\": {{\"highest\": 7, \"seen\": 1}}, \"tx_reserved\": 1024, \"last_seen_ms\": 5}}}}",
            d.id
        );
        std::fs::write(dir.path().join("counters.json"), earlier).unwrap();
        let mut reg = Registry::load(dir.path()).unwrap();
        assert_eq!(reg.rx(&d.id).highest, 7);
        assert_eq!(reg.next_tx(&d.id).unwrap().counter, 1025);
    }

    /// A state file whose counter is at the end of its range (damaged or forged) makes the
    /// host send nothing more to that device, instead of panicking or reusing a counter.
    #[test]
    fn counters_at_the_end_of_their_range_are_used_up_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(1);
        let state = format!(
            "{{\"journal\": 0, \"devices\": {{\"{}\": {{\"rx\": {{\"highest\": 0, \"seen\": 0}}, \"tx_reserved\": {}, \"last_seen_ms\": null}}}}}}",
            d.id,
            u64::MAX
        );
        std::fs::write(dir.path().join("counters.json"), state).unwrap();
        let devices = format!("{{\"devices\": [{}]}}", serde_json::to_string(&d).unwrap());
        std::fs::write(dir.path().join("devices.json"), devices).unwrap();
        let mut reg = Registry::load(dir.path()).unwrap();
        reg.prepare().unwrap();
        assert!(matches!(reg.next_tx(&d.id), Err(RegistryError::Exhausted(_))));
    }

    #[test]
    fn a_damaged_file_stops_the_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("devices.json"), b"{ not json").unwrap();
        assert!(matches!(Registry::load(dir.path()), Err(RegistryError::Damaged { .. })));
    }
}
