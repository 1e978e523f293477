//! The host's identity key: made on first run in the config directory (mode 0600), refused
//! if anyone but the owner can read it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use protocol::SecretKey;

/// Loads the key at `path`, or makes one there if there is none.
pub fn load_or_create(path: &Path) -> anyhow::Result<SecretKey> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "{} is readable by others (mode {:o}); refusing to use it",
                    path.display(),
                    mode & 0o777
                );
            }
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
            Ok(SecretKey::from_seed(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            crate::fsutil::write_atomic(path, &seed, 0o600)?;
            Ok(SecretKey::from_seed(&seed))
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// 16 random bytes for a request id.
pub fn random_id() -> anyhow::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(id)
}
