//! [`FileReadWriteMutex`]: many readers or one writer across processes, on one lock file.
//!
//! Each guard locks its own open file, so the threads of one process exclude each other as
//! processes do. A thread that holds a guard and waits for a conflicting one on the same file
//! would wait in the OS for itself, forever; the guards alive in this process are recorded
//! here, by file and taking thread, so that such a wait is an error instead.

use std::fs::File;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use fs4::fs_std::FileExt;

use super::os::{self, FileId, Kind};
use super::{absolute, check_mode, DEFAULT_MODE};
use crate::sync::{current_thread, Mutex, ThreadId};
use crate::{BackendError, ConfigError};

/// Many readers or one writer, across processes, on one lock file: the cross-process form of
/// [`ReadWriteMutex`](crate::ReadWriteMutex). Each guard holds its own open file, released
/// when dropped (or when its process dies).
///
/// The file is never opened through a symlink, is created with mode 0600 (or the mode given to
/// [`with_mode`](Self::with_mode)), and a lock is trusted only once the path is checked to still
/// name the locked file. There is no directory lock here: keep the file where no cleaner deletes
/// files that are in use.
///
/// Threads of one process exclude each other as processes do. A thread that holds a guard and
/// asks to *wait* for a conflicting one on the same file (a write while it reads or writes, a
/// read while it writes) gets a [`BackendError`] instead of waiting for itself forever; the
/// `try_*` calls answer `None` then, as for any other holder. Guards stay on the thread that
/// took them (they are not `Send`), as the standard library's are.
///
/// ```
/// use dogpile_runtime::backend::file::FileReadWriteMutex;
///
/// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-doc.lock"))?;
/// let r1 = lock.read().unwrap();
/// let r2 = lock.try_read().unwrap().expect("readers share");
/// assert!(lock.try_write().unwrap().is_none());
/// assert!(lock.write().is_err(), "this thread would wait for its own readers");
/// drop((r1, r2));
/// let w = lock.write().unwrap();
/// assert!(lock.try_read().unwrap().is_none());
/// drop(w);
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct FileReadWriteMutex {
    path: PathBuf,
    mode: u32,
}

/// A shared hold on a [`FileReadWriteMutex`], released when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct FileReadGuard {
    _hold: Hold,
}

/// An exclusive hold on a [`FileReadWriteMutex`], released when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct FileWriteGuard {
    _hold: Hold,
}

impl FileReadWriteMutex {
    /// A lock on the file at `path` (created with mode 0600 on first use; its directory must
    /// exist). The path is made absolute now, so that a later change of the current directory
    /// does not move the lock.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (option `path`) for a path that cannot be made absolute, such as an
    /// empty one.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-new.lock"))?;
    /// assert_eq!(FileReadWriteMutex::new("").unwrap_err().option(), "path");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        Self::with_mode(path, DEFAULT_MODE)
    }

    /// A lock on the file at `path`, created with the permission bits `mode` (which must let
    /// the owner read and write, as for
    /// [`FileLocksBuilder::mode`](super::FileLocksBuilder::mode)).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a mode that is not permission bits or leaves the owner out, or a
    /// path that cannot be made absolute.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let shared = FileReadWriteMutex::with_mode("/tmp/dogpile-rw-group.lock", 0o660)?;
    /// assert!(FileReadWriteMutex::with_mode("/tmp/x.lock", 0o4600).is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn with_mode(path: impl Into<PathBuf>, mode: u32) -> Result<Self, ConfigError> {
        check_mode(mode)?;
        Ok(FileReadWriteMutex {
            path: absolute("path", &path.into())?,
            mode,
        })
    }

    /// The lock file, made absolute.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new("app.lock")?;
    /// assert!(lock.path().is_absolute() && lock.path().ends_with("app.lock"));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a shared hold.
    ///
    /// # Errors
    ///
    /// A [`BackendError`] if the file cannot be opened or locked, or if this thread holds the
    /// file's write lock (waiting would never end).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-read.lock"))?;
    /// let _reading = lock.read().unwrap();
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn read(&self) -> Result<FileReadGuard, BackendError> {
        let hold = self.lock(Kind::Shared, true)?;
        Ok(FileReadGuard { _hold: hold })
    }

    /// A shared hold if no writer has the lock; `None` otherwise.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-tryread.lock"))?;
    /// assert!(lock.try_read().unwrap().is_some());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_read(&self) -> Result<Option<FileReadGuard>, BackendError> {
        Ok(self
            .try_lock(Kind::Shared)?
            .map(|hold| FileReadGuard { _hold: hold }))
    }

    /// Waits for the exclusive hold.
    ///
    /// # Errors
    ///
    /// A [`BackendError`] if the file cannot be opened or locked, or if this thread holds a
    /// lock on the file (waiting would never end).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-write.lock"))?;
    /// let writing = lock.write().unwrap();
    /// assert!(lock.write().is_err(), "would wait for itself");
    /// drop(writing);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn write(&self) -> Result<FileWriteGuard, BackendError> {
        let hold = self.lock(Kind::Exclusive, true)?;
        Ok(FileWriteGuard { _hold: hold })
    }

    /// The exclusive hold if no one holds the lock; `None` otherwise.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileReadWriteMutex;
    /// let lock = FileReadWriteMutex::new(std::env::temp_dir().join("dogpile-rw-trywrite.lock"))?;
    /// assert!(lock.try_write().unwrap().is_some());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_write(&self) -> Result<Option<FileWriteGuard>, BackendError> {
        Ok(self
            .try_lock(Kind::Exclusive)?
            .map(|hold| FileWriteGuard { _hold: hold }))
    }

    fn lock(&self, kind: Kind, wait: bool) -> Result<Hold, BackendError> {
        self.try_lock_with(kind, wait)?
            .ok_or_else(|| BackendError::new(format!("could not lock {}", self.path.display())))
    }

    fn try_lock(&self, kind: Kind) -> Result<Option<Hold>, BackendError> {
        self.try_lock_with(kind, false)
    }

    fn try_lock_with(&self, kind: Kind, wait: bool) -> Result<Option<Hold>, BackendError> {
        let thread = current_thread().id();
        let before_waiting = |id: &FileId| {
            // Compatible with a read of its own: a read beside this thread's write, or a write
            // beside any of its holds, is not.
            let own = HOLDS.lock().iter().find_map(|r| {
                let conflicts = kind == Kind::Exclusive || r.kind == Kind::Exclusive;
                (r.thread == thread && r.id == *id && conflicts).then_some(r.kind)
            });
            match own {
                Some(held) => Err(BackendError::new(format!(
                    "this thread holds a {} lock on {} and asked to wait for a {} lock there: it \
                     would wait for itself forever; drop its guard first (or use try_read or \
                     try_write)",
                    name(held),
                    self.path.display(),
                    name(kind),
                ))),
                None => Ok(()),
            }
        };
        let Some((file, id)) = os::lock_path(&self.path, self.mode, kind, wait, before_waiting)?
        else {
            return Ok(None);
        };
        let hold = Hold {
            file,
            record: Record { id, thread, kind },
            _stay: PhantomData,
        };
        HOLDS.lock().push(hold.record.clone());
        Ok(Some(hold))
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Shared => "read",
        Kind::Exclusive => "write",
    }
}

/// The guards alive in this process: which thread took which kind, on which file.
static HOLDS: LazyLock<Mutex<Vec<Record>>> = LazyLock::new(|| Mutex::new(Vec::new()));

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    id: FileId,
    thread: ThreadId,
    kind: Kind,
}

/// A locked open file, recorded in [`HOLDS`] until dropped.
#[derive(Debug)]
struct Hold {
    file: File,
    record: Record,
    /// Not `Send`: the record names the thread that took it.
    _stay: PhantomData<*const ()>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes it immediate.
        let _ = FileExt::unlock(&self.file);
        let mut holds = HOLDS.lock();
        if let Some(at) = holds.iter().position(|r| *r == self.record) {
            holds.swap_remove(at);
        }
    }
}
