//! Locks on files, for the processes of one host: a dogpile mutex ([`FileMutex`]) and a
//! shared/exclusive lock ([`FileReadWriteMutex`]). The OS lock (`flock` on Unix, `LockFileEx`
//! on Windows, through `fs4`) belongs to an open file, so it is released when its process
//! exits or is killed.
//!
//! | state        | `try_acquire` | `acquire`          | `release`          |
//! |--------------|---------------|--------------------|--------------------|
//! | free         | → held, true  | → held             | error              |
//! | held (any process, any thread) | false | waits until free | → free (holder only) |

use std::fmt::{self, Debug};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs4::fs_std::FileExt;

use crate::lock::poll_acquire;
use crate::sync::Mutex;
use crate::{BackendError, RawMutex};

/// A dogpile mutex on a lock file, shared by every process (and thread) that opens the same
/// path.
///
/// Each acquisition opens the file anew, so two threads of one process exclude each other as
/// two processes do. The file is created if missing and never deleted (deleting a lock file
/// that another process is about to lock would let two holders in).
///
/// ```
/// use dogpile_runtime::backend::file::FileMutex;
/// use dogpile_runtime::lock::RawMutex;
///
/// let dir = std::env::temp_dir();
/// let a = FileMutex::for_key(&dir, &("report", 7));
/// let b = FileMutex::for_key(&dir, &("report", 7)); // as another process would
/// assert!(a.try_acquire().unwrap());
/// assert!(!b.try_acquire().unwrap());
/// a.release().unwrap();
/// assert!(b.try_acquire().unwrap());
/// b.release().unwrap();
/// ```
pub struct FileMutex {
    path: PathBuf,
    /// The open file that holds the lock, while held.
    held: Mutex<Option<File>>,
}

impl FileMutex {
    /// A mutex on the file at `path` (created on first use; its directory must exist).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileMutex;
    /// let m = FileMutex::new(std::env::temp_dir().join("dogpile-doc.lock"));
    /// assert!(m.path().ends_with("dogpile-doc.lock"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileMutex {
            path: path.into(),
            held: Mutex::new(None),
        }
    }

    /// The mutex of `key` in `dir`: one lock file per key, named by a 64-bit hash of the key's
    /// `Debug` form (stable across processes and builds). Two keys with the same hash share a
    /// lock file, which only makes them wait for each other.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileMutex;
    /// let m = FileMutex::for_key(std::env::temp_dir(), &42u64);
    /// assert_eq!(m.path().extension().unwrap(), "lock");
    /// ```
    pub fn for_key(dir: impl AsRef<Path>, key: &(impl Debug + ?Sized)) -> Self {
        FileMutex::new(lock_file_for(dir.as_ref(), key))
    }

    /// The lock file.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileMutex;
    /// let m = FileMutex::new("/tmp/x.lock");
    /// assert_eq!(m.path(), std::path::Path::new("/tmp/x.lock"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn keep(&self, file: File) {
        *self.held.lock() = Some(file);
    }
}

impl RawMutex for FileMutex {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        let file = open(&self.path)?;
        if FileExt::try_lock_exclusive(&file).map_err(|e| failed("lock", &self.path, e))? {
            self.keep(file);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn acquire(&self) -> Result<(), BackendError> {
        let file = open(&self.path)?;
        FileExt::lock_exclusive(&file).map_err(|e| failed("lock", &self.path, e))?;
        self.keep(file);
        Ok(())
    }

    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        // The OS lock has no timeout: try, then sleep a little longer each time.
        let (first, most) = (Duration::from_millis(1), Duration::from_millis(20));
        poll_acquire(|| self.try_acquire(), Some(timeout), first, most)
    }

    fn release(&self) -> Result<(), BackendError> {
        let file = self.held.lock().take().ok_or_else(|| {
            BackendError::new(format!(
                "release of the file lock {} that this process does not hold",
                self.path.display()
            ))
        })?;
        FileExt::unlock(&file).map_err(|e| failed("unlock", &self.path, e))
    }
}

impl Debug for FileMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMutex")
            .field("path", &self.path)
            .field("held", &self.held.lock().is_some())
            .finish()
    }
}

/// Many readers or one writer, across processes, on a lock file: the cross-process form of
/// [`ReadWriteMutex`](crate::ReadWriteMutex). Each guard holds its own open file, released
/// when dropped (or when its process dies).
///
/// ```
/// use dogpile_runtime::backend::file::FileReadWriteMutex;
///
/// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-doc.lock"));
/// let r1 = lock.read().unwrap();
/// let r2 = lock.try_read().unwrap().expect("readers share");
/// assert!(lock.try_write().unwrap().is_none());
/// drop((r1, r2));
/// let w = lock.write().unwrap();
/// assert!(lock.try_read().unwrap().is_none());
/// drop(w);
/// ```
#[derive(Debug)]
pub struct FileReadWriteMutex {
    path: PathBuf,
}

/// A shared hold on a [`FileReadWriteMutex`], released when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct FileReadGuard {
    file: File,
}

/// An exclusive hold on a [`FileReadWriteMutex`], released when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct FileWriteGuard {
    file: File,
}

impl FileReadWriteMutex {
    /// A lock on the file at `path` (created on first use; its directory must exist).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let _ = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-new.lock"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileReadWriteMutex { path: path.into() }
    }

    /// Waits for a shared hold.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-read.lock"));
    /// let _reading = lock.read().unwrap();
    /// ```
    pub fn read(&self) -> Result<FileReadGuard, BackendError> {
        let file = open(&self.path)?;
        FileExt::lock_shared(&file).map_err(|e| failed("lock", &self.path, e))?;
        Ok(FileReadGuard { file })
    }

    /// A shared hold if no writer has the lock; `None` otherwise.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-tryread.lock"));
    /// assert!(lock.try_read().unwrap().is_some());
    /// ```
    pub fn try_read(&self) -> Result<Option<FileReadGuard>, BackendError> {
        let file = open(&self.path)?;
        Ok(
            if FileExt::try_lock_shared(&file).map_err(|e| failed("lock", &self.path, e))? {
                Some(FileReadGuard { file })
            } else {
                None
            },
        )
    }

    /// Waits for the exclusive hold.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-write.lock"));
    /// let _writing = lock.write().unwrap();
    /// ```
    pub fn write(&self) -> Result<FileWriteGuard, BackendError> {
        let file = open(&self.path)?;
        FileExt::lock_exclusive(&file).map_err(|e| failed("lock", &self.path, e))?;
        Ok(FileWriteGuard { file })
    }

    /// The exclusive hold if no one holds the lock; `None` otherwise.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-trywrite.lock"));
    /// assert!(lock.try_write().unwrap().is_some());
    /// ```
    pub fn try_write(&self) -> Result<Option<FileWriteGuard>, BackendError> {
        let file = open(&self.path)?;
        Ok(
            if FileExt::try_lock_exclusive(&file).map_err(|e| failed("lock", &self.path, e))? {
                Some(FileWriteGuard { file })
            } else {
                None
            },
        )
    }
}

impl Drop for FileReadGuard {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes it immediate.
        let _ = FileExt::unlock(&self.file);
    }
}

impl Drop for FileWriteGuard {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

fn open(path: &Path) -> Result<File, BackendError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| failed("open", path, e))
}

fn failed(what: &str, path: &Path, err: io::Error) -> BackendError {
    BackendError::with_source(
        format!("could not {what} the lock file {}", path.display()),
        err,
    )
}

/// `dir/<16 hex digits>.lock`, by FNV-1a over the key's `Debug` form.
fn lock_file_for(dir: &Path, key: &(impl Debug + ?Sized)) -> PathBuf {
    let text = format!("{key:?}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    dir.join(format!("{hash:016x}.lock"))
}
