//! Mutexes and stores beyond one process: lock files for the processes of one host
//! ([`file`](mod@file)), and Redis for processes on many hosts ([`redis`](mod@redis), feature `redis`).

pub mod file;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
