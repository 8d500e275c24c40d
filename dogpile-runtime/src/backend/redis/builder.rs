//! [`RedisBuilder`]: the address, the timeouts and the lease, checked once, when the handle is
//! built.

use std::fmt;
use std::time::Duration;

use ::redis::IntoConnectionInfo;

use super::breaker::BreakerSettings;
use super::connection::{Sentinel, Target};
use super::Redis;
use crate::ConfigError;

/// The longest duration any option takes: longer is a unit mistake, not a setting.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Leases and renewals are sent in milliseconds.
const SHORTEST_LEASE: Duration = Duration::from_millis(1);

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const DEFAULT_LEASE: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_BREAKER_FAILURES: u32 = 3;
pub(super) const DEFAULT_BREAKER_COOL_DOWN: Duration = Duration::from_secs(1);

/// The timeouts and lease of a [`Redis`] handle, as checked by [`RedisBuilder::build`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub(super) timeout: Duration,
    pub(super) lease: Duration,
    pub(super) renew_every: Duration,
    pub(super) breaker: BreakerSettings,
}

/// Builds a [`Redis`] handle: made by [`Redis::builder`]; every option is checked by
/// [`build`](Self::build), which returns a [`ConfigError`] for a value that cannot work.
///
/// The address says what to connect to:
///
/// | address                                           | what                                  |
/// |---------------------------------------------------|---------------------------------------|
/// | `redis://[user:pass@]host:port/db`                | one server                            |
/// | `rediss://...`                                    | one server over TLS (feature `redis-tls`) |
/// | `unix:///path/to/socket`                          | one server on a Unix socket           |
/// | `redis+cluster://[user:pass@]h1:p1,h2:p2`         | a Redis Cluster, from its seed nodes   |
/// | `rediss+cluster://...`                            | a Redis Cluster over TLS              |
/// | `redis+sentinel://[user:pass@]s1:p1,s2:p2/service[/db]` | the primary of `service`, asked of Sentinel at each connection |
///
/// ```
/// use dogpile_runtime::backend::redis::Redis;
/// use std::time::Duration;
///
/// let redis = Redis::builder("redis://127.0.0.1:6379/")
///     .timeout(Duration::from_millis(250))
///     .lease(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(redis.lease(), Duration::from_secs(2));
///
/// // A lease that a single slow command could outlast is refused.
/// let err = Redis::builder("redis://127.0.0.1/")
///     .timeout(Duration::from_secs(1))
///     .lease(Duration::from_millis(500))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.option(), "lease");
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisBuilder {
    url: String,
    timeout: Duration,
    lease: Duration,
    renew_every: Option<Duration>,
    breaker_failures: u32,
    breaker_cool_down: Duration,
    #[cfg(feature = "redis-tls")]
    root_certificate: Option<Vec<u8>>,
}

impl RedisBuilder {
    pub(super) fn new(url: &str) -> Self {
        RedisBuilder {
            url: url.to_string(),
            timeout: DEFAULT_TIMEOUT,
            lease: DEFAULT_LEASE,
            renew_every: None,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cool_down: DEFAULT_BREAKER_COOL_DOWN,
            #[cfg(feature = "redis-tls")]
            root_certificate: None,
        }
    }

    /// The longest a connect or a command may take before it fails (default 1 s): an
    /// unreachable server is an error after this long, never a hang.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// let redis = Redis::builder("redis://127.0.0.1/").timeout(Duration::from_millis(200)).build()?;
    /// assert_eq!(redis.timeout(), Duration::from_millis(200));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a mutex stays held if its holder dies or loses the server (default 5 s). A
    /// live holder renews it (see [`renew_every`](Self::renew_every)) for as long as its
    /// creator runs, so a creator may run longer than the lease. With the default renewal (a
    /// third of the lease), it must be at least three timeouts.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// let redis = Redis::builder("redis://127.0.0.1/").lease(Duration::from_secs(3)).build()?;
    /// assert_eq!(redis.lease(), Duration::from_secs(3));
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often a held mutex's lease is renewed (default a third of the lease). A renewal
    /// may take up to the timeout to land, so this plus the timeout must fit in the lease, and
    /// it must be no shorter than the timeout: renewals sent more often than one may take to
    /// land would keep the renewer busy most of the time whenever the server is slow.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// let err = Redis::builder("redis://127.0.0.1/")
    ///     .lease(Duration::from_secs(3))
    ///     .renew_every(Duration::from_secs(3))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.option(), "renew_every");
    /// ```
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// How many calls in a row must go unanswered (a timeout, a connection refused or broken)
    /// before the handle's circuit breaker opens (default 3). While it is open, calls fail at
    /// once with a [`BackendError`](crate::BackendError) whose source is a
    /// [`BreakerOpen`](super::BreakerOpen), instead of each waiting for the timeout; a region
    /// then calls the creator directly (or returns the error, as configured). An error the
    /// server answers (a script's, `READONLY`) is not a failure here: the server is there.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// let redis = Redis::builder("redis://127.0.0.1/").breaker_failures(1).build()?;
    /// assert_eq!(Redis::builder("redis://127.0.0.1/").breaker_failures(0).build().unwrap_err().option(),
    ///            "breaker_failures");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn breaker_failures(mut self, failures: u32) -> Self {
        self.breaker_failures = failures;
        self
    }

    /// How long the circuit breaker stays open before it probes the server (default 1 s): a
    /// `PING` on a new connection, sent by a thread of the handle, so that no caller waits for
    /// it. Answered, the breaker closes and calls are sent again; not answered, it stays open
    /// for another cool-down. The longest calls keep failing at once after the server is back
    /// is about this long.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// let redis = Redis::builder("redis://127.0.0.1/")
    ///     .breaker_cool_down(Duration::from_millis(500))
    ///     .build()?;
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn breaker_cool_down(mut self, cool_down: Duration) -> Self {
        self.breaker_cool_down = cool_down;
        self
    }

    /// Trusts the certificate authority in `pem` (PEM text) for `rediss://` addresses, in
    /// place of the system's trust store: for servers whose certificate a private authority
    /// signed.
    ///
    /// ```no_run
    /// # use dogpile_runtime::backend::redis::Redis;
    /// let ca = std::fs::read("/etc/redis/ca.crt")?;
    /// let redis = Redis::builder("rediss://cache.internal:6380/").tls_root_certificate(ca).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Checks the options and makes the handle. It connects lazily: a server that is down
    /// now is an error of the first command, not of `build`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option: an address that does not parse (or names TLS
    /// without the `redis-tls` feature); a duration of zero or of more than 100 years; a lease
    /// not longer than the timeout; a renewal interval shorter than the timeout (with the
    /// default renewal, a lease under three timeouts), or that, with the timeout, does not fit
    /// in the lease; a breaker that opens after 0 failures.
    ///
    /// ```
    /// # use dogpile_runtime::backend::redis::Redis;
    /// # use std::time::Duration;
    /// assert_eq!(Redis::builder("not a url").build().unwrap_err().option(), "url");
    /// let zero = Redis::builder("redis://127.0.0.1/").lease(Duration::ZERO).build();
    /// assert_eq!(zero.unwrap_err().option(), "lease");
    /// let forever = Redis::builder("redis://127.0.0.1/").timeout(Duration::MAX).build();
    /// assert_eq!(forever.unwrap_err().option(), "timeout");
    /// // Renewed every 667 µs, though a renewal may take 1 ms to land.
    /// let short = Redis::builder("redis://127.0.0.1/")
    ///     .timeout(Duration::from_millis(1))
    ///     .lease(Duration::from_millis(2))
    ///     .build();
    /// assert_eq!(short.unwrap_err().option(), "lease");
    /// ```
    pub fn build(self) -> Result<Redis, ConfigError> {
        // Every setting that cannot work, at once: the durations, then the address.
        match (self.settings(), self.target(self.timeout)) {
            (Ok(settings), Ok(target)) => Ok(Redis::from_parts(target, settings, shown(&self.url))),
            (Err(err), Ok(_)) | (Ok(_), Err(err)) => Err(err),
            (Err(settings), Err(target)) => Err(settings.and(target)),
        }
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        let (timeout, lease) = (self.timeout, self.lease);
        let each = [
            within("timeout", timeout, SHORTEST_LEASE, "1 s is the default"),
            within("lease", lease, SHORTEST_LEASE, "5 s is the default"),
            self.renew_every.map_or(Ok(()), |every| {
                within("renew_every", every, SHORTEST_LEASE, "a third of the lease")
            }),
            within(
                "breaker_cool_down",
                self.breaker_cool_down,
                SHORTEST_LEASE,
                "1 s is the default",
            ),
            if self.breaker_failures == 0 {
                Err(ConfigError::new(
                    "breaker_failures",
                    "0 would open the circuit breaker before any call failed; use 1 to open \
                     it at the first failure (3 is the default)",
                ))
            } else {
                Ok(())
            },
        ];
        if let Some(invalid) = ConfigError::all(each.into_iter().filter_map(Result::err)) {
            // How they fit together is judged once each is right.
            return Err(invalid);
        }
        if lease <= timeout {
            return Err(ConfigError::new(
                "lease",
                format!(
                    "{lease:?} is not longer than the command timeout ({timeout:?}): one slow \
                     command could outlast it; use a lease of a few timeouts (the default is 5 s)"
                ),
            ));
        }
        let renew_every = self.renew_every.unwrap_or(lease / 3);
        if renew_every.saturating_add(timeout) > lease {
            return Err(ConfigError::new(
                "renew_every",
                format!(
                    "a renewal sent every {renew_every:?} may take up to the timeout \
                     ({timeout:?}) to land, which does not fit in the lease ({lease:?}); \
                     renew more often, shorten the timeout or lengthen the lease"
                ),
            ));
        }
        if renew_every < timeout {
            let (option, instead) = match self.renew_every {
                Some(_) => (
                    "renew_every",
                    "renew less often or shorten the timeout".into(),
                ),
                None => (
                    "lease",
                    format!(
                        "use a lease of at least three timeouts ({:?}) or a shorter timeout",
                        timeout.saturating_mul(3)
                    ),
                ),
            };
            return Err(ConfigError::new(
                option,
                format!(
                    "a renewal every {renew_every:?} may take up to the timeout ({timeout:?}) \
                     to land, so on a slow server the renewer would be renewing most of the \
                     time: the lease is shorter than renewal can sustain; {instead}"
                ),
            ));
        }
        Ok(Settings {
            timeout,
            lease,
            renew_every,
            breaker: BreakerSettings {
                failures: self.breaker_failures,
                cool_down: self.breaker_cool_down,
            },
        })
    }

    fn target(&self, timeout: Duration) -> Result<Target, ConfigError> {
        let url = self.url.as_str();
        let bad = |why: String| ConfigError::new("url", format!("{url:?}: {why}"));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(
                "not an address; use redis://host:port/, rediss://, redis+cluster:// or \
                 redis+sentinel://"
                    .into(),
            ));
        };
        let base = scheme
            .strip_suffix("+cluster")
            .or_else(|| scheme.strip_suffix("+sentinel"))
            .unwrap_or(scheme);
        if base == "rediss" && !cfg!(feature = "redis-tls") {
            return Err(bad(
                "TLS needs the `redis-tls` feature of dogpile (or dogpile-runtime)".into(),
            ));
        }
        #[cfg(feature = "redis-tls")]
        let certificates = self
            .root_certificate
            .clone()
            .map(|root| ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root),
            });
        match scheme {
            "redis" | "rediss" | "unix" | "redis+unix" => {
                #[cfg(feature = "redis-tls")]
                if let Some(certificates) = certificates {
                    if base != "rediss" {
                        return Err(ConfigError::new(
                            "tls_root_certificate",
                            "a root certificate is for rediss:// addresses",
                        ));
                    }
                    return ::redis::Client::build_with_tls(url, certificates)
                        .map(Target::Server)
                        .map_err(|e| bad(e.to_string()));
                }
                ::redis::Client::open(url)
                    .map(Target::Server)
                    .map_err(|e| bad(e.to_string()))
            }
            "redis+cluster" | "rediss+cluster" => {
                let (userinfo, hosts, path) = split_hosts(rest);
                let seeds = hosts
                    .iter()
                    .map(|host| format!("{base}://{userinfo}{host}/{path}"))
                    .collect::<Vec<_>>();
                if seeds.is_empty() {
                    return Err(bad("names no node".into()));
                }
                // A blocking cluster connection connects to every node, and reads each reply
                // of a node's handshake with this timeout: a stalled node took a connection
                // two timeouts, and the call failed with none left for its command, whichever
                // node its key is on. Its replies share half the timeout now, the command has
                // the rest.
                let replies = seeds[0]
                    .as_str()
                    .into_connection_info()
                    .map_or(2, |info| super::connection::handshake_replies(&info.redis));
                let builder = ::redis::cluster::ClusterClientBuilder::new(seeds)
                    .connection_timeout(timeout / 2 / replies)
                    .response_timeout(timeout)
                    // Redirections after a resharding are retries; keep them few so a call
                    // stays near its timeout.
                    .retries(1)
                    .max_retry_wait(u64::try_from(timeout.as_millis() / 2).unwrap_or(u64::MAX));
                #[cfg(feature = "redis-tls")]
                let builder = match certificates {
                    Some(certificates) => builder.certs(certificates),
                    None => builder,
                };
                builder
                    .build()
                    .map(Target::Cluster)
                    .map_err(|e| bad(e.to_string()))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                #[cfg(feature = "redis-tls")]
                if certificates.is_some() {
                    return Err(ConfigError::new(
                        "tls_root_certificate",
                        "not supported with Sentinel: add the authority to the system's trust \
                         store",
                    ));
                }
                let (userinfo, hosts, path) = split_hosts(rest);
                let (service, db) = path.split_once('/').unwrap_or((path, ""));
                if service.is_empty() {
                    return Err(bad(
                        "names no service: redis+sentinel://host:port/service".into()
                    ));
                }
                let sentinels = hosts
                    .iter()
                    .map(|host| format!("{base}://{host}/").into_connection_info())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if sentinels.is_empty() {
                    return Err(bad("names no sentinel".into()));
                }
                let primary = format!("redis://{userinfo}localhost/{db}")
                    .into_connection_info()
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Target::Sentinel(Sentinel {
                    sentinels,
                    service: service.to_string(),
                    node: ::redis::sentinel::SentinelNodeConnectionInfo {
                        tls_mode: (base == "rediss").then_some(::redis::TlsMode::Secure),
                        redis_connection_info: Some(primary.redis),
                    },
                }))
            }
            _ => Err(bad(format!(
                "unknown scheme {scheme:?}; use redis, rediss, unix, redis+cluster, \
                 rediss+cluster, redis+sentinel or rediss+sentinel"
            ))),
        }
    }
}

/// The address as events and errors show it: without credentials or query.
fn shown(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(before, _)| before);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    if path.is_empty() {
        format!("{scheme}://{hosts}")
    } else {
        format!("{scheme}://{hosts}/{path}")
    }
}

/// `[userinfo@]h1,h2/path` → (`userinfo@` or "", the hosts, `path`).
fn split_hosts(rest: &str) -> (&str, Vec<&str>, &str) {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let hosts = hosts.split(',').filter(|h| !h.is_empty()).collect();
    (userinfo, hosts, path)
}

fn within(
    option: &'static str,
    value: Duration,
    shortest: Duration,
    default: &str,
) -> Result<(), ConfigError> {
    if value < shortest {
        return Err(ConfigError::new(
            option,
            format!("{value:?} is shorter than {shortest:?}; {default}"),
        ));
    }
    if value > LONGEST {
        return Err(ConfigError::new(
            option,
            format!("{value:?} is more than 100 years, surely a unit mistake; {default}"),
        ));
    }
    Ok(())
}

/// Checks a store's `retain`.
pub(super) fn check_retain(retain: Duration) -> Result<(), ConfigError> {
    within(
        "retain",
        retain,
        SHORTEST_LEASE,
        "keep it well above the region's expiry",
    )
}

impl fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address may carry a password: not shown.
        f.debug_struct("RedisBuilder")
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("renew_every", &self.renew_every)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cool_down", &self.breaker_cool_down)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_from_their_credentials_and_path() {
        assert_eq!(
            split_hosts("u:p@a:1,b:2/svc/3"),
            ("u:p@", vec!["a:1", "b:2"], "svc/3")
        );
        assert_eq!(split_hosts("a:1"), ("", vec!["a:1"], ""));
    }

    #[test]
    fn addresses_are_shown_without_credentials() {
        assert_eq!(shown("redis://u:p@h:1/2?x=y"), "redis://h:1/2");
        assert_eq!(
            shown("redis+cluster://:pw@a:1,b:2"),
            "redis+cluster://a:1,b:2"
        );
        assert_eq!(shown("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }
}
