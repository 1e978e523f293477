//! The counters' journal, and the host's counters towards each device (see the notes of
//! [`super`]): a line per accepted message, synced in the background ([`JournalSync`]), folded
//! into `counters.json` from time to time ([`Compaction`]); blocks of the host's own counters
//! reserved ahead ([`Tx`]).
//!
//! It must not change who is paired: that is [`super::Registry`]'s rest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use protocol::{DeviceId, ReplayState};
use serde::{Deserialize, Serialize};

use super::{CountersFile, JOURNAL_COMPACT, Registry, RegistryError, TX_BLOCK};

/// One line of `counters.journal`: a device's window after a message it sent, or how far the
/// host's counter towards it is reserved now.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JournalLine {
    pub(super) n: u64,
    pub(super) id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rx: Option<ReplayState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) seen_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tx_reserved: Option<u64>,
}

/// The host's next counter towards a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tx {
    /// The counter to use.
    pub counter: u64,
    /// A block was reserved ahead by a journal line, which wants syncing soon.
    pub reserved_ahead: bool,
}

/// `counters.json` as it is to be written, taken under the registry's lock and written
/// without it ([`Registry::compaction`]).
#[derive(Debug)]
pub struct Compaction {
    path: PathBuf,
    journal_n: u64,
    /// The number of the last whole save it includes.
    saves: u64,
    file: Arc<Mutex<u64>>,
    bytes: Vec<u8>,
}

impl Compaction {
    /// Writes it atomically and durably, unless the state was saved whole since it was taken
    /// (that file is newer: it stays, and the journal lines it holds are in it).
    pub fn write(&self) -> Result<(), RegistryError> {
        let on_disk = lock_file(&self.file);
        if *on_disk > self.saves {
            return Ok(());
        }
        crate::fsutil::write_atomic(&self.path, &self.bytes, 0o600)
            .map_err(|error| RegistryError::Io { path: self.path.clone(), error })
    }
}

pub(super) fn lock_file(file: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    file.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes the journal's lines durable, apart from the registry, so that a sync in progress
/// does not hold up the next message.
#[derive(Debug, Default)]
pub struct JournalSync {
    /// A second handle to the journal, once it is open.
    pub(super) file: OnceLock<std::fs::File>,
    /// The number of the last line written.
    pub(super) written: AtomicU64,
    /// The number of the last line synced.
    pub(super) synced: Mutex<u64>,
}

impl JournalSync {
    /// Syncs every line written so far (nothing to do when that is done already).
    pub fn sync(&self) -> std::io::Result<()> {
        self.sync_through(self.written.load(Ordering::Acquire))
    }

    /// Makes line `n` durable, with every line written so far unless it already is.
    fn sync_through(&self, n: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = self.written.load(Ordering::Acquire);
        if n <= *synced || written <= *synced {
            return Ok(());
        }
        if let Some(file) = self.file.get() {
            file.sync_data()?;
        }
        *synced = written;
        Ok(())
    }
}

/// The journal's file name in the state directory.
pub(super) const JOURNAL: &str = "counters.journal";

/// Longer than any journal line (a device id, a replay window and two numbers).
const MAX_JOURNAL_LINE: u64 = 64 << 10;

/// The journal's whole lines. A last line without its newline, or that does not parse, was
/// torn by a crash and is dropped; a bad line before the last one is damage.
pub(super) fn read_journal(path: &Path) -> Result<Vec<JournalLine>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(RegistryError::Io { path: path.to_path_buf(), error }),
    };
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After the last newline: empty, or a torn line.
    lines.pop();
    let last = lines.len();
    let mut out = Vec::with_capacity(last);
    for (i, line) in lines.into_iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(l) => out.push(l),
            Err(_) if i + 1 == last => {}
            Err(error) => return Err(RegistryError::Damaged { path: path.to_path_buf(), error }),
        }
    }
    Ok(out)
}

impl Registry {
    /// Opens the journal for appending, once.
    fn open_journal(&mut self) -> Result<(), RegistryError> {
        let path = self.dir.join(JOURNAL);
        let io = |error| RegistryError::Io { path: path.clone(), error };
        if self.journal.is_none() {
            use std::os::unix::fs::OpenOptionsExt as _;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            // A line a crash cut short (loading dropped it) must not become the start of the
            // next one.
            crate::fsutil::cut_torn_line(&file, MAX_JOURNAL_LINE).map_err(io)?;
            // The file's name is durable before anything relies on what it holds.
            std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
            let _ = self.journal_sync.file.set(file.try_clone().map_err(io)?);
            self.journal = Some(file);
        }
        Ok(())
    }

    /// Appends one line to the journal (synced by [`JournalSync`]).
    fn journal_append(&mut self, line: &JournalLine) -> Result<(), RegistryError> {
        use std::io::Write as _;
        self.open_journal()?;
        let path = self.dir.join(JOURNAL);
        let io = |error| RegistryError::Io { path: path.clone(), error };
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        let journal = self.journal.as_mut().ok_or_else(|| io(std::io::Error::other("closed")))?;
        // One write: a crash (or a kill while it crosses a page) leaves the whole line or a torn
        // one, which loading drops and the next append cuts off first.
        journal.write_all(&bytes).map_err(io)?;
        self.journal_sync.written.store(line.n, Ordering::Release);
        self.journal_lines += 1;
        Ok(())
    }

    /// Records a verified message from `id`: its window after the message, and the time.
    /// Written before returning, durable at the next [`JournalSync::sync`].
    pub fn accepted(
        &mut self,
        id: &DeviceId,
        rx: ReplayState,
        now_ms: u64,
    ) -> Result<(), RegistryError> {
        self.journal_n += 1;
        let line = JournalLine {
            n: self.journal_n,
            id: *id,
            rx: Some(rx),
            seen_ms: Some(now_ms),
            tx_reserved: None,
        };
        self.journal_append(&line)?;
        let counters = self.counters.entry(*id).or_default();
        counters.rx = rx;
        counters.last_seen_ms = Some(now_ms);
        Ok(())
    }

    /// Makes the registry ready to serve before any device talks, so that no message waits
    /// for the disk later: the journal is opened (a torn last line cut off), and every paired
    /// device gets a fresh block of counters, written with the state whole (which empties the
    /// journal).
    pub fn prepare(&mut self) -> Result<(), RegistryError> {
        for (id, next) in &self.tx_next {
            if let Some(c) = self.counters.get_mut(id) {
                c.tx_reserved = c.tx_reserved.max(next.saturating_add(TX_BLOCK - 1));
            }
        }
        self.save_counters()?;
        self.open_journal()
    }

    /// Whether the journal is long enough to be folded into `counters.json`
    /// ([`JOURNAL_COMPACT`] lines).
    pub fn compaction_due(&self) -> bool {
        self.journal_lines >= JOURNAL_COMPACT
    }

    /// The state as `counters.json` would hold it now, to be written without the registry's
    /// lock ([`Compaction::write`]) and then folded in ([`Registry::compacted`]).
    pub fn compaction(&self) -> Compaction {
        let file = CountersFile { journal: self.journal_n, devices: self.counters.clone() };
        Compaction {
            path: self.dir.join("counters.json"),
            journal_n: self.journal_n,
            saves: self.saves,
            file: self.counters_file.clone(),
            bytes: serde_json::to_vec_pretty(&file).unwrap_or_default(),
        }
    }

    /// After a [`Compaction`] is on disk: the journal is emptied unless lines came meanwhile
    /// (they are not in the file; the next compaction takes them). The emptying needs no sync
    /// of its own: the lines it drops are in the file already, and the journal's next sync
    /// makes it durable with the lines after it.
    /// Returns whether the journal was emptied.
    pub fn compacted(&mut self, done: &Compaction) -> Result<bool, RegistryError> {
        self.tx_ahead.retain(|_, (line, _)| *line > done.journal_n);
        if self.journal_n != done.journal_n {
            return Ok(false);
        }
        if let Some(journal) = &self.journal {
            let path = self.dir.join(JOURNAL);
            journal.set_len(0).map_err(|error| RegistryError::Io { path, error })?;
        }
        self.journal_lines = 0;
        Ok(true)
    }

    /// The next counter towards `id` (see [`TX_BLOCK`]): from a block whose reservation is on
    /// disk, waiting for the sync of the one reserved ahead if it is not yet; with no block
    /// left, a new one is written whole first.
    pub fn next_tx(&mut self, id: &DeviceId) -> Result<Tx, RegistryError> {
        let next = self.tx_next.get(id).copied().unwrap_or(1);
        // The last counter is never handed out, so that none is handed out twice.
        let after =
            next.checked_add(1).filter(|&a| a < u64::MAX).ok_or(RegistryError::Exhausted(*id))?;
        if let Some(&(line, durable)) = self.tx_ahead.get(id)
            && next > durable
        {
            let path = self.dir.join(JOURNAL);
            self.journal_sync
                .sync_through(line)
                .map_err(|error| RegistryError::Io { path, error })?;
            self.tx_ahead.remove(id);
        }
        let reserved = self.counters.entry(*id).or_default().tx_reserved;
        let mut reserved_ahead = false;
        if next > reserved {
            self.counters.entry(*id).or_default().tx_reserved = next.saturating_add(TX_BLOCK - 1);
            self.save_counters()?;
        } else if reserved - next < TX_BLOCK / 4 && !self.tx_ahead.contains_key(id) {
            self.journal_n += 1;
            let line = JournalLine {
                n: self.journal_n,
                id: *id,
                rx: None,
                seen_ms: None,
                tx_reserved: Some(reserved.saturating_add(TX_BLOCK)),
            };
            match self.journal_append(&line) {
                Ok(()) => {
                    self.counters.entry(*id).or_default().tx_reserved =
                        reserved.saturating_add(TX_BLOCK);
                    self.tx_ahead.insert(*id, (line.n, reserved));
                    reserved_ahead = true;
                }
                // Reserved when it is needed instead, where an error stops the event.
                Err(e) => tracing::warn!("cannot reserve counters ahead: {e}"),
            }
        }
        self.tx_next.insert(*id, after);
        Ok(Tx { counter: next, reserved_ahead })
    }
}
