//! The disk monitor: how much room the store has, checked every second, as
//! TiKV's storage-stats task does.
//!
//! - capacity: the file system's size, or `[raftstore] capacity` if that is
//!   set and smaller;
//! - used: the files under the data directory (KV engine, Raft log,
//!   snapshots);
//! - available: capacity − used, but no more than the file system has free.
//!
//! With `[storage] reserve-space` R (with 0, only no room at all is full) the reserve is
//! the larger of R and 5 % of the capacity. At the reserve or less the
//! store is AlmostFull; at half of it or less, AlreadyFull. The store loop
//! then refuses client writes that do not allow that (see
//! `tikal_raftstore::DiskFullOpt`); the reserve is what Raft, membership
//! changes and deletes still have to work with. Store heartbeats report the
//! same capacity and available space to PD.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tikal_raftstore::{grade_disk, DiskState, DiskUsage};
use tracing::{info, warn};

/// A store's room, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Space {
    pub capacity: u64,
    pub available: u64,
    pub used: u64,
}

pub struct DiskMonitor {
    data_dir: PathBuf,
    /// `[raftstore] capacity`; 0: the whole file system.
    capacity: u64,
    /// `[storage] reserve-space`; 0: never full.
    reserve_space: u64,
    state: DiskState,
    last: parking_lot::Mutex<Space>,
}

impl DiskMonitor {
    pub fn new(data_dir: PathBuf, capacity: u64, reserve_space: u64, state: DiskState) -> Self {
        DiskMonitor {
            data_dir,
            capacity,
            reserve_space,
            state,
            last: Default::default(),
        }
    }

    /// Measures the store's room now.
    pub fn measure(&self) -> Space {
        let (fs_size, fs_free) = fs_space(&self.data_dir);
        let capacity = match self.capacity {
            0 => fs_size,
            c => c.min(fs_size),
        };
        let used = dir_size(&self.data_dir);
        Space {
            capacity,
            available: capacity.saturating_sub(used).min(fs_free),
            used,
        }
    }

    /// The reserve for a store of `capacity` bytes.
    fn reserve(&self, capacity: u64) -> u64 {
        match self.reserve_space {
            0 => 0,
            r => r.max(capacity / 20),
        }
    }

    /// Measures, grades and publishes the store's usage; returns the room.
    pub fn check(&self) -> Space {
        let space = self.measure();
        if space.capacity == 0 {
            // The file system could not be read: nothing to grade by, so
            // the last grade stands.
            return space;
        }
        let (available, reserve) = (space.available, self.reserve(space.capacity));
        let usage = grade_disk(available, reserve);
        if usage != self.state.get() {
            if usage == DiskUsage::Normal {
                info!(available, reserve, "disk has room again: writes are taken");
            } else {
                warn!(
                    ?usage,
                    available, reserve, "disk is running out of room: client writes are refused"
                );
            }
            self.state.set(usage);
        }
        *self.last.lock() = space;
        space
    }

    /// The room last measured.
    pub fn last(&self) -> Space {
        *self.last.lock()
    }

    /// Checks every `every`, for ever.
    pub async fn run(self: std::sync::Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let monitor = self.clone();
            // Walking the data directory touches the file system: off the
            // async workers.
            if tokio::task::spawn_blocking(move || monitor.check())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// (size, free) bytes of the file system holding `dir`, as an unprivileged
/// user may use it; (0, 0) if it cannot be read.
pub fn fs_space(dir: &Path) -> (u64, u64) {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable
    // statvfs the call fills in.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    let frsize = st.f_frsize as u64;
    (
        (st.f_blocks as u64).saturating_mul(frsize),
        (st.f_bavail as u64).saturating_mul(frsize),
    )
}

/// Bytes of the files under `dir`, by their lengths (files that vanish
/// while it walks, as compaction and log purges delete them, count 0).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capacity_below_the_disk_makes_the_store_full_as_its_files_grow() {
        let dir = tempfile::tempdir().unwrap();
        let state = DiskState::default();
        // 1 MiB of capacity, 400 KiB reserved: AlmostFull from 624 KiB of
        // files, AlreadyFull from 824 KiB.
        let m = DiskMonitor::new(dir.path().into(), 1 << 20, 400 << 10, state.clone());
        assert_eq!(m.check().capacity, 1 << 20);
        assert_eq!(state.get(), DiskUsage::Normal);

        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/a"), vec![0u8; 700 << 10]).unwrap();
        let space = m.check();
        assert_eq!(space.used, 700 << 10);
        assert_eq!(space.available, (1 << 20) - (700 << 10));
        assert_eq!(state.get(), DiskUsage::AlmostFull);

        std::fs::write(dir.path().join("b"), vec![0u8; 200 << 10]).unwrap();
        m.check();
        assert_eq!(state.get(), DiskUsage::AlreadyFull);
        assert_eq!(m.last().used, 900 << 10);

        std::fs::remove_file(dir.path().join("db/a")).unwrap();
        m.check();
        assert_eq!(state.get(), DiskUsage::Normal, "room again");
    }

    #[test]
    fn the_reserve_is_at_least_a_twentieth_of_the_capacity_and_zero_leaves_only_no_room_full() {
        let dir = tempfile::tempdir().unwrap();
        let m = DiskMonitor::new(dir.path().into(), 0, 1, DiskState::default());
        assert_eq!(m.reserve(2000), 100);
        assert_eq!(m.reserve(10), 1);
        let none = DiskMonitor::new(dir.path().into(), 1, 0, DiskState::default());
        assert_eq!(none.reserve(2000), 0);
        none.check();
        assert_eq!(none.state.get(), DiskUsage::Normal, "one byte of room");
        std::fs::write(dir.path().join("a"), b"more than one byte").unwrap();
        none.check();
        assert_eq!(none.state.get(), DiskUsage::AlreadyFull, "no room at all");
    }
}
