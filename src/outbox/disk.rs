//! The outbox's view of the disk under it: free space, whether the data directory is still
//! the one the database was opened in, and whether it can be written.
//!
//! The outbox thread (`super::db`) checks these every [`CHECK_EVERY`] and after a failed
//! write: a full disk's lowered bound and lost reserve come back once [`space_back`] says
//! so, and a data directory deleted or replaced under the running gateway is recreated
//! ([`judge_dir`]). The judgements are pure functions of what was read; the reads are the
//! small functions at the top (`statvfs(3)` and `access(2)`, the only unsafe code here).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How often the outbox thread looks at the disk and the data directory.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Free space that must remain after the reserve file is written again before a full disk
/// counts as over: room for the WAL to grow to its checkpoint and a few commits.
pub const SPACE_MARGIN: u64 = 1024 * 1024;

/// Which file a path is: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

/// The identity of `path`; a symlinked data directory is judged by what it points to, as
/// the database was opened through it.
pub fn identity(path: &Path) -> io::Result<Identity> {
    let m = std::fs::metadata(path)?;
    Ok(Identity {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// What `statvfs` says of the file system holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes an unprivileged writer may still use.
    pub free_bytes: u64,
    pub read_only: bool,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Free space and the read-only flag of the file system holding `path`.
#[allow(unsafe_code)]
pub fn room(path: &Path) -> io::Result<Room> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration; `buf` is a
    // zeroed plain C struct that statvfs fills in, and is only read after it succeeded.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut buf) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok(Room {
        free_bytes: (buf.f_bavail as u64).saturating_mul(buf.f_frsize as u64),
        read_only: (buf.f_flag as u64) & (libc::ST_RDONLY as u64) != 0,
    })
}

/// Whether this process may create files in `dir` (`access(2)` with `W_OK`: the process's
/// own permissions, and a read-only mount).
#[allow(unsafe_code)]
pub fn writable(dir: &Path) -> bool {
    let Ok(c) = c_path(dir) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Whether a full disk is over: the reserve file fits again with [`SPACE_MARGIN`] to spare.
pub fn space_back(free_bytes: u64, reserve_bytes: u64) -> bool {
    free_bytes >= reserve_bytes.saturating_add(SPACE_MARGIN)
}

/// What became of the data directory and the database file since they were opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirVerdict {
    /// The same directory and the same database file, writable.
    Same,
    /// The database file (or its whole directory) is gone: the open connection writes to
    /// an unlinked file that nothing will find after a restart.
    Gone,
    /// Another file (or directory) now sits where the database was opened.
    Replaced,
    /// Still the same, but this process can no longer write there.
    NotWritable,
}

/// Judges the data directory from what was read now against what was read at open.
/// `dir_now`/`db_now` are `None` when the path does not exist.
pub fn judge_dir(
    dir_at_open: Identity,
    db_at_open: Identity,
    dir_now: Option<Identity>,
    db_now: Option<Identity>,
    dir_writable: bool,
) -> DirVerdict {
    match (dir_now, db_now) {
        (None, _) | (_, None) => DirVerdict::Gone,
        (Some(dir), Some(db)) if dir != dir_at_open || db != db_at_open => DirVerdict::Replaced,
        _ if !dir_writable => DirVerdict::NotWritable,
        _ => DirVerdict::Same,
    }
}

/// Reads `path`'s identity, `None` when it does not exist; other errors (a permission
/// problem) are reported as the `Err` they are.
pub fn identity_if_present(path: &Path) -> io::Result<Option<Identity>> {
    match identity(path) {
        Ok(id) => Ok(Some(id)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: Identity = Identity { dev: 8, ino: 100 };
    const DB: Identity = Identity { dev: 8, ino: 101 };

    #[test]
    fn the_same_directory_and_file_writable_are_left_alone() {
        assert_eq!(
            judge_dir(DIR, DB, Some(DIR), Some(DB), true),
            DirVerdict::Same
        );
    }

    #[test]
    fn a_missing_directory_or_database_file_is_gone() {
        assert_eq!(judge_dir(DIR, DB, None, None, false), DirVerdict::Gone);
        assert_eq!(judge_dir(DIR, DB, Some(DIR), None, true), DirVerdict::Gone);
    }

    #[test]
    fn a_directory_or_file_made_anew_at_the_same_path_is_replaced() {
        let other_dir = Identity { dev: 8, ino: 200 };
        let other_db = Identity { dev: 8, ino: 201 };
        assert_eq!(
            judge_dir(DIR, DB, Some(other_dir), Some(other_db), true),
            DirVerdict::Replaced
        );
        assert_eq!(
            judge_dir(DIR, DB, Some(DIR), Some(other_db), true),
            DirVerdict::Replaced
        );
        // The same inode number on another device is another file.
        assert_eq!(
            judge_dir(
                DIR,
                DB,
                Some(DIR),
                Some(Identity { dev: 9, ino: 101 }),
                true
            ),
            DirVerdict::Replaced
        );
    }

    #[test]
    fn the_same_directory_that_cannot_be_written_is_reported_as_such() {
        assert_eq!(
            judge_dir(DIR, DB, Some(DIR), Some(DB), false),
            DirVerdict::NotWritable
        );
    }

    #[test]
    fn a_full_disk_is_over_only_when_the_reserve_fits_with_the_margin_to_spare() {
        let reserve = 512 * 1024;
        assert!(!space_back(0, reserve));
        assert!(!space_back(reserve, reserve));
        assert!(!space_back(reserve + SPACE_MARGIN - 1, reserve));
        assert!(space_back(reserve + SPACE_MARGIN, reserve));
        assert!(!space_back(u64::MAX - 1, u64::MAX));
    }

    #[test]
    fn the_room_and_identity_of_a_real_directory_can_be_read() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let room = room(dir.path()).expect("statvfs works on a temp dir");
        assert!(!room.read_only);
        assert!(writable(dir.path()));
        assert!(
            identity_if_present(&dir.path().join("nothing"))
                .expect("reads")
                .is_none()
        );
        assert!(identity_if_present(dir.path()).expect("reads").is_some());
    }
}
