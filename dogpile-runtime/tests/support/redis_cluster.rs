//! A Redis Cluster of a test's own: three `redis-server` primaries on free loopback ports,
//! joined by `redis-cli --cluster create`, stopped when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(30);

pub struct Cluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Three primaries, no replicas, a node timeout (60 s) longer than any test stalls a
    /// node: a stall stays a stall.
    pub fn start() -> Cluster {
        Cluster::start_with(0, 60_000)
    }

    /// Three primaries (nodes 0 to 2) with `replicas` replicas each (the nodes after them),
    /// synced, and the cluster's node timeout: how long a node may be silent before the others
    /// fail it over.
    pub fn start_with(replicas: usize, node_timeout_ms: u32) -> Cluster {
        let ports: Vec<u16> = (0..3 * (1 + replicas)).map(|_| free_port()).collect();
        // One directory per cluster: the tests of a file run at once, each with its own, and
        // one's start must not remove another's node files.
        let dir = std::env::temp_dir().join(format!(
            "dogpile-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout"])
                    .arg(node_timeout_ms.to_string())
                    .arg("--cluster-config-file")
                    .arg(dir.join(format!("nodes-{port}.conf")))
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (see the README)")
            })
            .collect();
        let cluster = Cluster { ports, nodes, dir };
        for port in &cluster.ports {
            cluster.wait(*port, |c| redis::cmd("PING").query::<String>(c).is_ok());
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed with redis-server");
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            cluster.wait(*port, |c| {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(c)
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        for port in &cluster.ports[3..] {
            cluster.wait(*port, |c| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(c)
                    .is_ok_and(|info| info.contains("master_link_status:up"))
            });
        }
        cluster
    }

    /// Whether node `index` is a primary now.
    pub fn is_primary(&self, index: usize) -> bool {
        let mut c = self.connection(index);
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        info.contains("role:master")
    }

    /// Waits until the replicas of primary `index` have everything it was sent.
    pub fn wait_replicated(&self, index: usize) {
        self.wait(self.ports[index], |c| {
            let info: String = redis::cmd("INFO").arg("replication").query(c).unwrap();
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::to_string)
            };
            let offset = field("master_repl_offset:");
            // `slave0:ip=...,port=...,state=online,offset=N,lag=0`
            let replica = field("slave0:").and_then(|replica| {
                replica
                    .split(',')
                    .find_map(|part| part.strip_prefix("offset="))
                    .map(str::to_string)
            });
            offset.is_some() && offset == replica
        });
    }

    fn connection(&self, index: usize) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.ports[index]))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    fn wait(&self, port: u16, ready: impl Fn(&mut redis::Connection) -> bool) {
        let deadline = Instant::now() + BOUND;
        loop {
            let up = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)));
            if up.is_ok_and(|mut c| ready(&mut c)) {
                return;
            }
            assert!(Instant::now() < deadline, "cluster node {port} not ready");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://` with two of the three nodes as seeds.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}/",
            self.ports[0], self.ports[1]
        )
    }

    /// Stops node `index` (SIGSTOP): the kernel still completes connections to it, it answers
    /// nothing, and the other nodes do not mark it failed before the cluster's node timeout
    /// (60 s here, longer than any test stalls a node).
    pub fn freeze(&self, index: usize) {
        self.signal(index, "-STOP");
    }

    /// Kills node `index` (SIGKILL): its connections are reset, new ones refused.
    pub fn kill(&mut self, index: usize) {
        let _ = self.nodes[index].kill();
        let _ = self.nodes[index].wait();
    }

    /// Lets a [`freeze`](Self::freeze)d node run again (SIGCONT).
    pub fn thaw(&self, index: usize) {
        self.signal(index, "-CONT");
    }

    fn signal(&self, index: usize, signal: &str) {
        let pid = self.nodes[index].id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("`kill` must be on the PATH");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// How many keys each node holds.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|port| {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .unwrap()
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .unwrap();
                redis::cmd("DBSIZE").query(&mut c).unwrap()
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
