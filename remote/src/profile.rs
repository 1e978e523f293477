//! A paired identity on this machine: the device key (mode 0600), what pairing learnt about the
//! host, and the counters, in one directory per profile.
//!
//! `$REMOTE_HOME/<profile>/` when `REMOTE_HOME` is set, else the platform's config directory
//! (`~/.config/agent-bridge-remote/profiles/<profile>/` on Linux). Files:
//! - `device.key`: the 32-byte Ed25519 seed, mode 0600 (refused if others can read it);
//! - `channel.key`: the end-to-end channel's static X25519 private key (`protocol::channel`),
//!   made with the device key, mode 0600;
//! - `pairing.json`: the host's id, the relay, the pinned certificate, the role granted;
//! - `counters.json`: how far this device's counters towards the host are reserved, and the
//!   highest counter it accepted from the host, updated under a lock (`counters.lock`) so that
//!   several `remote` commands at once never reuse a counter. A command reserves a small block
//!   of counters ([`COUNTER_BLOCK`]) at a time, so it writes this file once per block rather
//!   than once per message; blocks of commands running together stay within the host's replay
//!   window of 64, so their messages may interleave. A session that keeps sending reserves its
//!   next block while the last [`RESERVE_AHEAD`] counters of the current one are left, on a
//!   thread of its own, so that its messages do not wait for this file.
//!
//! Every file is replaced atomically (temp file, fsync, rename, fsync of the directory).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use protocol::{HostId, Role, SecretKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// How many counters a command reserves at once.
pub const COUNTER_BLOCK: u64 = 16;

/// With this many counters of its block left, a session reserves the next block in the
/// background. A command that sends fewer than `COUNTER_BLOCK - RESERVE_AHEAD` messages never
/// holds more than its one block.
pub const RESERVE_AHEAD: u64 = COUNTER_BLOCK / 4;

/// What pairing learnt about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pairing {
    /// The host (its key): every event must be signed by it.
    pub host: HostId,
    /// The host's name.
    pub host_name: String,
    /// The relay, `host:port`.
    pub relay: String,
    /// The relay certificate's SHA-256 (hex) when it is pinned.
    pub cert_sha256: Option<String>,
    /// The role the host granted.
    pub role: Role,
    /// When (Unix ms).
    pub paired_at_ms: u64,
    /// The host's static channel key, as its signed answer said (hosts before the channel
    /// send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_channel_key: Option<protocol::ChannelKey>,
}

/// The counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Counters towards the host are used (or reserved) up to here.
    pub sent: u64,
    /// The highest counter accepted from the host.
    pub received: u64,
}

/// Why a profile could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// No home directory to keep profiles in.
    #[error("no home directory: set REMOTE_HOME")]
    NoHome,
    /// Not a name a profile may have.
    #[error("a profile name is letters, digits, `-`, `_` and `.`")]
    BadName,
    /// A file of the profile could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The profile has no key: it was never paired.
    #[error("{}: {error} (pair this profile first: remote pair LINK)", path.display())]
    NoKey {
        /// The key file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The profile has no pairing.
    #[error("this profile is not paired ({}: {error}); run: remote pair LINK", path.display())]
    NotPaired {
        /// The pairing file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Someone else than the owner may read the key.
    #[error("{} is readable by others (mode {mode:o}); refusing it", path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file holds something else than a key.
    #[error("{} is not a 32-byte key", .0.display())]
    NotAKey(PathBuf),
    /// A file is not what this program writes.
    #[error("{} is damaged: {error}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: serde_json::Error,
    },
    /// The system gave no randomness.
    #[error("no randomness: {0}")]
    NoRandomness(getrandom::Error),
    /// A reservation made on a thread of its own was lost (the thread panicked).
    #[error("a counter reservation was lost")]
    Lost,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
    move |error| ProfileError::Io { path: path.to_path_buf(), error }
}

/// One profile's directory.
#[derive(Debug, Clone)]
pub struct Profile {
    dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

impl Profile {
    /// The profile called `name`, in `$REMOTE_HOME` or the platform's config directory.
    pub fn open(name: &str) -> Result<Self, ProfileError> {
        Self::open_in(&Self::base()?, name)
    }

    /// Where the profiles are: `$REMOTE_HOME`, or the platform's config directory.
    fn base() -> Result<PathBuf, ProfileError> {
        Ok(match std::env::var_os("REMOTE_HOME") {
            Some(home) => PathBuf::from(home),
            None => directories::ProjectDirs::from("", "", "agent-bridge-remote")
                .ok_or(ProfileError::NoHome)?
                .config_dir()
                .join("profiles"),
        })
    }

    /// Every profile that is paired (has a `pairing.json`), by name.
    pub fn all() -> Result<Vec<Self>, ProfileError> {
        let base = Self::base()?;
        let entries = match std::fs::read_dir(&base) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(ProfileError::Io { path: base, error }),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("pairing.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names.iter().map(|name| Self::open_in(&base, name)).filter(Result::is_ok).collect()
    }

    /// Its name.
    pub fn name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The profile called `name` under `base`.
    pub fn open_in(base: &Path, name: &str) -> Result<Self, ProfileError> {
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || name.starts_with('.')
        {
            return Err(ProfileError::BadName);
        }
        Ok(Self { dir: base.join(name) })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self) -> Result<(), ProfileError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.dir))
    }

    /// Makes a new device key and channel key (replacing any), with fresh counters. Returns
    /// the device key and the channel key's private half.
    pub fn new_key(&self) -> Result<(SecretKey, Zeroizing<[u8; 32]>), ProfileError> {
        self.ensure_dir()?;
        let (mut seed, mut channel) = (Zeroizing::new([0u8; 32]), Zeroizing::new([0u8; 32]));
        for bytes in [&mut seed, &mut channel] {
            getrandom::fill(bytes.as_mut_slice()).map_err(ProfileError::NoRandomness)?;
        }
        for (file, bytes) in [("device.key", &seed), ("channel.key", &channel)] {
            let path = self.dir.join(file);
            write_atomic(&path, bytes.as_slice(), 0o600).map_err(io(&path))?;
        }
        let _ = std::fs::remove_file(self.dir.join("pairing.json"));
        self.save_counters(Counters::default())?;
        Ok((SecretKey::from_seed(&seed), channel))
    }

    /// The device key.
    pub fn key(&self) -> Result<SecretKey, ProfileError> {
        self.secret("device.key").map(|seed| SecretKey::from_seed(&seed))
    }

    /// The channel key's private half (profiles paired before the channel have none).
    pub fn channel_key(&self) -> Result<Zeroizing<[u8; 32]>, ProfileError> {
        self.secret("channel.key").map(Zeroizing::new)
    }

    /// 32 secret bytes of the profile's, refused if others may read them.
    fn secret(&self, file: &str) -> Result<[u8; 32], ProfileError> {
        let path = self.dir.join(file);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => return Err(ProfileError::NoKey { path, error }),
        };
        let mode = std::fs::metadata(&path).map_err(io(&path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(ProfileError::Exposed { path, mode: mode & 0o777 });
        }
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ProfileError::NotAKey(path))
    }

    /// What pairing learnt.
    pub fn pairing(&self) -> Result<Pairing, ProfileError> {
        let path = self.dir.join("pairing.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => return Err(ProfileError::NotPaired { path, error }),
        };
        serde_json::from_slice(&bytes).map_err(|error| ProfileError::Damaged { path, error })
    }

    /// Records a pairing.
    pub fn save_pairing(&self, pairing: &Pairing) -> Result<(), ProfileError> {
        let path = self.dir.join("pairing.json");
        let bytes = serde_json::to_vec_pretty(pairing)
            .map_err(|error| ProfileError::Damaged { path: path.clone(), error })?;
        write_atomic(&path, &bytes, 0o600).map_err(io(&path))
    }

    fn save_counters(&self, counters: Counters) -> Result<(), ProfileError> {
        let path = self.dir.join("counters.json");
        let bytes = serde_json::to_vec(&counters)
            .map_err(|error| ProfileError::Damaged { path: path.clone(), error })?;
        write_atomic(&path, &bytes, 0o600).map_err(io(&path))
    }

    /// Reserves the next [`COUNTER_BLOCK`] counters towards the host: its first and last.
    pub fn reserve_block(&self) -> Result<(u64, u64), ProfileError> {
        self.update_counters(|c| {
            let first = c.sent + 1;
            c.sent += COUNTER_BLOCK;
            (first, c.sent)
        })
    }

    /// Reads the counters, lets `change` update them, and writes them back, all under the
    /// profile's lock.
    pub fn update_counters<T>(
        &self,
        change: impl FnOnce(&mut Counters) -> T,
    ) -> Result<T, ProfileError> {
        let lock_path = self.dir.join("counters.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ProfileError::Io { path: lock_path.clone(), error: e.into() })?;
        let path = self.dir.join("counters.json");
        let mut counters: Counters = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| ProfileError::Damaged { path: path.clone(), error })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counters::default(),
            Err(error) => return Err(ProfileError::Io { path, error }),
        };
        let out = change(&mut counters);
        self.save_counters(counters)?;
        Ok(out)
    }
}

/// The counters one session uses towards the host, reserved from its profile in blocks.
/// Without a profile (while pairing) they start at 1 and are not recorded.
#[derive(Debug)]
pub struct CounterBlocks {
    profile: Option<Profile>,
    /// The next to use.
    next: u64,
    /// The last of the block in use.
    last: u64,
    /// The next block, being reserved on a thread of its own.
    ahead: Option<std::thread::JoinHandle<Result<(u64, u64), ProfileError>>>,
}

impl CounterBlocks {
    /// Nothing reserved yet: the first counter taken reserves a block.
    pub fn new(profile: Option<Profile>) -> Self {
        Self { profile, next: 1, last: 0, ahead: None }
    }

    /// The next counter. When the block is used up, the next one is the block reserved ahead
    /// ([`Self::reserve_ahead`]), waited for if still being written; if that failed, or none
    /// was reserved ahead, a block is reserved here, and its error returned.
    pub fn take(&mut self) -> Result<u64, ProfileError> {
        if let Some(profile) = &self.profile
            && self.next > self.last
        {
            let ahead = self.ahead.take().and_then(|thread| thread.join().ok()?.ok());
            (self.next, self.last) = match ahead {
                Some(block) => block,
                None => profile.reserve_block()?,
            };
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Once no more than [`RESERVE_AHEAD`] counters of the block are left, starts reserving
    /// the next block in the background. Called after a message is sent, so that the write is
    /// not on its way.
    pub fn reserve_ahead(&mut self) {
        let Some(profile) = &self.profile else { return };
        let left = (self.last + 1).saturating_sub(self.next);
        if left <= RESERVE_AHEAD && self.ahead.is_none() {
            let profile = profile.clone();
            // Without a thread, the block is reserved when it is needed.
            self.ahead = std::thread::Builder::new()
                .name("reserve-counters".into())
                .spawn(move || profile.reserve_block())
                .ok();
        }
    }
}

impl Drop for CounterBlocks {
    /// Lets a reservation under way finish, so that a command that ends leaves no temporary
    /// file behind.
    fn drop(&mut self) {
        if let Some(thread) = self.ahead.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_is_private_and_counters_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile { dir: dir.path().join("p") };
        let (key, channel) = profile.new_key().unwrap();
        for file in ["device.key", "channel.key"] {
            let mode = std::fs::metadata(profile.dir().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert_eq!(profile.key().unwrap().public_key(), key.public_key());
        assert_eq!(*profile.channel_key().unwrap(), *channel);
        assert_ne!(*channel, key.to_seed(), "the channel key is a key of its own");
        let a = profile.update_counters(|c| {
            c.sent += 1;
            c.sent
        });
        let b = profile.update_counters(|c| {
            c.sent += 1;
            c.sent
        });
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
        std::fs::set_permissions(
            profile.dir().join("device.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(profile.key().is_err(), "a key others can read is refused");
        assert!(Profile::open("../x").is_err());
    }

    /// A profile in a new directory.
    fn new_profile() -> (tempfile::TempDir, Profile) {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile { dir: dir.path().join("p") };
        std::fs::create_dir_all(profile.dir()).unwrap();
        (dir, profile)
    }

    fn sent(profile: &Profile) -> u64 {
        profile.update_counters(|c| c.sent).unwrap()
    }

    #[test]
    fn a_session_reserves_its_next_block_ahead_and_never_repeats_a_counter() {
        let (_dir, profile) = new_profile();
        let mut session = CounterBlocks::new(Some(profile.clone()));
        // A command that sends a few messages holds one block and starts no thread.
        let quiet = COUNTER_BLOCK - RESERVE_AHEAD - 1;
        for expected in 1..=quiet {
            assert_eq!(session.take().unwrap(), expected);
            session.reserve_ahead();
        }
        assert!(session.ahead.is_none());
        assert_eq!(sent(&profile), COUNTER_BLOCK);
        // One more and the next block is being reserved while this one still has some left.
        assert_eq!(session.take().unwrap(), quiet + 1);
        session.reserve_ahead();
        let ahead = session.ahead.take().expect("reserving ahead");
        let block = ahead.join().unwrap().unwrap();
        assert_eq!(block, (COUNTER_BLOCK + 1, 2 * COUNTER_BLOCK));
        session.ahead = Some(std::thread::spawn(move || Ok(block)));
        // Another command of the profile takes the block after it meanwhile.
        let mut other = CounterBlocks::new(Some(profile));
        assert_eq!(other.take().unwrap(), 2 * COUNTER_BLOCK + 1);
        let mut taken: Vec<u64> = (0..2 * COUNTER_BLOCK)
            .map(|_| {
                let c = session.take().unwrap();
                session.reserve_ahead();
                c
            })
            .collect();
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "{taken:?}");
        assert_eq!(taken[RESERVE_AHEAD as usize], COUNTER_BLOCK + 1, "the block reserved ahead");
        assert!(!taken.iter().any(|c| (2 * COUNTER_BLOCK + 1..=3 * COUNTER_BLOCK).contains(c)));
        taken.push(other.take().unwrap());
        let unique: std::collections::BTreeSet<u64> = taken.iter().copied().collect();
        assert_eq!(unique.len(), taken.len());
    }

    #[test]
    fn a_block_that_failed_ahead_is_reserved_when_needed() {
        let (_dir, profile) = new_profile();
        let mut session = CounterBlocks::new(Some(profile.clone()));
        for _ in 0..COUNTER_BLOCK {
            session.take().unwrap();
        }
        session.ahead = Some(std::thread::spawn(|| Err(ProfileError::Lost)));
        assert_eq!(session.take().unwrap(), COUNTER_BLOCK + 1);
        assert_eq!(sent(&profile), 2 * COUNTER_BLOCK);
        // Without a profile (pairing), counters simply count from 1.
        let mut pairing = CounterBlocks::new(None);
        assert_eq!((pairing.take().unwrap(), pairing.take().unwrap()), (1, 2));
        pairing.reserve_ahead();
        assert!(pairing.ahead.is_none());
    }
}
