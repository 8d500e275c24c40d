//! File locks with real processes: children of this test binary share a lock directory and a
//! store on disk. One expired key, eight processes: one regeneration. A holder killed with
//! SIGKILL frees its lock at once.
//!
//! A child is this same binary run with `--exact child --nocapture` and its role in the
//! environment; the `child` test does nothing otherwise.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::file::{FileLocks, FileMutex, FileReadWriteMutex};
use dogpile_runtime::clock::Timestamp;
use dogpile_runtime::lock::RawMutex;
use dogpile_runtime::region::{Stamp, Store};
use dogpile_runtime::{BackendError, Region};

#[path = "support/children.rs"]
mod children;
use children::wait_for;

const ROLE: &str = "DOGPILE_FILE_LOCK_ROLE";
const DIR: &str = "DOGPILE_FILE_LOCK_DIR";

/// A fresh directory with a `locks` directory in it.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = children::fresh_dir(name);
    fs::create_dir_all(dir.join("locks")).unwrap();
    dir
}

fn spawn_child(role: &str, dir: &Path) -> Child {
    children::spawn_child(&[(ROLE, role), (DIR, &dir.display().to_string())])
}

/// Values on disk, one file per key: `<created nanos> <value>`, replaced atomically.
struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    fn path(&self, key: &u64) -> PathBuf {
        self.dir.join(format!("value-{key}"))
    }
}

impl Store<u64, u64> for DirStore {
    fn get(&self, key: &u64) -> Result<Option<(u64, Stamp)>, BackendError> {
        let Ok(text) = fs::read_to_string(self.path(key)) else {
            return Ok(None);
        };
        let mut parts = text.split_whitespace().map(|p| p.parse::<i64>());
        match (parts.next(), parts.next()) {
            (Some(Ok(created)), Some(Ok(value))) => {
                Ok(Some((value as u64, Timestamp::from_nanos(created).into())))
            }
            _ => Ok(None),
        }
    }

    fn put(&self, key: &u64, value: &u64, stamp: Stamp) -> Result<(), BackendError> {
        let tmp = self.dir.join(format!("tmp-{key}-{}", std::process::id()));
        fs::write(&tmp, format!("{} {value}", stamp.created().as_nanos()))
            .and_then(|()| fs::rename(&tmp, self.path(key)))
            .map_err(|e| BackendError::with_source("could not write the value file", e))
    }

    fn restamp(&self, _: &u64, _: Stamp, _: Stamp) -> Result<bool, BackendError> {
        // These tests never soft-invalidate one key.
        Ok(false)
    }

    fn remove(&self, key: &u64) -> Result<(), BackendError> {
        let _ = fs::remove_file(self.path(key));
        Ok(())
    }

    fn clear(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn count(&self) -> Option<usize> {
        None
    }
}

fn locks(dir: &Path) -> FileLocks {
    FileLocks::new(dir.join("locks")).unwrap()
}

fn region(dir: &Path) -> Region<u64, u64, DirStore, FileMutex> {
    let locks = locks(dir);
    Region::builder()
        .expiry(Duration::from_secs(60))
        .store(DirStore {
            dir: dir.to_path_buf(),
        })
        .mutexes(move |key: &u64| locks.mutex(key))
        .build()
        .unwrap()
}

/// What a child process does, by its role; nothing when run as a normal test.
#[test]
fn child() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    match role.split_once(':') {
        Some(("reader", n)) => {
            let region = region(&dir);
            fs::write(dir.join(format!("ready-{n}")), "").unwrap();
            wait_for(&dir.join("go"));
            let value = region.get_with(&1, || {
                let mut log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("creations"))
                    .unwrap();
                writeln!(log, "{n}").unwrap();
                thread::sleep(Duration::from_millis(300));
                2
            });
            println!("value={value}");
        }
        Some(("holder", _)) => {
            let mutex = locks(&dir).mutex(&1u64);
            mutex.acquire().unwrap();
            fs::write(dir.join("holding"), "").unwrap();
            thread::sleep(Duration::from_secs(3600));
        }
        Some(("creator", _)) => {
            let region = region(&dir);
            region.get_with(&1, || {
                fs::write(dir.join("creating"), "").unwrap();
                thread::sleep(Duration::from_secs(3600));
                1
            });
        }
        Some(("reader-lock", _)) => {
            let lock = FileReadWriteMutex::new(dir.join("rw.lock")).unwrap();
            let _reading = lock.read().unwrap();
            fs::write(dir.join("holding"), "").unwrap();
            thread::sleep(Duration::from_secs(3600));
        }
        _ => panic!("unknown role {role}"),
    }
}

#[test]
fn eight_processes_on_one_expired_key_regenerate_it_once() {
    let dir = fresh_dir("expired");
    // An old value: expired for every process.
    DirStore { dir: dir.clone() }
        .put(&1, &1, Timestamp::from_nanos(1_000_000_000).into())
        .unwrap();
    let children: Vec<Child> = (0..8)
        .map(|n| spawn_child(&format!("reader:{n}"), &dir))
        .collect();
    for n in 0..8 {
        wait_for(&dir.join(format!("ready-{n}")));
    }
    fs::write(dir.join("go"), "").unwrap();
    let mut values = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        // libtest prints the test's name on the same line.
        let value = stdout
            .split("value=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the child printed no value")
            .to_string();
        values.push(value);
    }
    let creations = fs::read_to_string(dir.join("creations")).unwrap();
    assert_eq!(creations.lines().count(), 1, "creators: {creations:?}");
    assert!(values.iter().all(|v| v == "1" || v == "2"), "{values:?}");
    assert!(
        values.iter().any(|v| v == "2"),
        "the creator returns the new value"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lock_at_once() {
    let dir = fresh_dir("killed");
    let mut holder = spawn_child("holder:0", &dir);
    wait_for(&dir.join("holding"));
    let mutex = locks(&dir).mutex(&1u64);
    assert!(!mutex.try_acquire().unwrap(), "another process holds it");
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    let start = Instant::now();
    assert!(mutex.acquire_timeout(Duration::from_secs(5)).unwrap());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    mutex.release().unwrap();
    let _ = fs::remove_dir_all(&dir);
}

/// A process killed with SIGKILL in the middle of its creator, through a region: a caller of
/// this process that was waiting for it takes the key's lock as soon as the process is gone,
/// makes the value once and stores it; nothing of the dead creator is left (no value, no lock).
#[test]
fn a_creator_killed_mid_creation_is_replaced_at_once_through_a_region() {
    let dir = fresh_dir("killed-creator");
    let mut creator = spawn_child("creator:0", &dir);
    wait_for(&dir.join("creating"));
    let region = region(&dir);
    let (done, answer) = std::sync::mpsc::channel();
    let waiter = {
        let region = region.clone();
        thread::spawn(move || {
            let began = Instant::now();
            let made = region.get_with_served(&1, || 42);
            let _ = done.send((made, began.elapsed()));
        })
    };
    thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "the child holds the key's lock");
    let killed = Instant::now();
    creator.kill().unwrap(); // SIGKILL
    creator.wait().unwrap();
    let ((value, served), waited) = answer
        .recv_timeout(Duration::from_secs(10))
        .expect("the waiter never got the key's lock after the kill");
    waiter.join().unwrap();
    eprintln!(
        "waited {waited:?} in all, {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        (value, served),
        (42, dogpile_runtime::region::Served::Created)
    );
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(region.get_with(&1, || 7), 42, "stored");
    assert!(
        locks(&dir).mutex(&1u64).try_acquire().unwrap(),
        "no lock left behind"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_in_another_process_keeps_writers_out_until_killed() {
    let dir = fresh_dir("rw");
    let mut reader = spawn_child("reader-lock:0", &dir);
    wait_for(&dir.join("holding"));
    let lock = FileReadWriteMutex::new(dir.join("rw.lock")).unwrap();
    assert!(lock.try_write().unwrap().is_none());
    assert!(lock.try_read().unwrap().is_some(), "readers share");
    reader.kill().unwrap();
    reader.wait().unwrap();
    assert!(lock.try_write().unwrap().is_some());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn threads_of_one_process_exclude_each_other_too() {
    let dir = fresh_dir("threads");
    let a = locks(&dir).mutex(&"k");
    let b = locks(&dir).mutex(&"k");
    a.acquire().unwrap();
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        b.acquire().unwrap();
        b.release().unwrap();
        start.elapsed()
    });
    thread::sleep(Duration::from_millis(100));
    a.release().unwrap();
    assert!(waiter.join().unwrap() >= Duration::from_millis(90));
    assert!(a.release().is_err(), "a release without a hold is an error");
    let _ = fs::remove_dir_all(&dir);
}

/// A thread that holds a guard and asks to wait for a conflicting one on the same file gets
/// an error at once, instead of waiting for itself in `flock` forever; another thread of the
/// process waits for it as another process would.
#[test]
fn a_read_write_lock_never_waits_for_its_own_thread() {
    let dir = fresh_dir("rw-self");
    let lock = FileReadWriteMutex::new(dir.join("rw.lock")).unwrap();
    let reading = lock.read().unwrap();
    let also_reading = lock
        .read()
        .expect("a second read of one thread shares the lock");
    let err = lock.write().expect_err("would wait for its own reads");
    assert!(err.to_string().contains("wait for itself"), "{err}");
    assert!(lock.try_write().unwrap().is_none());
    drop((reading, also_reading));

    let writing = lock.write().unwrap();
    assert!(lock.read().is_err() && lock.write().is_err());
    // The same file under another name is the same lock.
    let alias = FileReadWriteMutex::new(dir.join(".").join("rw.lock")).unwrap();
    assert!(alias.read().is_err());
    let other = {
        let lock = FileReadWriteMutex::new(dir.join("rw.lock")).unwrap();
        thread::spawn(move || {
            let start = Instant::now();
            let _reading = lock.read().unwrap();
            start.elapsed()
        })
    };
    thread::sleep(Duration::from_millis(100));
    drop(writing);
    assert!(other.join().unwrap() >= Duration::from_millis(90));
    assert!(lock.write().is_ok(), "every guard is gone");
    let _ = fs::remove_dir_all(&dir);
}
