//! The audit log: append-only JSON lines, each hash-chained to the one before, on disk before
//! any action they lead to runs.
//!
//! ```text
//! {"seq":1,"time_ms":…,"prev":"000…0","event":{…}}
//! {"seq":2,"time_ms":…,"prev":"<SHA-256 of line 1's bytes>","event":{…}}
//! ```
//!
//! `prev` is the SHA-256 of the previous line exactly as written (without its newline), so
//! changing any byte of a record breaks the link of the next one; `seq` counts from 1 without
//! gaps, so a removed, inserted or reordered record is named as such. A chain alone cannot show
//! that its *last* record was changed or removed, so every append also records the last `seq`
//! and hash in `audit.head`; [`verify`] checks the chain against it.
//!
//! `audit.head` has two fixed-size slots in blocks of their own, each with a checksum; the
//! head is the valid slot with the higher `seq`. Updates go in place into the slot that does
//! not hold the head on disk, until a sync puts them there; then the other slot takes the
//! next ones. A write torn by a crash spoils that slot only and leaves the other, an earlier
//! head, which is the state of a writer stopped between records and their head, completed at
//! the next open. So each update is atomic (whole, or absent and said so) by double buffering
//! rather than by a temporary file and a rename. The file is first made, or converted from an earlier
//! version's single object, by a temporary file and a rename.
//!
//! Someone who can rewrite both files and recompute every hash is not stopped by this (that
//! needs the host's signature on the head, held by devices: a later step).
//!
//! A line is written with one `write`. A writer killed during it can still leave that line torn
//! where the write crossed a page (Linux ends a write at a page boundary once the process has
//! been killed), as a power loss can; a torn last line is cut off when the log is next opened,
//! and said so. Nothing followed a torn record: the host acts only after its record is synced.
//!
//! Writing and syncing are apart, as in a database's group commit: [`AuditLog::append_deferred`]
//! writes a record at once, and [`AuditLog::sync`] makes every record written so far durable
//! with one `fdatasync` however many records it covers, then writes the head naming the last
//! (at once for every reader; on disk by [`AuditLog::sync_head`] just after). The host syncs
//! before anything takes effect (an action starts, an agent is told yes), so every record an
//! action follows is on disk before it runs; the records of what took no effect (a request
//! shown, a refusal, a result) and the head are synced in the background a moment later, and a
//! power loss in between loses those records whole, never a record an action followed.
//! [`AuditLog::append`] does it all at once. A writer lets at most [`MAX_UNSYNCED`] records
//! wait for a sync, and the head on disk fall that far behind, so a writer stopped in between
//! leaves at most [`MAX_AHEAD`] records past the head on disk, which the next open completes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil::write_atomic;

/// The longest record accepted when reading; a longer line is malformed.
const MAX_LINE: usize = 1 << 20;

/// The most records a writer lets wait for a sync: one more, and it syncs before going on.
pub const MAX_UNSYNCED: u64 = 32;

/// The most records past the head that opening completes: those a writer stopped before
/// syncing (at most [`MAX_UNSYNCED`]), plus those synced whose head had not reached the disk
/// (fewer than [`MAX_UNSYNCED`]). More than that is not the trace of a stop, and the log does
/// not verify.
pub const MAX_AHEAD: u64 = 2 * MAX_UNSYNCED + 1;

/// What happened, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A request was judged by policy.
    Request {
        /// Its id.
        request: String,
        /// Who asked (`dev1…`, `local:terminal`, `hook:claude-code`).
        actor: String,
        /// The action, as JSON.
        action: serde_json::Value,
        /// SHA-256 of the action's canonical bytes.
        action_hash: String,
        /// allow, ask or deny.
        decision: String,
        /// Why.
        reason: String,
        /// The rule that decided, if one did.
        rule: Option<String>,
    },
    /// A pending action was answered.
    Approval {
        /// The request.
        request: String,
        /// approve or deny.
        verdict: String,
        /// Who answered.
        by: String,
        /// The action hash the answer named.
        action_hash: String,
        /// What the person said with it (a denial's reason, an approval's note).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An action is about to run (written and flushed before it starts).
    Start {
        /// The request.
        request: String,
    },
    /// An action finished.
    Result {
        /// The request.
        request: String,
        /// Exit code, if a command.
        exit_code: Option<i32>,
        /// One line for people.
        summary: String,
    },
    /// The device list changed: a device paired, revoked, renamed, or given another role.
    Device {
        /// `dev1…`
        device: String,
        /// What happened, for people.
        change: String,
    },
    /// A frame or request was refused before it was judged (bad signature, replay, …).
    Refused {
        /// Who it claimed to be from.
        claimed_sender: String,
        /// Why.
        reason: String,
    },
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position, from 1.
    pub seq: u64,
    /// When it was written (Unix ms).
    pub time_ms: u64,
    /// SHA-256 (hex) of the previous line's bytes; 64 zeros for the first.
    pub prev: String,
    /// What happened.
    pub event: Event,
}

/// What `audit.head` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    /// [`head_check`] of the two above: tells a whole slot from a torn one. (Absent in a head
    /// written by an earlier version, a single JSON object.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<String>,
}

/// The size of one slot of `audit.head`: the JSON padded with spaces, then a newline.
const HEAD_SLOT: usize = 192;

/// Where the second slot starts: a block of its own, so that a torn write of one slot's block
/// cannot touch the other.
const HEAD_STRIDE: usize = 4096;

/// The size of `audit.head`.
const HEAD_LEN: usize = HEAD_STRIDE + HEAD_SLOT;

fn head_check(seq: u64, hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"agent-bridge audit head v1\0");
    h.update(seq.to_be_bytes());
    h.update(hash.as_bytes());
    hex::encode(&h.finalize()[..8])
}

fn head_slot(seq: u64, hash: &str) -> Vec<u8> {
    let head = Head { seq, hash: hash.to_string(), check: Some(head_check(seq, hash)) };
    let mut slot = serde_json::to_vec(&head).unwrap_or_default();
    slot.resize(HEAD_SLOT - 1, b' ');
    slot.push(b'\n');
    slot
}

/// The head in `bytes` (two slots, or an earlier version's single object), if any is whole,
/// with the slot it is in (0 for the single object).
fn parse_head(bytes: &[u8]) -> Option<(Head, usize)> {
    if bytes.len() != HEAD_LEN {
        return serde_json::from_slice::<Head>(bytes)
            .ok()
            .filter(|h| h.check.is_none())
            .map(|h| (h, 0));
    }
    [&bytes[..HEAD_SLOT], &bytes[HEAD_STRIDE..]]
        .into_iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            serde_json::from_slice::<Head>(slot.trim_ascii_end()).ok().map(|h| (h, i))
        })
        .filter(|(h, _)| h.check.as_deref() == Some(head_check(h.seq, &h.hash).as_str()))
        .max_by_key(|(h, _)| h.seq)
}

/// `audit.head`, open for writing its slots in place.
#[derive(Debug)]
struct HeadFile {
    path: PathBuf,
    /// None until the head exists in the two-slot form.
    file: Option<File>,
    /// The slot that holds the newest head on disk (synced), and its seq. It is not written
    /// until the other one is synced: a crash can tear only the other.
    durable: (usize, u64),
    /// The seq written to the other slot and not yet synced.
    pending: Option<u64>,
}

impl HeadFile {
    fn open(path: &Path) -> Result<Self, AuditError> {
        let (file, durable) = match fs::read(path) {
            Ok(bytes) if bytes.len() == HEAD_LEN => {
                let newest = parse_head(&bytes).map_or((0, 0), |(head, slot)| (slot, head.seq));
                (Some(OpenOptions::new().write(true).open(path).map_err(io_err(path))?), newest)
            }
            _ => (None, (0, 0)),
        };
        Ok(Self { path: path.to_path_buf(), file, durable, pending: None })
    }

    /// Records `seq`/`hash` in the slot that does not hold the head on disk, on disk at the
    /// next [`Self::sync`]. The first time (no head yet, or an earlier version's), the whole
    /// file is written atomically instead; the other slot then holds a lower `seq` that no
    /// check relies on.
    fn write(&mut self, seq: u64, hash: &str) -> Result<(), AuditError> {
        use std::os::unix::fs::FileExt as _;
        let Some(file) = &self.file else {
            let (this, other) = (head_slot(seq, hash), head_slot(seq.saturating_sub(1), GENESIS));
            let slot = (seq % 2) as usize;
            let (mut first, second) = if slot == 0 { (this, other) } else { (other, this) };
            first.resize(HEAD_STRIDE - 1, b' ');
            first.push(b'\n');
            first.extend_from_slice(&second);
            write_atomic(&self.path, &first, 0o600).map_err(io_err(&self.path))?;
            self.file =
                Some(OpenOptions::new().write(true).open(&self.path).map_err(io_err(&self.path))?);
            (self.durable, self.pending) = ((slot, seq), None);
            return Ok(());
        };
        let slot = 1 - self.durable.0;
        file.write_all_at(&head_slot(seq, hash), (slot * HEAD_STRIDE) as u64)
            .map_err(io_err(&self.path))?;
        self.pending = Some(seq);
        Ok(())
    }

    /// Puts the last head written on disk; it then holds the slot the next one avoids.
    fn sync(&mut self) -> Result<(), AuditError> {
        let (Some(file), Some(seq)) = (&self.file, self.pending) else { return Ok(()) };
        file.sync_data().map_err(io_err(&self.path))?;
        (self.durable, self.pending) = ((1 - self.durable.0, seq), None);
        Ok(())
    }
}

/// Why the log does not verify, naming the record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// A line is not a record.
    #[error("line {line} is not a valid record: {reason}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record's `seq` is not the next number.
    #[error("line {line} has seq {found} where {expected} belongs: {what}")]
    Sequence {
        /// 1-based line number.
        line: u64,
        /// The seq that belongs there.
        expected: u64,
        /// The seq found.
        found: u64,
        /// removed, inserted or reordered.
        what: &'static str,
    },
    /// A record's `prev` is not the hash of the line before: that line was edited.
    #[error("record {seq} does not follow record {previous}: record {previous} was edited")]
    Edited {
        /// The record whose link broke.
        seq: u64,
        /// The record that must have changed.
        previous: u64,
    },
    /// The last record is not the one `audit.head` names.
    #[error("the log ends at record {last} but audit.head names record {head}: {what}")]
    Head {
        /// The last record in the log.
        last: u64,
        /// The record the head names.
        head: u64,
        /// What that means.
        what: &'static str,
    },
    /// Another process holds the log open for writing.
    #[error("{0} is locked by another writer")]
    Locked(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |error| AuditError::Io { path: path.to_path_buf(), error }
}

fn hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// How [`verify`] words a log that holds records past its head.
pub const AHEAD_OF_HEAD: &str = "records follow the one audit.head names (a writer stopped between a record and its head, or an append behind the host's back)";

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The writer. One per log: the file is locked while it is open. Shared between threads:
/// records are written under one lock and synced under another, so that a sync in progress
/// does not hold up the next record.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    syncer: Mutex<Syncer>,
    /// The last seq synced (its line on disk, the head naming it written).
    synced: AtomicU64,
    /// Set when opening cut off a torn last line or completed the head.
    pub recovered: Option<String>,
}

#[derive(Debug)]
struct Writer {
    file: File,
    seq: u64,
    last_hash: String,
}

#[derive(Debug)]
struct Syncer {
    /// The log, a second handle to sync it by.
    file: File,
    head: HeadFile,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update under these locks is one call that leaves the state whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, verifying it whole first: a host refuses to
    /// append to a log that does not verify.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, &mut |_| {})
    }

    /// [`Self::open`], showing `visit` each record of the log, in order, once it is checked
    /// (so that what a host needs from its past takes no second read).
    pub fn open_with(path: &Path, visit: &mut dyn FnMut(&Record)) -> Result<Self, AuditError> {
        let head_path = head_path(path);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        file.try_lock().map_err(|_| AuditError::Locked(path.to_path_buf()))?;
        let mut recovered = cut_torn_tail(&file, path)?;
        let mut head_behind = false;
        // As `verify` does, but no one else writes the log: every record must be in the head.
        let read = read_head(path)?;
        let verified = verify_chain(path, false, visit)?;
        match check_head(read.as_ref(), &verified) {
            // A writer that stopped after writing records but before recording them in the
            // head leaves them past it: finish its work.
            Err(AuditError::Head { last, head, what: AHEAD_OF_HEAD })
                if last <= head + MAX_AHEAD =>
            {
                let moved = format!(
                    "audit.head moved from record {head} to {last}, written just before a stop"
                );
                // Both may be needed at one open: say both.
                recovered = Some(match recovered {
                    Some(cut) => format!("{cut}; {moved}"),
                    None => moved,
                });
                head_behind = true;
            }
            other => other?,
        }
        let (seq, last_hash) = match verified {
            Verified { last: Some((seq, hash)), .. } => (seq, hash),
            Verified { last: None, .. } => (0, GENESIS.to_string()),
        };
        let mut head = HeadFile::open(&head_path)?;
        // A head to complete, or one in an earlier version's form, is written now.
        // A new log gets its head at once (naming no record), so that records written and not
        // yet synced are past a head from the start.
        if head.file.is_none() || head_behind {
            file.sync_data().map_err(io_err(path))?;
            head.write(seq, &last_hash)?;
            head.sync()?;
        }
        let syncer = Syncer { file: file.try_clone().map_err(io_err(path))?, head };
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer { file, seq, last_hash }),
            syncer: Mutex::new(syncer),
            synced: AtomicU64::new(seq),
            recovered,
        })
    }

    /// Appends `event` and makes it durable, with every record before it, and the head naming
    /// it (see [`Self::sync`] and [`Self::sync_head`]), before returning.
    pub fn append(&self, time_ms: u64, event: Event) -> Result<Record, AuditError> {
        let record = self.append_deferred(time_ms, event)?;
        self.sync()?;
        self.sync_head()?;
        Ok(record)
    }

    /// Appends `event`: written at once (a killed process keeps it), durable at the next
    /// [`Self::sync`]. When [`MAX_UNSYNCED`] records already wait, syncs first.
    pub fn append_deferred(&self, time_ms: u64, event: Event) -> Result<Record, AuditError> {
        let record = {
            let mut writer = locked(&self.writer);
            if writer.seq >= self.synced.load(Ordering::Acquire) + MAX_UNSYNCED {
                drop(writer);
                self.sync()?;
                writer = locked(&self.writer);
            }
            let record =
                Record { seq: writer.seq + 1, time_ms, prev: writer.last_hash.clone(), event };
            let mut line = serde_json::to_vec(&record)
                .map_err(|e| AuditError::Malformed { line: record.seq, reason: e.to_string() })?;
            let line_hash = hash(&line);
            line.push(b'\n');
            // One write call; a kill during it may still tear the line at a page boundary, and
            // the next open cuts a torn last line off.
            writer.file.write_all(&line).map_err(io_err(&self.path))?;
            writer.seq = record.seq;
            writer.last_hash = line_hash;
            record
        };
        Ok(record)
    }

    /// Makes every record written so far durable: the log's data synced, then the head moved
    /// to the last record (written at once for every reader, synced by [`Self::sync_head`], or
    /// here when the head on disk is [`MAX_UNSYNCED`] records behind). Nothing to do when that
    /// is done already.
    pub fn sync(&self) -> Result<(), AuditError> {
        let mut syncer = locked(&self.syncer);
        let (seq, hash) = {
            let writer = locked(&self.writer);
            (writer.seq, writer.last_hash.clone())
        };
        if seq <= self.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        syncer.file.sync_data().map_err(io_err(&self.path))?;
        syncer.head.write(seq, &hash)?;
        self.synced.store(seq, Ordering::Release);
        if seq >= syncer.head.durable.1 + MAX_UNSYNCED {
            syncer.head.sync()?;
        }
        Ok(())
    }

    /// Puts the head on disk as [`Self::sync`] last wrote it.
    pub fn sync_head(&self) -> Result<(), AuditError> {
        locked(&self.syncer).head.sync()
    }

    /// The last seq written.
    pub fn seq(&self) -> u64 {
        locked(&self.writer).seq
    }
}

impl Drop for AuditLog {
    /// A writer that stops syncs what it wrote.
    fn drop(&mut self) {
        if let Err(e) = self.sync().and_then(|()| self.sync_head()) {
            tracing::error!("audit: {e}");
        }
    }
}

/// `audit.jsonl` → `audit.head` beside it.
fn head_path(path: &Path) -> PathBuf {
    path.with_extension("head")
}

/// Cuts a last line that has no newline (a write torn by a power loss, or by a kill while it
/// crossed a page). Returns what was cut.
fn cut_torn_tail(file: &File, path: &Path) -> Result<Option<String>, AuditError> {
    let cut = crate::fsutil::cut_torn_line(file, MAX_LINE as u64 + 1).map_err(io_err(path))?;
    Ok((cut > 0).then(|| format!("cut a torn last line of {cut} bytes")))
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// How many records.
    pub records: u64,
    /// The last record's seq and hash.
    pub last: Option<(u64, String)>,
    /// Records past the head that the host writing the log has not synced yet.
    pub unsynced: u64,
}

/// Checks the whole log and its head. Names the first record that is wrong. While a host
/// writes the log (it holds the log's lock), up to [`MAX_AHEAD`] records past the head are
/// records written and not yet synced, and a last line without its newline is one being
/// written (left out), not a fault.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let live = written_now(path);
    // The head first: a writer moves it only to records already written, so the log read
    // after it holds every record it names.
    let head = read_head(path)?;
    let verified = verify_chain(path, live, &mut |_| {})?;
    match check_head(head.as_ref(), &verified) {
        Err(AuditError::Head { last, head, what: AHEAD_OF_HEAD })
            if last <= head + MAX_AHEAD && (live || written_now(path)) =>
        {
            Ok(Verified { unsynced: last - head, ..verified })
        }
        checked => checked.map(|()| verified),
    }
}

/// Whether a writer holds the log open (and locked) now.
fn written_now(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)))
}

/// Checks the chain alone, a line at a time: a log of any length needs no more memory than
/// its longest line. Names the first line that is wrong; shows `visit` each record once it is
/// checked. With `being_written` (a writer holds the log), a last line without its newline is
/// one the writer is in the middle of, and is left out.
fn verify_chain(
    path: &Path,
    being_written: bool,
    visit: &mut dyn FnMut(&Record),
) -> Result<Verified, AuditError> {
    use std::io::BufRead as _;
    let mut file = File::open(path).map_err(io_err(path))?;
    // Up to the length seen now: a writer appending meanwhile is not read half-way.
    let mut len = file.metadata().map_err(io_err(path))?.len();
    // A torn last line is named as such, whatever comes before it (unless a writer is in the
    // middle of it).
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .and_then(|()| file.rewind())
            .map_err(io_err(path))?;
        if last[0] != b'\n' {
            let whole = crate::fsutil::whole_lines_end(&file, len, MAX_LINE as u64 + 1)
                .map_err(io_err(path))?;
            match whole {
                Some(whole) if being_written => len = whole,
                _ => {
                    let line = newlines(&mut file).map_err(io_err(path))? + 1;
                    let reason = if whole.is_some() {
                        "no newline at the end (a torn write, which the host cuts off when it \
                         next opens the log)"
                    } else {
                        "no newline at the end, and longer than a record: not a torn write"
                    };
                    return Err(AuditError::Malformed { line, reason: reason.into() });
                }
            }
        }
    }
    let mut reader = io::BufReader::new(file.take(len));
    let mut line = Vec::new();
    let (mut line_no, mut expected_seq, mut prev_hash) = (0u64, 1u64, GENESIS.to_string());
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line);
        if read.map_err(io_err(path))? == 0 {
            break;
        }
        if line.pop() != Some(b'\n') {
            return Err(AuditError::Malformed { line: line_no + 1, reason: "too long".into() });
        }
        if line.is_empty() {
            continue;
        }
        line_no += 1;
        let record: Record = serde_json::from_slice(&line)
            .map_err(|e| AuditError::Malformed { line: line_no, reason: e.to_string() })?;
        if record.seq != expected_seq {
            let what = if record.seq < expected_seq {
                "a record was inserted (or repeated)"
            } else if comes_later(&mut reader, expected_seq) {
                "records were reordered"
            } else {
                "a record was removed"
            };
            return Err(AuditError::Sequence {
                line: line_no,
                expected: expected_seq,
                found: record.seq,
                what,
            });
        }
        if record.prev != prev_hash {
            return Err(AuditError::Edited { seq: record.seq, previous: record.seq - 1 });
        }
        prev_hash = hash(&line);
        expected_seq += 1;
        visit(&record);
    }
    let records = expected_seq - 1;
    let last = (records > 0).then_some((records, prev_hash));
    Ok(Verified { records, last, unsynced: 0 })
}

/// How many lines `reader` holds from where it is.
fn newlines(reader: &mut impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(count),
            Ok(n) => count += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether a record numbered `seq` comes in what is left of `reader` (to tell a reordered log
/// from one with a record removed).
fn comes_later(reader: impl io::BufRead, seq: u64) -> bool {
    reader
        .split(b'\n')
        .map_while(Result::ok)
        .any(|line| serde_json::from_slice::<Record>(&line).is_ok_and(|record| record.seq == seq))
}

/// The head of the log at `path`; `None` if there is no head file.
fn read_head(path: &Path) -> Result<Option<Head>, AuditError> {
    let head_path = head_path(path);
    match fs::read(&head_path) {
        Ok(bytes) => match parse_head(&bytes) {
            Some((head, _)) => Ok(Some(head)),
            None => Err(AuditError::Malformed {
                line: 0,
                reason: format!("{}: holds no whole head", head_path.display()),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::Io { path: head_path, error: e }),
    }
}

/// Checks that the head names the chain's last record.
fn check_head(head: Option<&Head>, verified: &Verified) -> Result<(), AuditError> {
    let last = &verified.last;
    match (head, last) {
        (None, None) => {}
        (None, Some((seq, _))) => {
            return Err(AuditError::Head { last: *seq, head: 0, what: "audit.head is missing" });
        }
        (Some(h), None) if h.seq == 0 => {}
        (Some(h), None) => {
            return Err(AuditError::Head { last: 0, head: h.seq, what: "records were removed" });
        }
        (Some(h), Some((seq, hash))) => {
            if h.seq > *seq {
                return Err(AuditError::Head {
                    last: *seq,
                    head: h.seq,
                    what: "the last records were removed",
                });
            }
            if h.seq < *seq {
                return Err(AuditError::Head { last: *seq, head: h.seq, what: AHEAD_OF_HEAD });
            }
            if &h.hash != hash {
                return Err(AuditError::Head {
                    last: *seq,
                    head: h.seq,
                    what: "the last record was edited",
                });
            }
        }
    }
    Ok(())
}

/// Reads every record (for `audit tail`); stops at the first line that is not a record.
pub fn read_records(path: &Path) -> Result<Vec<Record>, AuditError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| AuditError::Malformed { line: i as u64 + 1, reason: e.to_string() })
        })
        .collect()
}

/// One readable line for a record, devices named by `name_of` where it knows them (by their
/// id as the log has it).
pub fn describe(record: &Record, name_of: &dyn Fn(&str) -> Option<String>) -> String {
    let who = |label: &str| match label.parse::<protocol::DeviceId>() {
        Ok(_) => name_of(label).map_or_else(|| label.to_string(), |n| format!("\"{n}\"")),
        Err(_) => label.to_string(),
    };
    let what = match &record.event {
        Event::Request { request, actor, action_hash, decision, reason, rule, .. } => format!(
            "request {request} from {}: {decision} ({reason}{}) action {}",
            who(actor),
            rule.as_ref().map(|r| format!("; rule {r}")).unwrap_or_default(),
            &action_hash[..action_hash.len().min(12)]
        ),
        Event::Approval { request, verdict, by, note, .. } => {
            let note = note.as_deref().map(|n| format!(": {n:?}")).unwrap_or_default();
            format!("request {request}: {verdict} by {}{note}", who(by))
        }
        Event::Start { request } => format!("request {request}: started"),
        Event::Result { request, exit_code, summary } => format!(
            "request {request}: finished{} {summary}",
            exit_code.map(|c| format!(" with exit code {c},")).unwrap_or_default()
        ),
        Event::Refused { claimed_sender, reason } => {
            format!("refused a frame from {claimed_sender}: {reason}")
        }
        Event::Device { device, change } => format!("device {}: {change}", who(device)),
    };
    format!("#{:<5} {} {what}", record.seq, time_for_people(record.time_ms))
}

/// A time in Unix ms as people read it (RFC 3339, UTC, to the second); past the year 9999,
/// which RFC 3339 cannot write, the number itself.
pub fn time_for_people(ms: u64) -> String {
    /// 10000-01-01T00:00:00Z.
    const PAST_RFC3339_MS: u64 = 253_402_300_800_000;
    if ms >= PAST_RFC3339_MS {
        return format!("{ms} ms after 1970");
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer: a record dated past the year 9999 (a damaged or forged log) made
    /// `audit tail` panic on RFC 3339's limit.
    #[test]
    fn any_time_in_a_record_can_be_shown() {
        assert_eq!(time_for_people(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(time_for_people(253_402_300_799_999), "9999-12-31T23:59:59Z");
        assert_eq!(time_for_people(u64::MAX), format!("{} ms after 1970", u64::MAX));
        let record = Record {
            seq: 3,
            time_ms: 1_767_220_225_600_001,
            prev: GENESIS.into(),
            event: Event::Start { request: "07".repeat(16) },
        };
        assert!(describe(&record, &|_| None).contains("1767220225600001 ms after 1970"));
    }
}
