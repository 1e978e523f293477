//! The host's keys: its identity (Ed25519, `host.key`), its end-to-end channel's static X25519
//! key (`channel.key`, see [`protocol::channel`]) and its VAPID key for Web Push (`vapid.key`,
//! see [`crate::push`]), each made on first use in the config directory (mode 0600) and
//! refused if anyone but the owner can read it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use protocol::SecretKey;

/// Why the identity key (or a random id) could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file or its directory could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Someone else than the owner may read the key.
    #[error("{} is readable by others (mode {mode:o}); refusing to use it", path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds something else than a key.
    #[error("{} is not a 32-byte key", .0.display())]
    NotAKey(PathBuf),
    /// The system gave no randomness.
    #[error("no randomness: {0}")]
    NoRandomness(getrandom::Error),
}

/// Loads the identity key at `path`, or makes one there if there is none.
pub fn load_or_create(path: &Path) -> Result<SecretKey, IdentityError> {
    load_or_create_bytes(path).map(|seed| SecretKey::from_seed(&seed))
}

/// Loads the channel's static X25519 private key at `path`, or makes one there if there is
/// none (32 random bytes are one). Wiped from memory when dropped.
pub fn load_or_create_channel(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, IdentityError> {
    load_or_create_secret(path)
}

/// 32 secret bytes kept at `path` (mode 0600), made there from the system's randomness if
/// there are none: the other keys' seeds (the VAPID key's, [`crate::push::VapidKey`]). Wiped
/// from memory when dropped.
pub fn load_or_create_secret(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, IdentityError> {
    load_or_create_bytes(path).map(zeroize::Zeroizing::new)
}

/// 32 secret bytes kept at `path`, made there if there are none.
fn load_or_create_bytes(path: &Path) -> Result<[u8; 32], IdentityError> {
    let io = |at: &Path| {
        let path = at.to_path_buf();
        move |error| IdentityError::Io { path, error }
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(IdentityError::Exposed { path: path.into(), mode: mode & 0o777 });
            }
            bytes.as_slice().try_into().map_err(|_| IdentityError::NotAKey(path.into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(IdentityError::NoRandomness)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(dir))?;
            }
            crate::fsutil::write_atomic(path, &seed, 0o600).map_err(io(path))?;
            Ok(seed)
        }
        Err(error) => Err(IdentityError::Io { path: path.into(), error }),
    }
}

/// 16 random bytes for a request id.
pub fn random_id() -> Result<[u8; 16], IdentityError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(IdentityError::NoRandomness)?;
    Ok(id)
}
