//! A small disk for a test to fill: a tmpfs mounted on one of its directories (root only, as
//! CI runs), unmounted when the test ends however it ends, and a filler file that takes it to
//! the last byte.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mounts a tmpfs of `bytes` on `dir`; false if this machine does not allow it (not root).
pub fn mount_tmpfs(dir: &Path, bytes: u64) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts on drop, so a failed test does not leave a mount behind.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` to the last byte with a filler file; the bytes written.
pub fn fill_disk(dir: &Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler"))?;
    let chunk = vec![0xffu8; 4096];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = file.flush();
    Ok(written)
}

/// A 4 MiB tmpfs at `{dir}/small-disk`, mounted until the returned guard drops; `None`, with
/// a SKIPPED line, where mounting is not allowed (not root: a developer machine), so the test
/// says so loudly rather than pass in silence.
pub fn small_disk(dir: &Path) -> Option<(PathBuf, Mounted)> {
    let small = dir.join("small-disk");
    std::fs::create_dir(&small).expect("the mount point can be made in the test's directory");
    if !mount_tmpfs(&small, 4 * 1024 * 1024) {
        eprintln!(
            "SKIPPED: mounting a tmpfs needs root; run as root (CI does) to test a full disk"
        );
        return None;
    }
    Some((small.clone(), Mounted(small)))
}
