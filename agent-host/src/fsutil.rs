//! Atomic file replacement: a reader (or a crash) sees the old file or the new one, never a mix;
//! and, for files of lines appended one `write` at a time, finding and cutting a torn last line.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory: write, fsync,
/// rename over the old file, fsync the directory. `mode` applies to the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other("a file path has a name"))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Where the last whole line of the first `len` bytes of `file` ends: just past its newline,
/// looking back at most `max_line` bytes (0 when the file is shorter and holds none). `None`
/// when more than `max_line` bytes follow the last newline: that is no line cut short.
pub fn whole_lines_end(file: &File, len: u64, max_line: u64) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt as _;
    let start = len.saturating_sub(max_line);
    let mut tail = vec![0u8; usize::try_from(len - start).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut tail, start)?;
    Ok(match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => Some(start + i as u64 + 1),
        None if start == 0 => Some(0),
        None => None,
    })
}

/// Cuts what follows the last newline of `file` (opened for reading and writing), a line a
/// crash or a kill cut short, so that lines appended later do not join it; syncs the cut.
/// Returns how many bytes were cut. What is longer than `max_line` is left as it is.
pub fn cut_torn_line(file: &File, max_line: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    match whole_lines_end(file, len, max_line)? {
        Some(keep) => {
            file.set_len(keep)?;
            file.sync_all()?;
            Ok(len - keep)
        }
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_anything_longer_than_a_line_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines");
        let open = || fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
        for (content, max, left) in [
            (&b"one\ntwo\n"[..], 8, &b"one\ntwo\n"[..]),
            (b"one\ntwo\nthr", 8, b"one\ntwo\n"),
            (b"thr", 8, b""),
            (b"one\nthreethreethree", 8, b"one\nthreethreethree"),
            (b"", 8, b""),
        ] {
            fs::write(&path, content).unwrap();
            let cut = cut_torn_line(&open(), max).unwrap();
            assert_eq!(fs::read(&path).unwrap(), left, "{:?}", String::from_utf8_lossy(content));
            assert_eq!(cut as usize, content.len() - left.len());
        }
    }

    #[test]
    fn replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
