//! kolach's test kit: what the multi-host tests (`kolach-tests`), controld's
//! and dataplaned's own tests share. Hosts as network namespaces on a bridged
//! underlay, a real etcd (one member, a 3-member cluster, TLS with a test
//! CA), the real daemons as child processes, Docker-like pods, the kernel's
//! objects as `ip -j`/`bridge -j` show them, and traffic across.
//!
//! It depends on kolach-proto and small crates only, never on the daemons'
//! crates, so they can dev-depend on it.
//!
//! The folders, each depending only on the plain modules and those listed
//! before it:
//! - [`etcd`]: a real etcd in the underlay namespace and `etcdctl`; one
//!   member on loopback ([`etcd::local`]), a 3-member cluster
//!   ([`etcd::cluster`]), the TLS test CA ([`etcd::tls`]), two live leases of
//!   one subnet ([`etcd::lease_watch`]).
//! - [`traffic`]: ping and UDP inside namespaces, iperf3, steady pings,
//!   hand-built packets and captures, floods, a userspace netem, cut-offs.
//! - [`lab`]: the whole lab and its teardown ([`lab::run`] wraps a test
//!   body): topology, hosts, backends, meshes, upgrades.
//! - [`kernel`]: what the kernel shows (`ip -j`, `bridge -j`), kolach's
//!   objects in it, what it should hold under a backend, and its changes.
//! - [`containers`]: what the podman and docker harnesses share: the
//!   engine's CLI and the calls alike on both (`run -d`, `exec`, `inspect`),
//!   the holder process per host namespace, the cgroup mounts and cgroups.
//! - [`podman`] (over [`containers`] and [`lab::topology`]): Debian's podman
//!   with its CNI backend on the lab's hosts: a holder process per host
//!   namespace, its own configs and storage, containers on a CNI network
//!   ([`podman::PodmanHost`], [`podman::PodmanLab`]), the busybox image.
//! - [`docker`] (over [`containers`] and [`podman`]'s image): Debian's
//!   `docker.io` on the lab's hosts, one dockerd (and its managed containerd)
//!   per host namespace in a holder of its own, started with the README's
//!   recipe (`--bip`, `--mtu` from subnet.env); containers, `docker exec`,
//!   their addresses and pids ([`docker::DockerHost`]).
//!
//! - [`aws`]: the EC2 emulator moto in a lab's underlay namespace, a
//!   counting proxy in front of it and an instance-metadata stub for every
//!   host, seeded with a VPC and one instance per host (aws-vpc tests).
//! - [`bird`]: BIRD 2 in a lab's namespace (a host's exporter reading the
//!   export table, a plain BGP router), its configs and `birdc` queries.
//! - [`nspawn`]: a real systemd in a lab's namespace: a cached Debian tree
//!   booted with systemd-nspawn, commands run inside it.
//!
//! The plain modules they stand on:
//! - [`cmd`]: every external command under a deadline.
//! - [`names`]: lab stems and namespace names, stale-lab detection.
//! - [`netns`]: create/delete namespaces, run commands or Rust code inside
//!   one; [`netns::Netns`], a namespace of its own for one test (removed on
//!   drop) with a tokio runtime whose threads live inside it.
//! - [`tempdir`]: a directory of one test (`kdp-<tag>-<n>-<pid>`), removed on drop.
//! - [`process`]: daemons and etcd as child processes with logs, stop/kill/restart.
//! - [`bins`]: where the kolach binaries under test are.
//! - [`query`]: gRPC over the run dir sockets.
//! - [`subnet_env`]: parsing subnet.env.
//! - [`systemd`]: the units checked with systemd-analyze, syscalls vs. their filter.
//! - [`deb`]: the Debian package built from the binaries under test, lintian.
//! - [`cache`]: where what is slow to make (moto's venv, the Debian tree) is kept.
//! - [`intruder`]: an unprivileged local user against the daemons' sockets
//!   (`kolach-intruder` run with setpriv).

pub mod aws;
pub mod bins;
pub mod bird;
pub mod cache;
pub mod cmd;
pub mod cni;
pub mod containers;
pub mod deb;
pub mod docker;
pub mod etcd;
pub mod intruder;
pub mod kernel;
pub mod lab;
pub mod names;
pub mod netns;
pub mod nspawn;
pub mod podman;
pub mod process;
pub mod query;
pub mod subnet_env;
pub mod systemd;
pub mod tempdir;
pub mod traffic;

pub use lab::backend::Backend;
pub use lab::{run, Lab};
