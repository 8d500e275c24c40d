//! File locks on a shared host, with real processes: a symlink planted at a lock path is never
//! followed, lock files are private (0600) unless configured, 10,000 keys leave at most
//! `stripes` files, and wiping the lock directory while processes create under the lock never
//! lets two creators in.
//!
//! A child is this same binary run with `--exact child --nocapture` and its role in the
//! environment (see `support/children.rs`); the `child` test does nothing otherwise.
#![cfg(unix)]

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::file::{FileLocks, FileReadWriteMutex};
use dogpile_runtime::lock::RawMutex;
use dogpile_runtime::Region;
use fs4::fs_std::FileExt;

#[path = "support/children.rs"]
mod children;

const ROLE: &str = "DOGPILE_SHARED_HOST_ROLE";
const DIR: &str = "DOGPILE_SHARED_HOST_DIR";
/// Few stripes where the test wipes the directory: each wipe makes the next locker recreate
/// them all.
const WIPE_STRIPES: usize = 16;
/// How long each creator runs while the directory is wiped.
const WIPE_RUN: Duration = Duration::from_millis(2500);
/// How long any child may take.
const BOUND: Duration = Duration::from_secs(30);

fn spawn_child(role: &str, dir: &Path) -> Child {
    children::spawn_child(&[(ROLE, role), (DIR, &dir.display().to_string())])
}

/// Waits for a child to end, killing it (and failing) if it takes longer than `BOUND`.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("a child hung: {}", String::from_utf8_lossy(&output.stdout));
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Runs a child to its end (bounded) and returns what it printed.
fn run_child(role: &str, dir: &Path) -> String {
    let output = finish(spawn_child(role, dir));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "child {role} failed: {stdout}");
    stdout
}

/// The value a child printed as `name=value`.
fn printed(stdout: &str, name: &str) -> String {
    stdout
        .split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("the child printed no {name}: {stdout}"))
        .to_string()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// What a child process does, by its role; nothing when run as a normal test.
#[test]
fn child() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    match role.as_str() {
        "lock-victim" => {
            let locks = FileLocks::new(dir.join("locks")).unwrap();
            let mutex = locks.mutex("victim");
            match mutex.acquire() {
                Ok(()) => println!("result=locked"),
                Err(e) => println!("result=refused: {e}"),
            }
            // Did the lock land on the symlink's target? A second open file of this process
            // cannot lock it exclusively if so.
            let target = dir.join("target");
            if let Ok(file) = File::open(&target) {
                let free = FileExt::try_lock_exclusive(&file).unwrap();
                println!("target_locked={}", !free);
            }
        }
        "lock-one" => {
            let locks = FileLocks::new(dir.join("locks")).unwrap();
            let mutex = locks.mutex(&1u64);
            mutex.acquire().unwrap();
            mutex.release().unwrap();
            let group = FileLocks::builder(dir.join("group"))
                .mode(0o660)
                .build()
                .unwrap();
            let mutex = group.mutex(&1u64);
            mutex.acquire().unwrap();
            mutex.release().unwrap();
            println!("done=yes");
        }
        "many-keys" => {
            for (name, stripes) in [("default", None), ("few", Some(64))] {
                let mut builder = FileLocks::builder(dir.join(name));
                if let Some(stripes) = stripes {
                    builder = builder.stripes(stripes);
                }
                let locks = builder.build().unwrap();
                let region: Region<u64, u64, _, _> = Region::builder()
                    .mutexes(move |key: &u64| locks.mutex(key))
                    .build()
                    .unwrap();
                for key in 0..10_000u64 {
                    assert_eq!(region.get_with(&key, || key * 2), key * 2);
                }
            }
            println!("done=yes");
        }
        "rw-writer" => {
            let lock = FileReadWriteMutex::new(dir.join("rw.lock")).unwrap();
            fs::write(dir.join("opening"), "").unwrap();
            let _writing = lock.write().unwrap();
            fs::write(dir.join("acquired"), "").unwrap();
            thread::sleep(Duration::from_millis(100));
        }
        "creator" => creator(&dir),
        _ => panic!("unknown role {role}"),
    }
}

#[test]
fn a_symlink_at_a_lock_path_is_never_followed() {
    let dir = children::fresh_dir("symlink");
    let locks = FileLocks::new(dir.join("locks")).unwrap();
    fs::create_dir(locks.dir()).unwrap();
    let lock_path = locks.mutex("victim").path().to_path_buf();
    let target = dir.join("target");

    // A dangling symlink: following it would create the target.
    symlink(&target, &lock_path).unwrap();
    let stdout = run_child("lock-victim", &dir);
    let result = printed(&stdout, "result");
    assert!(result.starts_with("refused"), "{result}");
    assert!(result.contains("symbolic link"), "{result}");
    assert!(!target.exists(), "the symlink's target was created");
    assert!(
        fs::symlink_metadata(&lock_path)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced"
    );

    // A symlink to an existing file: following it would lock that file.
    fs::write(&target, "precious").unwrap();
    let stdout = run_child("lock-victim", &dir);
    assert!(
        printed(&stdout, "result").starts_with("refused"),
        "{stdout}"
    );
    assert_eq!(printed(&stdout, "target_locked"), "false");
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious");

    // The lock directory itself replaced by a symlink to another directory.
    fs::remove_file(&target).unwrap();
    fs::remove_dir_all(locks.dir()).unwrap();
    let elsewhere = dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, locks.dir()).unwrap();
    let stdout = run_child("lock-victim", &dir);
    let result = printed(&stdout, "result");
    assert!(result.contains("symbolic link"), "{result}");
    assert!(
        files_in(&elsewhere).is_empty(),
        "lock files were created through the symlink"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn lock_files_and_their_directory_are_private_unless_configured() {
    let dir = children::fresh_dir("modes");
    run_child("lock-one", &dir);
    let locks = dir.join("locks");
    assert_eq!(mode_of(&locks), 0o700);
    let files = files_in(&locks);
    assert!(!files.is_empty());
    for file in &files {
        assert_eq!(mode_of(file), 0o600, "{}", file.display());
    }
    // 0660 exactly, though the umask (022 in tests) would have made it 0640.
    let group = dir.join("group");
    assert_eq!(mode_of(&group), 0o770);
    for file in files_in(&group) {
        assert_eq!(mode_of(&file), 0o660, "{}", file.display());
    }

    // A directory removed while no lock is held is made again, as private.
    fs::remove_dir_all(&locks).unwrap();
    run_child("lock-one", &dir);
    assert_eq!(mode_of(&locks), 0o700);
    let _ = fs::remove_dir_all(&dir);
}

/// The lock-then-stat check: a process that waited for the lock of a file that was removed
/// meanwhile must not trust it, since the path now names another file, which someone holds.
#[test]
fn a_lock_on_a_removed_file_is_never_trusted() {
    let dir = children::fresh_dir("stale");
    let lock = FileReadWriteMutex::new(dir.join("rw.lock")).unwrap();
    let first = lock.write().unwrap();
    let child = spawn_child("rw-writer", &dir);
    children::wait_for(&dir.join("opening"));
    // Let the child open the file and wait for its lock.
    thread::sleep(Duration::from_millis(300));
    // A cleaner removes the file; the next locker creates a new one and holds it.
    fs::remove_file(dir.join("rw.lock")).unwrap();
    let second = lock.write().unwrap();
    // The child's lock on the removed file goes through now, but the path names `second`'s.
    drop(first);
    thread::sleep(Duration::from_millis(300));
    assert!(
        !dir.join("acquired").exists(),
        "the child trusted a lock on a removed file while another process held the path's"
    );
    drop(second);
    let output = finish(child);
    assert!(output.status.success());
    assert!(dir.join("acquired").exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn ten_thousand_keys_leave_at_most_stripes_files() {
    let dir = children::fresh_dir("many-keys");
    run_child("many-keys", &dir);
    let default = files_in(&dir.join("default")).len();
    let few = files_in(&dir.join("few")).len();
    println!("files left by 10,000 keys: {default} (1024 stripes), {few} (64 stripes)");
    assert!(default <= 1024, "{default} files");
    assert!(few <= 64, "{few} files");
    let _ = fs::remove_dir_all(&dir);
}

/// In a child: take the lock of one hot key again and again for `WIPE_RUN`, and inside it
/// create a marker file that only one creator may have at a time.
fn creator(dir: &Path) {
    let locks = FileLocks::builder(dir.join("locks"))
        .stripes(WIPE_STRIPES)
        .build()
        .unwrap();
    let marker = dir.join("marks").join("inside");
    let (mut rounds, mut overlaps) = (0, 0);
    let deadline = Instant::now() + WIPE_RUN;
    while Instant::now() < deadline {
        let mutex = locks.mutex("hot");
        mutex.acquire().unwrap();
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker);
        match created {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                thread::sleep(Duration::from_millis(2));
                fs::remove_file(&marker).unwrap();
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => overlaps += 1,
            Err(e) => panic!("{e}"),
        }
        mutex.release().unwrap();
        rounds += 1;
    }
    println!("rounds={rounds}");
    println!("overlaps={overlaps}");
}

#[test]
fn wiping_the_lock_directory_never_lets_two_creators_in() {
    const CREATORS: usize = 4;
    let dir = children::fresh_dir("wiped");
    fs::create_dir(dir.join("marks")).unwrap();
    let locks = dir.join("locks");
    let marker = dir.join("marks").join("inside");
    let mut creators: Vec<Child> = (0..CREATORS)
        .map(|_| spawn_child("creator", &dir))
        .collect();

    // A cleaner that deletes every lock file, in use or not, every few milliseconds.
    let (mut wipes, mut wipes_while_held) = (0, 0);
    let deadline = Instant::now() + WIPE_RUN + BOUND;
    while creators.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if Instant::now() >= deadline {
            for child in &mut creators {
                let _ = child.kill();
            }
            panic!("the creators never finished");
        }
        let held = marker.exists();
        if let Ok(entries) = fs::read_dir(&locks) {
            let mut removed = false;
            for entry in entries.flatten() {
                removed |= fs::remove_file(entry.path()).is_ok();
            }
            if removed {
                wipes += 1;
                wipes_while_held += usize::from(held);
            }
        }
        thread::sleep(Duration::from_millis(3));
    }
    let (mut rounds, mut overlaps) = (0, 0);
    for child in creators {
        let output = finish(child);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "a creator failed: {stdout}");
        rounds += printed(&stdout, "rounds").parse::<usize>().unwrap();
        overlaps += printed(&stdout, "overlaps").parse::<usize>().unwrap();
    }
    println!(
        "{rounds} creations, {wipes} wipes ({wipes_while_held} while a creator held the lock), \
         {overlaps} overlaps"
    );
    assert!(
        rounds >= 20,
        "only {rounds} creations: the lock barely worked"
    );
    assert!(
        wipes_while_held >= 5,
        "only {wipes_while_held} wipes hit a held lock"
    );
    assert_eq!(overlaps, 0, "two creators were inside at once");
    let _ = fs::remove_dir_all(&dir);
}

/// A lock file removed while another thread of the process holds a lock in the directory: the
/// file cannot be made again without the directory's exclusive lock, which would wait for that
/// thread (and with nested creators, forever). So the lock is refused at once, with an error
/// that says why; once the other lock is released, the file is made and locked.
#[test]
fn a_missing_lock_file_is_never_made_while_another_thread_holds_the_directory() {
    let dir = children::fresh_dir("missing");
    let locks = FileLocks::builder(dir.join("locks"))
        .stripes(2)
        .build()
        .unwrap();
    let stripe = |key: u64| locks.mutex(&key).path().to_path_buf();
    let first = 0u64;
    let other = (1..).find(|&k| stripe(k) != stripe(first)).unwrap();
    let held = locks.mutex(&first);
    held.acquire().unwrap();
    fs::remove_file(stripe(other)).unwrap();

    let (answered, answer) = std::sync::mpsc::channel();
    let waiter = {
        let mutex = locks.mutex(&other);
        thread::spawn(move || {
            let start = Instant::now();
            let refused = mutex.acquire().map_err(|e| e.to_string());
            answered.send((refused, start.elapsed())).unwrap();
            mutex
        })
    };
    let (refused, took) = answer
        .recv_timeout(Duration::from_secs(10))
        .expect("the lock waited for another thread of its process");
    let err = refused.expect_err("refused while another thread holds the directory");
    assert!(
        err.contains("missing") && err.contains("this process holds"),
        "{err}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    held.release().unwrap();
    let mutex = waiter.join().unwrap();
    mutex.acquire().unwrap();
    assert!(
        stripe(other).exists(),
        "made again once the directory was free"
    );
    mutex.release().unwrap();
    let _ = fs::remove_dir_all(&dir);
}
