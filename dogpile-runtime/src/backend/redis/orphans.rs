//! Locks that a failed lock command may have left in this process's name.
//!
//! A `SET NX` that timed out on the client may still be applied by the server (it was only
//! stalled): the key's lock is then held by a token nobody holds, until its lease runs out.
//! The same goes for a release that failed. So the token of every lock command that failed is
//! remembered here, and a thread of the handle releases it (by token, so never anyone else's
//! hold) once the server answers again.
//!
//! | orphan                          | what the sweeper does                          |
//! |---------------------------------|------------------------------------------------|
//! | release deletes it (answer 1)   | forgotten: the lock was ours and is free       |
//! | release finds it not ours (0)   | retried; forgotten after 3 such answers, spaced by the sweep interval (the late command, if any, has been applied by then) |
//! | server does not answer          | retried; forgotten after a minute (the lease still bounds it) |
//!
//! A `SET NX` that the circuit breaker did not send leaves nothing to release; a release it
//! did not send leaves the lock held, and is an orphan like any other.

use std::thread;
use std::time::{Duration, Instant};

use super::mutex::release_script;
use super::Redis;
use crate::sync::Mutex;

/// How often the sweeper retries.
const SWEEP_EVERY: Duration = Duration::from_millis(20);
/// "Not ours" answers after which an orphan is forgotten.
const CONFIRMATIONS: u32 = 3;
/// How long an orphan is retried against a server that does not answer.
const GIVE_UP: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Orphans(Mutex<State>);

#[derive(Default)]
struct State {
    list: Vec<Orphan>,
    /// Whether a sweeper thread runs (it stops when the list is empty).
    sweeping: bool,
}

struct Orphan {
    name: Vec<u8>,
    token: String,
    not_ours: u32,
    since: Instant,
}

impl Redis {
    /// After a `SET NX` of `token` on `name` failed: an orphan, unless the command was never
    /// sent (the circuit breaker refused it), so that no server can apply it later.
    pub(super) fn lock_maybe_set(&self, err: &crate::BackendError, name: &[u8], token: &str) {
        if !super::was_not_sent(err) {
            self.orphaned(name, token);
        }
    }

    /// Remembers that the lock `name` may be held by `token` although no one holds it, and
    /// makes sure a sweeper releases it.
    pub(super) fn orphaned(&self, name: &[u8], token: &str) {
        let mut state = self.shared.orphans.0.lock();
        state.list.push(Orphan {
            name: name.to_vec(),
            token: token.to_string(),
            not_ours: 0,
            since: Instant::now(),
        });
        if !state.sweeping {
            let redis = self.clone();
            let spawned = thread::Builder::new()
                .name("dogpile-redis-orphans".into())
                .spawn(move || redis.sweep());
            // Without a thread the lease still frees the lock; the next orphan tries again.
            state.sweeping = spawned.is_ok();
        }
    }

    fn sweep(&self) {
        loop {
            thread::sleep(SWEEP_EVERY);
            let batch: Vec<(Vec<u8>, String)> = {
                let state = self.shared.orphans.0.lock();
                state
                    .list
                    .iter()
                    .map(|o| (o.name.clone(), o.token.clone()))
                    .collect()
            };
            for (name, token) in batch {
                let released = self.run("orphan release", |c| {
                    release_script(&name, &token).invoke::<i64>(c)
                });
                let mut state = self.shared.orphans.0.lock();
                let Some(at) = state
                    .list
                    .iter()
                    .position(|o| o.name == name && o.token == token)
                else {
                    continue;
                };
                let orphan = &mut state.list[at];
                let forget = match released {
                    Ok(1) => true,
                    Ok(_) => {
                        orphan.not_ours += 1;
                        orphan.not_ours >= CONFIRMATIONS
                    }
                    Err(_) => orphan.since.elapsed() > GIVE_UP,
                };
                if forget {
                    state.list.swap_remove(at);
                }
            }
            let mut state = self.shared.orphans.0.lock();
            if state.list.is_empty() {
                state.sweeping = false;
                return;
            }
        }
    }
}
