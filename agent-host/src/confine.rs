//! Confined file operations: read, list, write and edit inside the workspace roots, with the
//! kernel doing the confining.
//!
//! Every path is opened with `openat2(root_fd, relative, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! from a directory descriptor held for each root, so `..`, absolute symlinks, symlink chains,
//! `/proc/self/…` magic links and a directory swapped for a symlink after any check are all
//! resolved by the kernel at the moment of use, and anything that would leave the root fails
//! with `EXDEV`. No path string is ever trusted to mean the same thing twice.
//!
//! Beyond what resolution can see:
//! - a file with more than one hard link is refused for reading (its other name may be outside);
//!   writes never modify an inode in place (temp file, fsync, rename), so a hard link cannot
//!   carry a write out;
//! - the final component is opened with `O_NOFOLLOW`: a symlink is not read or written through;
//! - sizes are capped ([`MAX_READ`], [`MAX_WRITE`], [`MAX_ENTRIES`]).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The largest file read.
pub const MAX_READ: u64 = 8 << 20;
/// The largest content written.
pub const MAX_WRITE: usize = protocol::limits::MAX_CONTENT;
/// The most entries a listing returns.
pub const MAX_ENTRIES: usize = protocol::limits::MAX_LIST_ENTRIES;

/// Why a file operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The path is, or resolves, outside every workspace root.
    #[error("{0} is outside the workspace")]
    OutsideWorkspace(String),
    /// The final component is a symlink (not followed for reading or writing).
    #[error("{0} is a symlink; it is not followed")]
    Symlink(String),
    /// A regular file with several hard links: one of them may be outside the workspace.
    #[error("{0} has {1} hard links; one may be outside the workspace")]
    HardLinked(String, u64),
    /// Not a regular file (or not a directory, for a listing).
    #[error("{0} is not a {1}")]
    WrongType(String, &'static str),
    /// Over a size limit.
    #[error("{path} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An edit's old text does not occur.
    #[error("the text to replace does not occur in {0}")]
    OldTextMissing(String),
    /// An edit's old text occurs more than once.
    #[error("the text to replace occurs {1} times in {0}; it must be unique")]
    OldTextNotUnique(String, usize),
    /// The file is not UTF-8 (edits work on text).
    #[error("{0} is not UTF-8 text")]
    NotText(String),
    /// The kernel has no `openat2` (Linux before 5.6): confinement cannot be guaranteed.
    #[error("this kernel has no openat2; file operations are refused rather than unconfined")]
    Unsupported,
    /// Any other failure of the operating system.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

/// One workspace root, held open.
#[derive(Debug)]
struct Root {
    path: PathBuf,
    fd: OwnedFd,
}

/// The workspace roots and the confined operations on them.
#[derive(Debug)]
pub struct Workspace {
    roots: Vec<Root>,
}

/// An entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// The name (lossy UTF-8).
    pub name: String,
    /// file, dir, symlink or other.
    pub kind: &'static str,
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

impl Workspace {
    /// Opens the roots (the first is the main workspace).
    pub fn open(roots: &[PathBuf]) -> Result<Self, FsError> {
        let roots = roots
            .iter()
            .map(|path| {
                let path = path.canonicalize().map_err(io(path))?;
                let fd = rustix::fs::open(
                    &path,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(&path)(e.into()))?;
                Ok(Root { path, fd })
            })
            .collect::<Result<_, FsError>>()?;
        Ok(Self { roots })
    }

    /// The main root.
    pub fn root(&self) -> &Path {
        self.roots.first().map_or(Path::new("/"), |r| r.path.as_path())
    }

    /// Splits `path` (absolute, or relative to the main root) into a root and a path beneath
    /// it. Only lexical: the kernel does the real resolution.
    fn locate(&self, path: &Path) -> Result<(&Root, PathBuf), FsError> {
        let shown = || path.display().to_string();
        let (root, rest) = if path.is_absolute() {
            self.roots
                .iter()
                .filter_map(|r| path.strip_prefix(&r.path).ok().map(|rest| (r, rest)))
                .max_by_key(|(r, _)| r.path.as_os_str().len())
                .ok_or_else(|| FsError::OutsideWorkspace(shown()))?
        } else {
            (self.roots.first().ok_or_else(|| FsError::OutsideWorkspace(shown()))?, path)
        };
        // `..` is left to the kernel (RESOLVE_BENEATH refuses it above the root); only odd
        // components are rejected here.
        if rest.components().any(|c| matches!(c, Component::Prefix(_) | Component::RootDir)) {
            return Err(FsError::OutsideWorkspace(shown()));
        }
        let rest =
            if rest.as_os_str().is_empty() { PathBuf::from(".") } else { rest.to_path_buf() };
        Ok((root, rest))
    }

    fn open_beneath(&self, path: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, FsError> {
        let (root, rest) = self.locate(path)?;
        rustix::fs::openat2(&root.fd, &rest, flags | OFlags::CLOEXEC, mode, beneath())
            .map_err(|e| errno(path, e))
    }

    /// Whether `path` can be used at all, without reading or changing it: it resolves inside a
    /// root and is not a symlink (for a path that does not exist yet, its directory resolves
    /// inside). The operation itself still resolves it again, by the kernel, at the moment of use.
    pub fn usable(&self, path: &Path) -> Result<(), FsError> {
        match self.open_beneath(path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => {
                let stat = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?;
                if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                    return Err(FsError::Symlink(path.display().to_string()));
                }
                Ok(())
            }
            Err(FsError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                let parent =
                    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                self.open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a regular file.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, FsError> {
        let shown = path.display().to_string();
        let fd = self.open_beneath(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(FsError::WrongType(shown, "regular file"));
        }
        if stat.st_nlink > 1 {
            return Err(FsError::HardLinked(shown, stat.st_nlink as u64));
        }
        let size = stat.st_size as u64;
        if size > MAX_READ {
            return Err(FsError::TooLarge { path: shown, size, limit: MAX_READ });
        }
        let mut out = Vec::with_capacity(size as usize);
        // Read one byte past the limit in case the file grew since fstat.
        File::from(fd).take(MAX_READ + 1).read_to_end(&mut out).map_err(io(path))?;
        if out.len() as u64 > MAX_READ {
            return Err(FsError::TooLarge { path: shown, size: out.len() as u64, limit: MAX_READ });
        }
        Ok(out)
    }

    /// Whether `path` is a directory inside a root, as the kernel resolves it.
    pub fn is_dir(&self, path: &Path) -> Result<(), FsError> {
        self.open_beneath(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).map(|_| ())
    }

    /// Lists a directory (names sorted), up to [`MAX_ENTRIES`].
    pub fn list(&self, path: &Path) -> Result<Vec<Entry>, FsError> {
        let fd = self.open_beneath(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| errno(path, e))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| errno(path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            if entries.len() == MAX_ENTRIES {
                return Err(FsError::TooLarge {
                    path: path.display().to_string(),
                    size: MAX_ENTRIES as u64 + 1,
                    limit: MAX_ENTRIES as u64,
                });
            }
            let kind = match entry.file_type() {
                FileType::RegularFile => "file",
                FileType::Directory => "dir",
                FileType::Symlink => "symlink",
                _ => "other",
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Creates or replaces a file atomically: a temporary file beside it, fsync, rename over
    /// the name, fsync the directory. The parent must exist inside the workspace.
    pub fn write(&self, path: &Path, content: &[u8]) -> Result<(), FsError> {
        let shown = path.display().to_string();
        if content.len() > MAX_WRITE {
            return Err(FsError::TooLarge {
                path: shown,
                size: content.len() as u64,
                limit: MAX_WRITE as u64,
            });
        }
        let name =
            path.file_name().ok_or_else(|| FsError::WrongType(shown.clone(), "file name"))?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = self.open_beneath(parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        // Keep an existing file's permissions; refuse to replace a directory or follow a link.
        let mode = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {
                    Mode::from_raw_mode(st.st_mode) & Mode::from_raw_mode(0o777)
                }
                FileType::Symlink => return Err(FsError::Symlink(shown)),
                _ => return Err(FsError::WrongType(shown, "regular file")),
            },
            Err(Errno::NOENT) => Mode::from_raw_mode(0o644),
            Err(e) => return Err(errno(path, e)),
        };
        let tmp_name = format!(".{}.agent-host.{}.tmp", name.to_string_lossy(), std::process::id());
        let tmp = rustix::fs::openat(
            &dir,
            tmp_name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        )
        .map_err(|e| errno(path, e))?;
        let result = (|| {
            let mut file = File::from(tmp);
            file.write_all(content).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
            rustix::fs::renameat(&dir, tmp_name.as_str(), &dir, name)
                .map_err(|e| errno(path, e))?;
            rustix::fs::fsync(&dir).map_err(|e| errno(path, e))
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp_name.as_str(), AtFlags::empty());
        }
        result
    }

    /// Replaces the one occurrence of `old` with `new`.
    pub fn edit(&self, path: &Path, old: &str, new: &str) -> Result<(), FsError> {
        let shown = path.display().to_string();
        let bytes = self.read(path)?;
        let text = String::from_utf8(bytes).map_err(|_| FsError::NotText(shown.clone()))?;
        match text.matches(old).count() {
            0 => return Err(FsError::OldTextMissing(shown)),
            1 => {}
            n => return Err(FsError::OldTextNotUnique(shown, n)),
        }
        self.write(path, text.replacen(old, new, 1).as_bytes())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FsError + '_ {
    move |error| FsError::Io { path: path.display().to_string(), error }
}

fn errno(path: &Path, e: Errno) -> FsError {
    let shown = path.display().to_string();
    match e {
        // RESOLVE_BENEATH refused a step outside the root (`..`, an absolute or escaping link).
        Errno::XDEV => FsError::OutsideWorkspace(shown),
        // O_NOFOLLOW met a symlink as the final component; RESOLVE_NO_MAGICLINKS refused one.
        Errno::LOOP => FsError::Symlink(shown),
        Errno::NOSYS => FsError::Unsupported,
        other => FsError::Io { path: shown, error: other.into() },
    }
}
