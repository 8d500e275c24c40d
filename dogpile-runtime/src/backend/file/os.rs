//! Opening and locking lock files safely: never through a symlink, created private, and trusted
//! only once the path is checked to still name the locked file (lock, then stat, retry).
//!
//! This is the OS part only: it locks what it is asked to, and knows nothing of which threads
//! of this process hold what (see `process.rs`, which decides who may ask it).

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use fs4::fs_std::FileExt;

use imp::Dir;
pub(super) use imp::FileId;

use super::Config;
use crate::BackendError;

/// How a lock is held: many readers, or one holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Shared,
    Exclusive,
}

/// Locks the lock file at `path` (created with `mode` if missing): `None` if `wait` is false
/// and another holder has it. Before waiting, `before_waiting` sees the identity of the file
/// about to be waited for, and may refuse. No directory lock; see [`lock_stripe`] for the
/// striped files.
pub(super) fn lock_path(
    path: &Path,
    mode: u32,
    kind: Kind,
    wait: bool,
    before_waiting: impl Fn(&FileId) -> Result<(), BackendError>,
) -> Result<Option<(File, FileId)>, BackendError> {
    loop {
        let file = match imp::open_file(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match imp::create_file(path, mode) {
                    // Locked and checked below like any other.
                    Ok(file) => file,
                    // Someone else made it meanwhile: open theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(failed("create", path, e)),
                }
            }
            Err(e) => return Err(refused(path, e)),
        };
        let id = imp::file_id(&file, path).map_err(|e| failed("check", path, e))?;
        if wait {
            before_waiting(&id)?;
        }
        if !lock(&file, kind, wait).map_err(|e| failed("lock", path, e))? {
            return Ok(None);
        }
        // Locked an inode that a cleaner unlinked (or replaced) between our open and our lock?
        // Then the path belongs to another file; drop this one and start over.
        if imp::names(&file, path).map_err(|e| failed("check", path, e))? {
            touch(&file);
            return Ok(Some((file, id)));
        }
    }
}

/// A stripe's lock file, locked, with its directory's shared lock; both are released on drop.
pub(super) struct Held {
    _dir: Dir,
    file: File,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Closing the files releases both locks too; unlocking first makes it immediate.
        let _ = FileExt::unlock(&self.file);
    }
}

/// What asking for a stripe's lock gave.
pub(super) enum Stripe {
    Locked(Held),
    /// Another holder has it, and the caller would not wait.
    Busy,
    /// Its file does not exist: [`create_stripes`] makes it.
    Missing,
}

/// Locks stripe `stripe` of `config`'s directory exclusively.
///
/// Besides the file's own lock, the holder keeps a shared lock on the directory, and lock files
/// are only ever created under the directory's exclusive lock. So while anyone holds a stripe,
/// no process can create a new file at a path whose old file a cleaner deleted: the new holder
/// of that path waits until every holder in the directory is done. (A shared lock on a
/// directory also makes systemd-tmpfiles leave it alone.)
pub(super) fn lock_stripe(
    config: &Config,
    stripe: u32,
    wait: bool,
) -> Result<Stripe, BackendError> {
    let path = config.stripe_path(stripe);
    loop {
        let Some(dir) = lock_dir(config, Kind::Shared, wait)? else {
            return Ok(Stripe::Busy);
        };
        let file = match imp::open_file(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stripe::Missing),
            Err(e) => return Err(refused(&path, e)),
        };
        if !lock(&file, Kind::Exclusive, wait).map_err(|e| failed("lock", &path, e))? {
            return Ok(Stripe::Busy);
        }
        if imp::names(&file, &path).map_err(|e| failed("check", &path, e))? {
            touch(&file);
            return Ok(Stripe::Locked(Held { _dir: dir, file }));
        }
    }
}

/// Creates every missing stripe file of the directory, under its exclusive lock: `false` if
/// `wait` is false and someone holds a lock there. The exclusive lock waits for every shared
/// one, this process's too: the caller makes sure this process holds none in the directory.
#[cold]
pub(super) fn create_stripes(config: &Config, wait: bool) -> Result<bool, BackendError> {
    let Some(_dir) = lock_dir(config, Kind::Exclusive, wait)? else {
        return Ok(false);
    };
    // All at once: a nested lock taken later in the directory then finds its file there.
    for stripe in 0..config.stripes {
        let path = config.stripe_path(stripe);
        match imp::create_file(&path, config.mode) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("create", &path, e)),
        }
    }
    Ok(true)
}

/// Opens the lock directory (creating it if missing) and locks it; `None` if `wait` is false
/// and the lock is taken.
fn lock_dir(config: &Config, kind: Kind, wait: bool) -> Result<Option<imp::Dir>, BackendError> {
    let dir = &config.dir;
    loop {
        let file = match imp::open_dir(dir) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match imp::create_dir(dir, config.mode) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(failed("create the directory of", dir, e)),
                }
            }
            Err(e) => return Err(refused(dir, e)),
        };
        if !imp::lock_dir(&file, kind, wait).map_err(|e| failed("lock", dir, e))? {
            return Ok(None);
        }
        if imp::dir_names(&file, dir).map_err(|e| failed("check", dir, e))? {
            return Ok(Some(file));
        }
    }
}

fn lock(file: &File, kind: Kind, wait: bool) -> io::Result<bool> {
    match (kind, wait) {
        (Kind::Shared, true) => FileExt::lock_shared(file).map(|()| true),
        (Kind::Exclusive, true) => FileExt::lock_exclusive(file).map(|()| true),
        (Kind::Shared, false) => FileExt::try_lock_shared(file),
        (Kind::Exclusive, false) => FileExt::try_lock_exclusive(file),
    }
}

/// Marks a lock file as in use for cleaners that delete files by age.
fn touch(file: &File) {
    let _ = file.set_modified(SystemTime::now());
}

fn failed(what: &str, path: &Path, err: io::Error) -> BackendError {
    BackendError::with_source(
        format!("could not {what} the lock file {}", path.display()),
        err,
    )
}

/// An open that failed: a symlink (never followed) gets its own message.
fn refused(path: &Path, err: io::Error) -> BackendError {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        BackendError::new(format!(
            "{} is a symbolic link; lock files and their directory are never followed through \
             one (remove it, or use a directory that only you can write to)",
            path.display()
        ))
    } else if imp::is_wrong_type(&err) {
        BackendError::new(format!(
            "{} is not a regular lock file (or a directory, for the lock directory)",
            path.display()
        ))
    } else {
        failed("open", path, err)
    }
}

#[cfg(unix)]
mod imp {
    //! Unix: `O_NOFOLLOW` on every open, exact modes, identity by device and inode.

    use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use super::Kind;

    /// The open lock directory, whose `flock` anchors the files in it.
    pub(crate) type Dir = File;

    /// What a file is, whatever path names it: its device and inode.
    pub(crate) type FileId = (u64, u64);

    pub(super) fn file_id(file: &File, _path: &Path) -> io::Result<FileId> {
        let meta = file.metadata()?;
        Ok((meta.dev(), meta.ino()))
    }

    pub(super) fn open_file(path: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        regular(file)
    }

    /// Creates the file with exactly `mode` (whatever the umask); `AlreadyExists` if anything,
    /// a symlink included, is at `path`.
    pub(super) fn create_file(path: &Path, mode: u32) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        file.set_permissions(Permissions::from_mode(mode))?;
        Ok(file)
    }

    pub(super) fn open_dir(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
    }

    /// The directory gets the file mode plus search permission wherever it has read
    /// permission (0600 → 0700, 0660 → 0770); its parents are made as `create_dir_all` does.
    pub(super) fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
        let mode = mode | ((mode & 0o444) >> 2);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        DirBuilder::new().mode(mode).create(path)?;
        // Exact, whatever the umask; through the opened directory, not the path.
        open_dir(path)?.set_permissions(Permissions::from_mode(mode))
    }

    pub(super) fn lock_dir(dir: &Dir, kind: Kind, wait: bool) -> io::Result<bool> {
        super::lock(dir, kind, wait)
    }

    pub(super) fn dir_names(dir: &Dir, path: &Path) -> io::Result<bool> {
        names(dir, path)
    }

    /// Whether `path` (not followed) names the very file `file` has open.
    pub(super) fn names(file: &File, path: &Path) -> io::Result<bool> {
        let open = file.metadata()?;
        match fs::symlink_metadata(path) {
            Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `O_NOFOLLOW` on a symlink fails with `ELOOP` (`EMLINK` on FreeBSD); `O_DIRECTORY` on a
    /// file with `ENOTDIR`.
    pub(super) fn is_wrong_type(err: &io::Error) -> bool {
        matches!(
            err.raw_os_error(),
            Some(libc::ELOOP | libc::EMLINK | libc::ENOTDIR | libc::ENXIO)
        )
    }

    /// Refuses a FIFO, socket or device planted at a lock path (`O_NONBLOCK` kept the open
    /// of a FIFO from waiting).
    fn regular(file: File) -> io::Result<File> {
        if file.metadata()?.is_file() {
            Ok(file)
        } else {
            Err(io::Error::from_raw_os_error(libc::ENXIO))
        }
    }
}

#[cfg(not(unix))]
mod imp {
    //! Elsewhere (Windows): a symlink is refused by checking the path before opening and the
    //! opened file after; the file is opened without delete sharing, so it cannot be removed
    //! while open and the path always names it. There is no directory lock.

    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::path::Path;

    use super::Kind;

    fn options() -> OpenOptions {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        #[cfg(windows)]
        {
            use std::os::windows::fs::OpenOptionsExt;
            // FILE_SHARE_READ | FILE_SHARE_WRITE: no FILE_SHARE_DELETE.
            options.share_mode(0x1 | 0x2);
            // FILE_FLAG_OPEN_REPARSE_POINT: open a symlink itself, never its target.
            options.custom_flags(0x0020_0000);
        }
        options
    }

    fn not_a_link(path: &Path) -> io::Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link",
            )),
            _ => Ok(()),
        }
    }

    fn checked(file: File) -> io::Result<File> {
        let meta = file.metadata()?;
        if meta.file_type().is_symlink() || !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    pub(super) fn open_file(path: &Path) -> io::Result<File> {
        not_a_link(path)?;
        checked(options().open(path)?)
    }

    pub(super) fn create_file(path: &Path, _mode: u32) -> io::Result<File> {
        checked(options().create_new(true).open(path)?)
    }

    /// Directories are not locked here; this only records that the path was checked.
    #[derive(Debug)]
    pub(crate) struct Dir;

    /// What a file is: its absolute path (an open lock file cannot be renamed or deleted).
    pub(crate) type FileId = std::path::PathBuf;

    pub(super) fn file_id(_file: &File, path: &Path) -> io::Result<FileId> {
        std::path::absolute(path)
    }

    pub(super) fn open_dir(path: &Path) -> io::Result<Dir> {
        not_a_link(path)?;
        if fs::metadata(path)?.is_dir() {
            Ok(Dir)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            ))
        }
    }

    pub(super) fn create_dir(path: &Path, _mode: u32) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    pub(super) fn lock_dir(_dir: &Dir, _kind: Kind, _wait: bool) -> io::Result<bool> {
        Ok(true)
    }

    pub(super) fn dir_names(_dir: &Dir, _path: &Path) -> io::Result<bool> {
        Ok(true)
    }

    pub(super) fn names(_file: &File, _path: &Path) -> io::Result<bool> {
        // The open file cannot be deleted or replaced (no delete sharing).
        Ok(true)
    }

    pub(super) fn is_wrong_type(err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::InvalidInput
    }
}
