//! A `redis-server` of a test's own, on a free loopback port: started, stopped and restarted by
//! the test. Shared by the runtime's and the facade's Redis tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(30);

/// A `redis-server` of this test's own, on a free port, keeping nothing on disk.
pub struct Server {
    port: u16,
    child: Option<Child>,
    /// Where a server that keeps its data across a restart writes it.
    dir: Option<PathBuf>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_in(None)
    }

    /// A server that writes every command to its append-only file before answering it, so
    /// that a restart after [`stop`](Self::stop) (a SIGKILL) finds the data it had.
    pub fn start_persistent() -> Server {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dogpile-redis-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Server::start_in(Some(dir))
    }

    fn start_in(dir: Option<PathBuf>) -> Server {
        let mut server = Server {
            port: free_port(),
            child: None,
            dir,
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port, and waits until it answers.
    pub fn resume(&mut self) {
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string()]);
        match &self.dir {
            Some(dir) => command.args(["--dir", &dir.display().to_string()]).args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ]),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            // DEBUG SLEEP stalls the server, as a long fork or a swapped-out host would.
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see the README)");
        self.child = Some(child);
        let deadline = Instant::now() + BOUND;
        loop {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server process (SIGSTOP) without closing anything: it still accepts
    /// connections (the kernel completes them) but answers nothing, as a host swapped out or
    /// frozen by its hypervisor would.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`freeze`](Self::freeze)d server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("`kill` must be on the PATH");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    /// The lock keys of `namespace` (held by anyone).
    pub fn locks(&self, namespace: &str) -> Vec<Vec<u8>> {
        self.keys(&format!("{{{namespace}#*}}:lock:*"))
    }

    /// The value keys of `namespace`.
    pub fn values(&self, namespace: &str) -> Vec<Vec<u8>> {
        self.keys(&format!("{{{namespace}#*}}:v:*"))
    }

    /// How many times the server ran each command since the last `CONFIG RESETSTAT`
    /// (commands run by scripts included).
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                Some((name.to_string(), rest.split(',').next()?.parse().ok()?))
            })
            .collect()
    }

    pub fn reset_stats(&self) {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut self.connection())
            .unwrap();
    }

    pub fn keys(&self, pattern: &str) -> Vec<Vec<u8>> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.connection())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
