//! A Redis region over TLS (`rediss://`, feature `redis-tls`): the test makes a certificate
//! authority and a server certificate with the `openssl` command, and starts a `redis-server`
//! that only speaks TLS on a free loopback port.
//!
//! Needs `redis-server` built with TLS (Debian's is) and `openssl` on the `PATH`.
#![cfg(all(feature = "redis-tls", feature = "tokio"))]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use dogpile_runtime::backend::redis::{Redis, RedisMutex, RedisStore};
use dogpile_runtime::region::OnBackendError;
use dogpile_runtime::{Region, RegionError};

struct TlsServer {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, a certificate for 127.0.0.1 signed by it, and a TLS-only server using it.
fn start() -> TlsServer {
    let dir = std::env::temp_dir().join(format!("dogpile-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=dogpile test CA",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        thread::sleep(Duration::from_millis(20));
    }
    TlsServer { port, child, dir }
}

type TlsRegion = Region<u64, String, RedisStore<u64, String>, RedisMutex>;

fn region(redis: &Redis) -> TlsRegion {
    Region::builder()
        .name("tls")
        .expiry(Duration::from_secs(60))
        .store(redis.store("tls"))
        .mutexes(redis.mutexes("tls"))
        .on_backend_error(OnBackendError::ReturnError)
        .build()
        .unwrap()
}

/// Trusting the test's CA, blocking and async calls work over TLS; trusting only the
/// system's store, the server's certificate is refused (an error, not a plaintext fallback).
#[test]
fn a_region_over_tls() {
    let server = start();
    let url = format!("rediss://127.0.0.1:{}/", server.port);
    let ca = std::fs::read(server.dir.join("ca.crt")).unwrap();
    let redis = Redis::builder(&url)
        .timeout(Duration::from_secs(2))
        .lease(Duration::from_secs(10))
        .tls_root_certificate(ca)
        .build()
        .unwrap();
    let tls = region(&redis);
    assert_eq!(
        tls.try_get_with(&1, || Ok::<_, ()>("one".into())).unwrap(),
        "one"
    );
    assert_eq!(tls.get_with(&1, || unreachable!()), "one");
    tls.invalidate_all().unwrap();
    assert_eq!(tls.get_with(&1, || "uno".into()), "uno");
    let async_region = tls.to_async();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let two = async_region
                .get_with(&2, || async { "two".to_string() })
                .await;
            assert_eq!(two, "two");
            assert_eq!(
                async_region.get_with(&1, || async { unreachable!() }).await,
                "uno"
            );
        });

    let untrusting = Redis::builder(&url)
        .timeout(Duration::from_secs(2))
        .lease(Duration::from_secs(10))
        .build()
        .unwrap();
    let refused = region(&untrusting).try_get_with(&1, || Ok::<_, ()>("x".into()));
    assert!(
        matches!(refused, Err(RegionError::Backend(_))),
        "{refused:?}"
    );
}
