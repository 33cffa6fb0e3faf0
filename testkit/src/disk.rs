//! A disk that fills up: a small tmpfs for the device store's full-disk tests.

/// A small tmpfs (a disk a test can fill), lazily unmounted when dropped, even after a
/// failure.
pub struct SmallDisk {
    /// Where it is mounted.
    pub path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount`'s syntax, e.g. `1m`) on `path`, created if
    /// missing; panics unless that works (it needs root).
    pub fn mount(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            status.success(),
            "mount tmpfs on {}: {status} (the test runs as root)",
            path.display()
        );
        Self { path }
    }

    /// Writes a filler file until the disk is full.
    pub fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        loop {
            match filler.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        let _ = filler.sync_all();
    }

    /// Makes room again.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
