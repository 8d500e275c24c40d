//! A dogpile mutex in Redis: `SET name token NX PX lease`, renewed while held, released by its
//! holder only.
//!
//! | state                   | `try_acquire` | `release` (holder's token)         |
//! |-------------------------|---------------|------------------------------------|
//! | free (no key)           | → held, true  | error                              |
//! | held, lease running     | false         | → free                             |
//! | holder died             | false until the lease runs out, then as free | — |
//! | lease lost (not renewed)| another may take it | error: reported, counted     |
//! | `SET NX` failed or timed out | error; the token is released by the handle's sweeper once the server answers | — |

use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::Duration;

use super::Redis;
use crate::lock::{poll_acquire, Fence};
use crate::sync::{AtomicBool, Mutex, Ordering};
use crate::{BackendError, RawMutex};

/// The first and the longest pause between two tries of a held mutex.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MOST: Duration = Duration::from_millis(50);

/// Deletes the key only if it still holds the caller's token.
const RELEASE: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"#;

/// Extends the lease only if the key still holds the caller's token.
const RENEW: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"#;

/// A [`RawMutex`] in Redis, for processes on many hosts; made by [`Redis::mutex`].
///
/// Taking it sets a key to a random token with the lease as its expiry, if the key is absent.
/// While held, a thread renews the lease ([`RedisBuilder::renew_every`](super::RedisBuilder::renew_every)),
/// so a creator may run longer than the lease; if the holder dies, the key expires with its
/// lease and another process takes over. Release and renewal check the token in a server-side
/// script, so a holder whose lease ran out can never release or extend another's; and while
/// held, [`fence`](RawMutex::fence) hands the token to the store, which writes the creator's
/// value only if the token still holds the lock. A lock command that fails or times out may
/// still be applied by the server later: its token is released by the handle once the server
/// answers again, so no lock stays held in nobody's name.
///
/// ```no_run
/// use dogpile_runtime::backend::redis::Redis;
/// use dogpile_runtime::lock::RawMutex;
/// let redis = Redis::open("redis://127.0.0.1/")?;
/// let a = redis.mutex("reports", &7u32);
/// let b = redis.mutex("reports", &7u32); // as another host would
/// assert!(a.try_acquire()?);
/// assert!(!b.try_acquire()?);
/// assert!(a.fence().is_some());
/// a.release()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisMutex {
    redis: Redis,
    name: Vec<u8>,
    held: Mutex<Option<Held>>,
}

struct Held {
    token: String,
    /// Dropping it stops the renewer.
    stop: mpsc::Sender<()>,
    /// Set by the renewer when a renewal found the key gone or taken.
    lost: Arc<AtomicBool>,
}

impl RedisMutex {
    pub(super) fn new(redis: Redis, name: Vec<u8>) -> Self {
        RedisMutex {
            redis,
            name,
            held: Mutex::new(None),
        }
    }

    fn lease_ms(&self) -> u64 {
        millis(self.redis.lease())
    }

    /// `SET name token NX PX lease`.
    fn set_nx(&self, token: &str) -> ::redis::Cmd {
        let mut set = ::redis::cmd("SET");
        set.arg(&self.name)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms());
        set
    }

    fn release_script(&self, token: &str) -> ::redis::ScriptInvocation<'static> {
        release_script(&self.name, token)
    }

    /// After a successful `SET NX`: starts the renewer and records the hold. Without a renewer
    /// the lease would run out under a long creator, so the mutex is given back instead.
    fn hold(&self, token: String) -> Result<Option<String>, BackendError> {
        let (stop, stopped) = mpsc::channel();
        let lost = Arc::new(AtomicBool::new(false));
        match self.start_renewer(token.clone(), stopped, Arc::clone(&lost)) {
            Ok(()) => {
                *self.held.lock() = Some(Held { token, stop, lost });
                Ok(None)
            }
            // The caller releases `token` (blocking or async) and reports the error.
            Err(_) => Ok(Some(token)),
        }
    }

    /// Takes the hold for a release. The caller stops the renewer (drops `stop`) before the
    /// release is sent, so that a renewal racing the release is never counted as a lost lease.
    fn unhold(&self) -> Result<Held, BackendError> {
        self.held.lock().take().ok_or_else(|| {
            BackendError::new("release of a Redis mutex that this process does not hold")
        })
    }

    fn released(lost: &AtomicBool, deleted: i64) -> Result<(), BackendError> {
        if lost.load(Ordering::Relaxed) || deleted != 1 {
            return Err(BackendError::new(
                "the Redis mutex's lease ran out before its release: another process may have \
                 regenerated the value at the same time; raise the lease",
            ));
        }
        Ok(())
    }

    /// Renews the lease until told to stop, on a thread of its own (off any async runtime);
    /// sets `lost` if the lease was lost on the way.
    fn start_renewer(
        &self,
        token: String,
        stop: mpsc::Receiver<()>,
        lost: Arc<AtomicBool>,
    ) -> std::io::Result<()> {
        let (redis, name, lease_ms) = (self.redis.clone(), self.name.clone(), self.lease_ms());
        let every = self.redis.settings().renew_every;
        thread::Builder::new()
            .name("dogpile-redis-lease".into())
            .spawn(move || loop {
                match stop.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let renewed = redis.run("lease renewal", |c| {
                    ::redis::Script::new(RENEW)
                        .key(&name)
                        .arg(&token)
                        .arg(lease_ms)
                        .invoke::<i64>(c)
                });
                match renewed {
                    Ok(1) => {}
                    // Released meanwhile: the holder stopped this renewer before releasing.
                    Ok(_) if stopped(&stop) => return,
                    Ok(_) => {
                        // The key expired or changed hands: another holder may be creating.
                        lost.store(true, Ordering::Relaxed);
                        redis.shared.leases_lost.fetch_add(1, Ordering::Relaxed);
                        #[cfg(feature = "tracing")]
                        tracing::warn!(
                            "dogpile: a Redis mutex lease ran out while its creator ran"
                        );
                        return;
                    }
                    // A failed renewal is retried at the next beat; the lease covers two.
                    Err(_) => {}
                }
            })
            .map(drop)
    }
}

/// The release script: deletes `name` only if it still holds `token`.
pub(super) fn release_script(name: &[u8], token: &str) -> ::redis::ScriptInvocation<'static> {
    static SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(RELEASE));
    let mut invocation = SCRIPT.prepare_invoke();
    invocation.key(name.to_vec()).arg(token.to_string());
    invocation
}

/// `duration` in whole milliseconds, at least 1 (the builder keeps leases at 1 ms or more).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn stopped(stop: &mpsc::Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty))
}

fn token() -> Result<String, BackendError> {
    let a = getrandom::u64()
        .map_err(|e| BackendError::new(format!("no randomness for a Redis mutex token: {e}")))?;
    let b = getrandom::u64()
        .map_err(|e| BackendError::new(format!("no randomness for a Redis mutex token: {e}")))?;
    Ok(format!("{a:016x}{b:016x}"))
}

fn no_renewer() -> BackendError {
    BackendError::new("could not start the Redis lease renewal thread; the mutex was given back")
}

impl RawMutex for RedisMutex {
    fn try_acquire(&self) -> Result<bool, BackendError> {
        let token = token()?;
        let set: Option<String> = self
            .redis
            .run("SET NX", |c| self.set_nx(&token).query(c))
            .inspect_err(|err| self.redis.lock_maybe_set(err, &self.name, &token))?;
        if set.is_none() {
            return Ok(false);
        }
        match self.hold(token)? {
            None => Ok(true),
            Some(token) => {
                let released = self
                    .redis
                    .run("release", |c| self.release_script(&token).invoke::<i64>(c));
                if released.is_err() {
                    self.redis.orphaned(&self.name, &token);
                }
                Err(no_renewer())
            }
        }
    }

    fn acquire(&self) -> Result<(), BackendError> {
        // Redis cannot wake a waiter: poll, sleeping a little longer each time.
        poll_acquire(|| self.try_acquire(), None, POLL_FIRST, POLL_MOST).map(|_| ())
    }

    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, BackendError> {
        poll_acquire(|| self.try_acquire(), Some(timeout), POLL_FIRST, POLL_MOST)
    }

    fn release(&self) -> Result<(), BackendError> {
        let Held { token, stop, lost } = self.unhold()?;
        drop(stop);
        let deleted = self
            .redis
            .run("release", |c| self.release_script(&token).invoke::<i64>(c))
            .inspect_err(|_| self.redis.orphaned(&self.name, &token))?;
        Self::released(&lost, deleted)
    }

    fn fence(&self) -> Option<Fence> {
        let held = self.held.lock();
        held.as_ref()
            .map(|held| Fence::new(self.name.clone(), held.token.clone()))
    }
}

/// With the `tokio` feature: the same commands through the async client.
#[cfg(feature = "tokio")]
impl crate::lock::AsyncRawMutex for RedisMutex {
    async fn try_acquire_async(&self) -> Result<bool, BackendError> {
        let token = token()?;
        let set_nx = self.set_nx(&token);
        let set: Option<String> = self
            .redis
            .run_async(
                "SET NX",
                |mut c| async move { set_nx.query_async(&mut c).await },
            )
            .await
            .inspect_err(|err| self.redis.lock_maybe_set(err, &self.name, &token))?;
        if set.is_none() {
            return Ok(false);
        }
        match self.hold(token)? {
            None => Ok(true),
            Some(token) => {
                let release = self.release_script(&token);
                let released = self
                    .redis
                    .run_async("release", |mut c| async move {
                        release.invoke_async::<i64>(&mut c).await
                    })
                    .await;
                if released.is_err() {
                    self.redis.orphaned(&self.name, &token);
                }
                Err(no_renewer())
            }
        }
    }

    async fn release_async(&self) -> Result<(), BackendError> {
        let Held { token, stop, lost } = self.unhold()?;
        drop(stop);
        let release = self.release_script(&token);
        let deleted = self
            .redis
            .run_async("release", |mut c| async move {
                release.invoke_async::<i64>(&mut c).await
            })
            .await
            .inspect_err(|_| self.redis.orphaned(&self.name, &token))?;
        Self::released(&lost, deleted)
    }

    fn releases_at_once(&self) -> bool {
        false
    }
}

impl fmt::Debug for RedisMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMutex")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("held", &self.held.lock().is_some())
            .finish()
    }
}
