//! How a [`Redis`](super::Redis) handle reaches its data: one server, a Redis Cluster, or the
//! primary that Sentinel names; blocking connections for blocking calls, and one multiplexed
//! async connection (feature `tokio`) for async calls.

use std::time::{Duration, Instant};

use ::redis::{Client, ConnectionInfo, RedisResult};

/// What the address named.
pub(super) enum Target {
    /// `redis://`, `rediss://`, `unix://`: one server.
    Server(Client),
    /// `redis+cluster://`, `rediss+cluster://`: a cluster, found from its seed nodes.
    Cluster(::redis::cluster::ClusterClient),
    /// `redis+sentinel://`, `rediss+sentinel://`: the primary of a service, asked of Sentinel
    /// at each new connection (so a failover is followed by the next connection).
    Sentinel(Sentinel),
}

pub(super) struct Sentinel {
    pub(super) sentinels: Vec<ConnectionInfo>,
    pub(super) service: String,
    pub(super) node: ::redis::sentinel::SentinelNodeConnectionInfo,
}

impl Sentinel {
    /// A blocking connection to the primary a Sentinel names, within about `timeout`.
    ///
    /// redis-rs's own discovery reads Sentinel's answer, and the named primary's `ROLE`, on
    /// connections without a timeout: with Sentinel or the primary stalled, a call that had
    /// to connect hung until it ran again. Here each Sentinel is asked in turn within its
    /// share of half the timeout (`SENTINEL GET-MASTER-ADDR-BY-NAME`, as Sentinel's clients
    /// are meant to ask), and the primary it names is connected to and asked its `ROLE` within
    /// what is left: a replica (a failover under way) is not taken for the primary.
    fn primary_connection(&self, timeout: Duration) -> RedisResult<Connection> {
        let began = Instant::now();
        let share = self.share(timeout);
        let mut failed = None;
        for sentinel in &self.sentinels {
            let named = server_connection(&Client::open(sentinel.clone())?, share).and_then(
                |mut connection| self.ask().query::<Option<(String, u16)>>(connection.get()),
            );
            match named {
                Ok(Some((host, port))) => {
                    return self.primary(host, port, timeout.saturating_sub(began.elapsed()));
                }
                Ok(None) => failed = Some(self.unknown()),
                Err(err) => failed = Some(err),
            }
        }
        Err(failed.unwrap_or_else(no_sentinel))
    }

    /// A connection to the server at `host:port`, within `timeout`, if it says it is a primary.
    fn primary(&self, host: String, port: u16, timeout: Duration) -> RedisResult<Connection> {
        let mut connection = server_connection(
            &Client::open(self.primary_info(host, port, timeout)?)?,
            timeout,
        )?;
        let role: Vec<::redis::Value> = ::redis::cmd("ROLE").query(connection.get())?;
        is_primary(&role)?;
        Ok(connection)
    }

    /// How to reach the primary at `host:port`: with the credentials and database of the
    /// address, over TLS if it said `rediss+sentinel`.
    fn primary_info(&self, host: String, port: u16, left: Duration) -> RedisResult<ConnectionInfo> {
        if left.is_zero() {
            return Err(::redis::RedisError::from((
                ::redis::ErrorKind::IoError,
                "asking Sentinel took the whole timeout",
            )));
        }
        let addr = match self.node.tls_mode {
            None => ::redis::ConnectionAddr::Tcp(host, port),
            Some(mode) => ::redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: matches!(mode, ::redis::TlsMode::Insecure),
                tls_params: None,
            },
        };
        Ok(ConnectionInfo {
            addr,
            redis: self.node.redis_connection_info.clone().unwrap_or_default(),
        })
    }

    /// Each Sentinel's share of the time to find the primary: half the timeout, split evenly.
    fn share(&self, timeout: Duration) -> Duration {
        timeout
            / 2
            / u32::try_from(self.sentinels.len())
                .unwrap_or(u32::MAX)
                .max(1)
    }

    /// The command that asks a Sentinel where the primary is.
    fn ask(&self) -> ::redis::Cmd {
        let mut ask = ::redis::cmd("SENTINEL");
        ask.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.service);
        ask
    }

    /// A Sentinel answered that it knows no primary of the service.
    fn unknown(&self) -> ::redis::RedisError {
        ::redis::RedisError::from((
            ::redis::ErrorKind::MasterNameNotFoundBySentinel,
            "Sentinel knows no primary of the service",
            self.service.clone(),
        ))
    }
}

/// Whether a `ROLE` reply is a primary's: a replica (a failover under way, a switchover that
/// Sentinel has not noticed yet) is not taken for one.
fn is_primary(role: &[::redis::Value]) -> RedisResult<()> {
    let primary = role.first().is_some_and(|first| {
        ::redis::from_redis_value::<String>(first).is_ok_and(|role| role == "master")
    });
    if primary {
        Ok(())
    } else {
        Err(::redis::RedisError::from((
            ::redis::ErrorKind::ReadOnly,
            "the server Sentinel names is not a primary (yet)",
        )))
    }
}

/// No Sentinel was named (the address is checked when built, so this is not expected).
fn no_sentinel() -> ::redis::RedisError {
    ::redis::RedisError::from((::redis::ErrorKind::IoError, "no Sentinel to ask"))
}

/// A blocking connection of the pool.
pub(super) enum Connection {
    Server(::redis::Connection),
    Cluster(Box<::redis::cluster::ClusterConnection>),
}

impl Connection {
    pub(super) fn get(&mut self) -> &mut dyn ::redis::ConnectionLike {
        match self {
            Connection::Server(c) => c,
            Connection::Cluster(c) => &mut **c,
        }
    }

    /// Sets how long each read and write may wait.
    pub(super) fn set_timeouts(&self, timeout: Duration) -> RedisResult<()> {
        match self {
            Connection::Server(c) => {
                c.set_read_timeout(Some(timeout))?;
                c.set_write_timeout(Some(timeout))
            }
            Connection::Cluster(c) => {
                c.set_read_timeout(Some(timeout))?;
                c.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Target {
    /// A new blocking connection, made within about `timeout`, whose reads and writes each
    /// give up after `timeout`.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match self {
            Target::Server(client) => server_connection(client, timeout),
            Target::Cluster(client) => {
                // The client was built with the same connect and response timeouts.
                let connection = client.get_connection()?;
                connection.set_read_timeout(Some(timeout))?;
                connection.set_write_timeout(Some(timeout))?;
                Ok(Connection::Cluster(Box::new(connection)))
            }
            Target::Sentinel(sentinel) => sentinel.primary_connection(timeout),
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }
}

fn server_connection(client: &Client, timeout: Duration) -> RedisResult<Connection> {
    // redis-rs sends its handshake as a pipeline and reads every reply, even after one timed
    // out, each read with the whole timeout it was given: against a server that accepts
    // connections but does not answer, a connect took one timeout per handshake command (two
    // to four). Each read gets its share, so the connect stays within `timeout`.
    let share = timeout / handshake_replies(&client.get_connection_info().redis);
    let connection = client.get_connection_with_timeout(share)?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    Ok(Connection::Server(connection))
}

/// How many replies redis-rs reads when it opens a blocking connection: `CLIENT SETINFO` twice,
/// then `HELLO` (RESP3) or `AUTH` (a password), and `SELECT` (a database other than 0).
pub(super) fn handshake_replies(info: &::redis::RedisConnectionInfo) -> u32 {
    let hello_or_auth = info.protocol != ::redis::ProtocolVersion::RESP2 || info.password.is_some();
    2 + u32::from(hello_or_auth) + u32::from(info.db != 0)
}

#[cfg(feature = "tokio")]
pub(super) use self::r#async::AsyncConnection;

#[cfg(feature = "tokio")]
mod r#async {
    use std::time::Duration;

    use ::redis::aio::{ConnectionLike, MultiplexedConnection};
    use ::redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

    use super::Target;

    /// The async calls' shared connection: cheap to clone, every clone multiplexed on the same
    /// sockets.
    #[derive(Clone)]
    pub(in crate::backend::redis) enum AsyncConnection {
        Server(MultiplexedConnection),
        Cluster(::redis::cluster_async::ClusterConnection),
    }

    impl ConnectionLike for AsyncConnection {
        fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
            match self {
                AsyncConnection::Server(c) => c.req_packed_command(cmd),
                AsyncConnection::Cluster(c) => c.req_packed_command(cmd),
            }
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            cmd: &'a Pipeline,
            offset: usize,
            count: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            match self {
                AsyncConnection::Server(c) => c.req_packed_commands(cmd, offset, count),
                AsyncConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            }
        }

        fn get_db(&self) -> i64 {
            match self {
                AsyncConnection::Server(c) => c.get_db(),
                AsyncConnection::Cluster(c) => c.get_db(),
            }
        }
    }

    impl super::Sentinel {
        /// [`primary_connection`](super::Sentinel::primary_connection), async: each Sentinel
        /// asked within its share, so a silent first one does not take the whole timeout
        /// (redis-rs's discovery waits for it without one, and never asks the next).
        async fn primary_async(&self, timeout: Duration) -> RedisResult<AsyncConnection> {
            let began = tokio::time::Instant::now();
            let share = self.share(timeout);
            let config = |within: Duration| {
                AsyncConnectionConfig::new()
                    .set_connection_timeout(within)
                    .set_response_timeout(within)
            };
            let mut failed = None;
            for sentinel in &self.sentinels {
                let ask = async {
                    let mut connection = Client::open(sentinel.clone())?
                        .get_multiplexed_async_connection_with_config(&config(share))
                        .await?;
                    self.ask()
                        .query_async::<Option<(String, u16)>>(&mut connection)
                        .await
                };
                let named = tokio::time::timeout(share, ask)
                    .await
                    .unwrap_or_else(|_| Err(silent()));
                match named {
                    Ok(Some((host, port))) => {
                        let left = timeout.saturating_sub(began.elapsed());
                        let info = self.primary_info(host, port, left)?;
                        let mut connection = Client::open(info)?
                            .get_multiplexed_async_connection_with_config(&config(left))
                            .await?;
                        let role: Vec<Value> =
                            ::redis::cmd("ROLE").query_async(&mut connection).await?;
                        super::is_primary(&role)?;
                        return Ok(AsyncConnection::Server(connection));
                    }
                    Ok(None) => failed = Some(self.unknown()),
                    Err(err) => failed = Some(err),
                }
            }
            Err(failed.unwrap_or_else(super::no_sentinel))
        }
    }

    /// A Sentinel did not answer within its share of the timeout.
    fn silent() -> ::redis::RedisError {
        ::redis::RedisError::from((
            ::redis::ErrorKind::IoError,
            "Sentinel did not answer within its share of the timeout",
        ))
    }

    impl Target {
        /// A new async connection, with `timeout` on connecting and on each response.
        pub(in crate::backend::redis) async fn connect_async(
            &self,
            timeout: Duration,
        ) -> RedisResult<AsyncConnection> {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            match self {
                Target::Server(client) => Ok(AsyncConnection::Server(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )),
                Target::Cluster(client) => Ok(AsyncConnection::Cluster(
                    client.get_async_connection().await?,
                )),
                Target::Sentinel(sentinel) => sentinel.primary_async(timeout).await,
            }
        }
    }
}
