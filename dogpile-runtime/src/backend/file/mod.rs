//! Locks on files, for the processes of one host: a dogpile mutex per key ([`FileLocks`],
//! [`FileMutex`]) and a shared/exclusive lock ([`FileReadWriteMutex`]). The OS lock (`flock` on
//! Unix, `LockFileEx` on Windows, through `fs4`) belongs to an open file, so it is released when
//! its process exits or is killed.
//!
//! | state        | `try_acquire` | `acquire`          | `release`          |
//! |--------------|---------------|--------------------|--------------------|
//! | free         | → held, true  | → held             | error              |
//! | held (any process, any thread) | false | waits until free | → free (holder only) |
//!
//! # On a shared host
//!
//! - **Symlinks are never followed.** A lock file is opened with `O_NOFOLLOW` (on Windows, as a
//!   reparse point, then checked), and so is the lock directory. A symlink planted at a lock path
//!   makes the lock fail with a [`BackendError`] that says so: its target is neither created nor
//!   locked. (The directory's own parents are followed as usual: pick a directory whose parents
//!   only you and root can write to.)
//! - **Private by default.** Lock files are created with mode 0600 and their directory with
//!   0700, exactly (the umask does not widen or narrow them); [`FileLocksBuilder::mode`] shares
//!   them with a group.
//! - **A fixed number of files.** [`FileLocks`] stripes keys over a fixed set of lock files
//!   (1024 by default), so disk use does not grow with the keys seen. Keys that share a file
//!   wait for each other across processes; within a process they do not: the process locks a
//!   file once for all its keys there, and one of its threads at a time asks the OS for a file
//!   while the others wait inside the process and take their own key as soon as the file is
//!   in. So no thread ever waits for a file that its own process holds, and creators nested
//!   across files (one holds `a` and asks for `c`, another holds `c` and asks for `d`, on
//!   `a`'s file) never deadlock a process.
//! - **A lock is trusted only if its path still names it.** After locking, the lock file's
//!   device and inode are compared with what its path names now; if a cleaner removed or
//!   replaced the file between the open and the lock, the lock is dropped and taken again.
//! - **Files removed while held.** A holder of a [`FileLocks`] mutex also holds a shared lock on
//!   the directory, and lock files are only created under the directory's exclusive lock. So a
//!   tmp cleaner that deletes lock files in use cannot let a second holder in: the file is
//!   recreated only once every lock in the directory is released (a lock on such a file while
//!   the same process holds another lock in the directory is a [`BackendError`], not a wait
//!   for itself). systemd-tmpfiles also skips a directory that has a shared lock; touching each
//!   lock file when it is locked keeps age-based cleaners off files in use. Only the removal of
//!   the directory itself while a lock is held, which no cleaner that honours locks or ages
//!   does, can let one more holder in.

mod os;
#[cfg(not(loom))]
mod process;
/// The process's table of held stripes: public for the model checks (`tests/loom.rs`) only.
#[cfg(loom)]
#[doc(hidden)]
pub mod process;
mod rw;

pub use rw::{FileReadGuard, FileReadWriteMutex, FileWriteGuard};

use std::fmt::{self, Debug};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::lock::poll_acquire;
use crate::sync::Mutex;
use crate::{BackendError, ConfigError, RawMutex};
use process::{Locked, StripeId, Table};

/// The stripes this process holds, in every directory.
static TABLE: LazyLock<Table<os::Held>> = LazyLock::new(Table::new);

/// Lock files per directory unless configured otherwise.
const DEFAULT_STRIPES: usize = 1024;
const MAX_STRIPES: usize = 1 << 16;
/// Lock files readable and writable by their owner only.
const DEFAULT_MODE: u32 = 0o600;

/// A directory of lock files shared by the processes of one host, handing out one
/// [`FileMutex`] per key: what a region shared by processes uses as its mutexes.
///
/// Keys are striped by a stable hash over a fixed number of lock files (1024 by default), so
/// 10,000 keys leave at most that many files. The files are created (all at once, mode 0600) on
/// the first lock, and the directory too (mode 0700) if it is missing. Every process that shares
/// the directory must use the same number of stripes, since it decides which file a key locks.
/// See the [module documentation](self) for what is safe on a shared host.
///
/// ```
/// use dogpile_runtime::backend::file::FileLocks;
/// use dogpile_runtime::region::MemoryStore;
/// use dogpile_runtime::Region;
///
/// let dir = std::env::temp_dir().join(format!("dogpile-doc-locks-{}", std::process::id()));
/// let locks = FileLocks::builder(&dir).stripes(64).build()?;
/// let region: Region<u32, String, MemoryStore<u32, String>, _> = Region::builder()
///     .mutexes(move |key: &u32| locks.mutex(key))
///     .build()?;
/// assert_eq!(region.get_with(&7, || "seven".to_string()), "seven");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FileLocks {
    config: Arc<Config>,
}

struct Config {
    /// Absolute, so that the process's bookkeeping of a directory does not depend on the
    /// current directory.
    dir: Arc<Path>,
    stripes: u32,
    mode: u32,
}

impl Config {
    fn stripe_path(&self, stripe: u32) -> PathBuf {
        self.dir.join(format!("stripe-{stripe:04}.lock"))
    }
}

/// Configures [`FileLocks`]; from [`FileLocks::builder`].
///
/// ```
/// use dogpile_runtime::backend::file::FileLocks;
///
/// let locks = FileLocks::builder("/run/user/1000/my-app/locks")
///     .stripes(256)
///     .mode(0o660) // the group shares the locks
///     .build()?;
/// assert_eq!(locks.stripes(), 256);
///
/// let err = FileLocks::builder("/tmp/locks").stripes(0).build().unwrap_err();
/// assert_eq!(err.option(), "stripes");
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct FileLocksBuilder {
    dir: PathBuf,
    stripes: usize,
    mode: u32,
}

impl FileLocks {
    /// Lock files in `dir`, with the defaults: 1024 stripes, mode 0600. Touches no file yet.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// let locks = FileLocks::new(std::env::temp_dir().join("dogpile-doc-new"))?;
    /// assert_eq!((locks.stripes(), locks.mode()), (1024, 0o600));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn new(dir: impl Into<PathBuf>) -> Result<FileLocks, ConfigError> {
        FileLocks::builder(dir).build()
    }

    /// A builder for lock files in `dir`, to choose the number of stripes and the mode.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// let locks = FileLocks::builder(std::env::temp_dir().join("dogpile-doc-b")).stripes(8).build()?;
    /// assert_eq!(locks.stripes(), 8);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn builder(dir: impl Into<PathBuf>) -> FileLocksBuilder {
        FileLocksBuilder {
            dir: dir.into(),
            stripes: DEFAULT_STRIPES,
            mode: DEFAULT_MODE,
        }
    }

    /// The mutex of `key`: one of the directory's lock files, chosen by a 64-bit hash of the
    /// key's `Debug` form (stable across processes and builds). Two keys share a file when their
    /// hashes fall on the same stripe, which makes them wait for each other across processes;
    /// in one process, only equal hashes wait for each other.
    ///
    /// Sharing has one consequence for creators that take a second key while holding a first
    /// (nested regenerations): two *processes* that do so with keys on crossing stripes can
    /// wait for each other. More stripes make it rarer; a region's `lock_timeout` bounds the
    /// wait. The threads of one process never wait for each other that way: a thread waits
    /// only for its own key, or for another process.
    ///
    /// A process holds a stripe's file for as long as any of its threads holds a key there, and
    /// its other threads take keys of that stripe at once meanwhile: threads that keep keys of
    /// one stripe held without a pause keep it from the other processes for as long. Here too,
    /// more stripes make it rarer and a `lock_timeout` bounds the wait.
    ///
    /// ```
    /// use dogpile_runtime::backend::file::FileLocks;
    /// use dogpile_runtime::lock::RawMutex;
    ///
    /// let dir = std::env::temp_dir().join(format!("dogpile-doc-mutex-{}", std::process::id()));
    /// let locks = FileLocks::new(&dir)?;
    /// let a = locks.mutex(&("report", 7));
    /// let b = locks.mutex(&("report", 7)); // as another process would
    /// assert!(a.try_acquire().unwrap());
    /// assert!(!b.try_acquire().unwrap());
    /// a.release().unwrap();
    /// assert!(b.try_acquire().unwrap());
    /// b.release().unwrap();
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn mutex(&self, key: &(impl Debug + ?Sized)) -> FileMutex {
        let hash = fnv1a(key);
        // The hash's high bits pick the stripe (a multiply-shift, uniform for any count).
        let stripe = ((u128::from(hash) * u128::from(self.config.stripes)) >> 64) as u32;
        FileMutex {
            path: self.config.stripe_path(stripe),
            id: (Arc::clone(&self.config.dir), stripe),
            config: Arc::clone(&self.config),
            key: hash,
            held: Mutex::new(false),
        }
    }

    /// The directory of the lock files, made absolute (with the symlinks of its parents
    /// resolved).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// let locks = FileLocks::new("locks")?;
    /// assert!(locks.dir().is_absolute() && locks.dir().ends_with("locks"));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// How many lock files the keys are striped over.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// assert_eq!(FileLocks::new("/tmp/l")?.stripes(), 1024);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn stripes(&self) -> usize {
        self.config.stripes as usize
    }

    /// The permission bits of the lock files (the directory adds search permission to them).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// assert_eq!(FileLocks::new("/tmp/l")?.mode(), 0o600);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn mode(&self) -> u32 {
        self.config.mode
    }
}

impl Debug for FileLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLocks")
            .field("dir", &self.config.dir)
            .field("stripes", &self.config.stripes)
            .field("mode", &format_args!("{:#o}", self.config.mode))
            .finish()
    }
}

impl FileLocksBuilder {
    /// How many lock files to stripe keys over, from 1 to 65,536 (default 1024). More stripes
    /// make unrelated keys wait for each other less often, at one empty file each.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// assert!(FileLocks::builder("/tmp/l").stripes(1 << 17).build().is_err());
    /// ```
    pub fn stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes;
        self
    }

    /// The permission bits of new lock files (default 0o600, owner only); the directory, if
    /// created, gets them plus search permission where they allow reading (0o660 → 0o770). The
    /// owner must be able to read and write; only permission bits are allowed.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// assert_eq!(FileLocks::builder("/tmp/l").mode(0o640).build()?.mode(), 0o640);
    /// assert!(FileLocks::builder("/tmp/l").mode(0o400).build().is_err());
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The configured lock files, or every value that cannot work. Touches no file.
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// let err = FileLocks::builder("").build().unwrap_err();
    /// assert_eq!(err.option(), "dir");
    /// let err = FileLocks::builder("").stripes(0).mode(0o7000).build().unwrap_err();
    /// assert_eq!(err.options().collect::<Vec<_>>(), ["stripes", "mode", "dir"]);
    /// ```
    pub fn build(self) -> Result<FileLocks, ConfigError> {
        let stripes = if (1..=MAX_STRIPES).contains(&self.stripes) {
            Ok(())
        } else {
            Err(ConfigError::new(
                "stripes",
                format!("must be from 1 to {MAX_STRIPES}, not {}", self.stripes),
            ))
        };
        let dir = resolved(&self.dir);
        // Every setting that cannot work, at once.
        let refused = [
            stripes.err(),
            check_mode(self.mode).err(),
            dir.as_ref().err().cloned(),
        ];
        if let Some(invalid) = ConfigError::all(refused.into_iter().flatten()) {
            return Err(invalid);
        }
        let dir = dir?;
        Ok(FileLocks {
            config: Arc::new(Config {
                dir: Arc::from(dir),
                stripes: self.stripes as u32,
                mode: self.mode,
            }),
        })
    }
}

/// `path` made absolute: `option`'s value cannot be used otherwise.
fn absolute(option: &'static str, path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path)
        .map_err(|e| ConfigError::new(option, format!("must be a usable path ({e})")))
}

/// The lock directory `dir`, absolute, with the symlinks of its existing parents resolved (the
/// directory itself is never followed): the process's table knows a directory by its path, and
/// two paths to one directory would let a thread wait in the OS for a stripe its own process
/// holds.
fn resolved(dir: &Path) -> Result<PathBuf, ConfigError> {
    let dir = absolute("dir", dir)?;
    let (Some(mut parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(dir);
    };
    let mut names = vec![name];
    loop {
        if let Ok(real) = std::fs::canonicalize(parent) {
            return Ok(names.iter().rev().fold(real, |path, name| path.join(name)));
        }
        match (parent.parent(), parent.file_name()) {
            (Some(up), Some(name)) => {
                names.push(name);
                parent = up;
            }
            _ => return Ok(dir),
        }
    }
}

fn check_mode(mode: u32) -> Result<(), ConfigError> {
    if mode & !0o777 != 0 {
        return Err(ConfigError::new(
            "mode",
            format!("must be permission bits only (at most 0o777), not {mode:#o}"),
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(ConfigError::new(
            "mode",
            format!("must let the owner read and write (include 0o600), not {mode:#o}"),
        ));
    }
    Ok(())
}

/// A dogpile mutex on one of the lock files of a [`FileLocks`] directory, shared by every
/// process (and thread) that asks for the same key there.
///
/// Threads of one process exclude each other as processes do. A held mutex keeps its lock file
/// locked (and the directory's shared lock) until released, or until its process dies.
///
/// ```
/// use dogpile_runtime::backend::file::FileLocks;
/// use dogpile_runtime::lock::{OwnedMutexGuard, RawMutex};
/// use std::sync::Arc;
///
/// let dir = std::env::temp_dir().join(format!("dogpile-doc-fm-{}", std::process::id()));
/// let locks = FileLocks::new(&dir)?;
/// let m = Arc::new(locks.mutex("nightly report"));
/// let guard = OwnedMutexGuard::acquire(m.clone()).unwrap();
/// assert!(!locks.mutex("nightly report").try_acquire().unwrap());
/// drop(guard);
/// assert!(m.try_acquire().unwrap());
/// m.release().unwrap();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
pub struct FileMutex {
    config: Arc<Config>,
    /// The directory and the stripe.
    id: StripeId,
    /// The key's hash: what the process's own threads exclude each other by.
    key: u64,
    path: PathBuf,
    /// Whether this handle holds the key.
    held: Mutex<bool>,
}

impl FileMutex {
    /// The lock file this mutex locks (one of its directory's stripes).
    ///
    /// ```
    /// # use dogpile_runtime::backend::file::FileLocks;
    /// let locks = FileLocks::new("/tmp/dogpile-doc-path")?;
    /// let m = locks.mutex(&42u64);
    /// assert!(m.path().starts_with("/tmp/dogpile-doc-path"));
    /// assert_eq!(m.path().extension().unwrap(), "lock");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn take(&self, wait: bool) -> Result<bool, BackendError> {
        let (config, stripe) = (&*self.config, self.id.1);
        let lock = |wait| {
            Ok(match os::lock_stripe(config, stripe, wait)? {
                os::Stripe::Locked(held) => Locked::Held(held),
                os::Stripe::Busy => Locked::Busy,
                os::Stripe::Missing => Locked::Missing,
            })
        };
        let create = |wait| os::create_stripes(config, wait);
        let taken = TABLE.acquire(&self.id, self.key, wait, lock, create)?;
        if taken {
            *self.held.lock() = true;
        }
        Ok(taken)
    }
}

impl RawMutex for FileMutex {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        self.take(false)
    }

    fn acquire(&self) -> Result<(), BackendError> {
        self.take(true).map(drop)
    }

    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        // The OS lock has no timeout: try, then sleep a little longer each time.
        let (first, most) = (Duration::from_millis(1), Duration::from_millis(20));
        poll_acquire(|| self.try_acquire(), Some(timeout), first, most)
    }

    fn release(&self) -> Result<(), BackendError> {
        let mut held = self.held.lock();
        if !*held || !TABLE.release(&self.id, self.key) {
            return Err(BackendError::new(format!(
                "release of the file lock {} that this handle does not hold",
                self.path.display()
            )));
        }
        *held = false;
        Ok(())
    }
}

/// A lock file is taken or refused at once (`flock` without waiting), so the async forms are
/// the blocking ones, ready.
impl crate::lock::AsyncRawMutex for FileMutex {
    fn try_acquire_async(
        &self,
    ) -> impl std::future::Future<Output = Result<bool, BackendError>> + Send {
        std::future::ready(self.try_acquire())
    }

    fn release_async(&self) -> impl std::future::Future<Output = Result<(), BackendError>> + Send {
        std::future::ready(self.release())
    }

    fn releases_at_once(&self) -> bool {
        true
    }
}

impl Debug for FileMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMutex")
            .field("path", &self.path)
            .field("held", &*self.held.lock())
            .finish()
    }
}

/// FNV-1a over the key's `Debug` form: stable across processes and builds, unlike `Hash`.
fn fnv1a(key: &(impl Debug + ?Sized)) -> u64 {
    let text = format!("{key:?}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
