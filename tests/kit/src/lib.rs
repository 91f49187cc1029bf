//! kolach's test kit: what the multi-host tests (`kolach-tests`), controld's
//! and dataplaned's own tests share. Hosts as network namespaces on a bridged
//! underlay, a real etcd (one member, a 3-member cluster, TLS with a test
//! CA), the real daemons as child processes, Docker-like pods, the kernel's
//! objects as `ip -j`/`bridge -j` show them, and traffic across.
//!
//! It depends on kolach-proto and small crates only, never on the daemons'
//! crates, so they can dev-depend on it.
//!
//! - [`cmd`]: every external command under a deadline.
//! - [`names`]: lab stems and namespace names, stale-lab detection.
//! - [`netns`]: create/delete namespaces, run commands or Rust code inside
//!   one; [`netns::Netns`], a namespace of its own for one test (removed on
//!   drop) with a tokio runtime whose threads live inside it.
//! - [`tempdir`]: a directory of one test (`kdp-<tag>-<n>-<pid>`), removed on drop.
//! - [`topology`]: the underlay bridge, hosts' `eth0`, pods behind `kbr0`.
//! - [`process`]: daemons and etcd as child processes with logs, stop/kill/restart.
//! - [`etcd`]: the etcd server and `etcdctl`.
//! - [`etcd_local`]: a one-member etcd on loopback (random ports, its own
//!   temp dir, TLS optional), killed on drop.
//! - [`bins`]: where the kolach binaries under test are.
//! - [`host`]: one host: run dir, both daemons, subnet.env, pod.
//! - [`lab`]: the whole thing, and its teardown; [`lab::run`] wraps a test body.
//! - [`teardown`]: graceful stop with a deadline, namespace and dir removal.
//! - [`mesh`]: bring up a mesh, query the daemons, wait for convergence, ping.
//! - [`kernel`]: links, addresses and vxlan devices as the kernel shows them (`ip -j`).
//! - [`backend`]: the backends' configs, MTUs, device names and VTEP MACs.
//! - [`kobjects`]: kolach's routes, neighbours, FDB entries and links in a
//!   host's kernel (`ip -j`, `bridge -j`).
//! - [`kmesh`]: what each host's kernel should hold under a backend, and
//!   waiting for it.
//! - [`background`]: helper commands running beside a test (ping, monitors).
//! - [`steady_ping`]: a fast ping in the background, with every lost probe.
//! - [`iperf`]: an iperf3 TCP flow in the background and its report.
//! - [`upgrade`]: hot upgrades, controld restarts, snapshots pushed by hand.
//! - [`systemd`]: the units checked with systemd-analyze, syscalls vs. their filter.
//! - [`monitor`]: `ip monitor`/`bridge monitor`: any change to kolach's objects.
//! - [`query`]: gRPC over the run dir sockets.
//! - [`traffic`]: ping and UDP inside namespaces.
//! - [`packet`]: hand-built IPv4/UDP packets (flannel's udp wire format),
//!   checksum checks of captured ones.
//! - [`pcap`]: reading `tcpdump -w` captures, UDP datagrams out of their frames.
//! - [`subnet_env`]: parsing subnet.env.
//! - [`etcd_cluster`]: a 3-member etcd cluster (kill the leader, bring it back),
//!   and `etcdctl` with stdin (big values, transactions).
//! - [`etcd_tls`]: a test CA made with openssl, etcd serving TLS with client certs.
//! - [`cutoff`]: nftables in a host's namespace cutting it off from etcd.
//! - [`impair`]: a userspace netem on a host's overlay datagrams (loss, delay,
//!   reordering, duplication, corruption).
//! - [`flood`]: crafted datagrams at full rate, the kernel's UDP counters.
//! - [`intruder`]: an unprivileged local user against the daemons' sockets
//!   (`kolach-intruder` run with setpriv).
//! - [`lease_watch`]: sampling etcd and every controld for two live
//!   leases of one subnet.

pub mod backend;
pub mod background;
pub mod bins;
pub mod cmd;
pub mod cutoff;
pub mod etcd;
pub mod etcd_cluster;
pub mod etcd_local;
pub mod etcd_tls;
pub mod flood;
pub mod host;
pub mod impair;
pub mod intruder;
pub mod iperf;
pub mod kernel;
pub mod kmesh;
pub mod kobjects;
pub mod lab;
pub mod lease_watch;
pub mod mesh;
pub mod monitor;
pub mod names;
pub mod netns;
pub mod packet;
pub mod pcap;
pub mod process;
pub mod query;
pub mod steady_ping;
pub mod subnet_env;
pub mod systemd;
pub mod teardown;
pub mod tempdir;
pub mod topology;
pub mod traffic;
pub mod upgrade;

pub use backend::Backend;
pub use lab::{run, Lab};
