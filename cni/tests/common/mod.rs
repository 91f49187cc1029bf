//! What the plugin's kernel tests share: a fake controld serving
//! `kolach.ipam.v1` from an in-memory map on a socket in a temp run dir, a
//! host namespace to run the plugin in (as a runtime would: `ip netns exec`,
//! a clean environment, the config on stdin) and pod namespaces.
//!
//! Namespaces are the test kit's [`Netns`] (`kdp-<tag>-<pid>`), removed on
//! drop, also when a test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kolach_proto::ipam::ipam_server::{Ipam, IpamServer};
use kolach_proto::ipam::*;
use kolach_testkit::cmd;
use kolach_testkit::netns::Netns;
use kolach_testkit::tempdir::TempDir;
use serde_json::Value;
use tonic::{Request, Response, Status};

/// The fake's pool: pods get .2, .3, … (only inside the test's namespaces).
pub const POOL: [u8; 3] = [198, 19, 18];
pub const MTU: u32 = 1400;
pub const NETWORK: &str = "kolach";

#[derive(Debug, Clone)]
pub struct Alloc {
    pub address: Ipv4Addr,
    pub network: String,
    pub pod_namespace: String,
}

#[derive(Debug)]
pub struct State {
    /// (container ID, ifname) → allocation.
    pub allocs: BTreeMap<(String, String), Alloc>,
    next: u8,
    pub ready: bool,
    pub reason: String,
    /// Allocate answers RESOURCE_EXHAUSTED.
    pub exhausted: bool,
    pub released: Vec<(String, String)>,
}

impl Default for State {
    fn default() -> Self {
        State {
            allocs: BTreeMap::new(),
            next: 2,
            ready: true,
            reason: String::new(),
            exhausted: false,
            released: Vec::new(),
        }
    }
}

#[derive(Clone, Default)]
struct FakeIpam(Arc<Mutex<State>>);

fn key(a: Option<&Attachment>) -> Result<(String, String), Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("attachment is missing"))?;
    Ok((a.container_id.clone(), a.ifname.clone()))
}

fn allocation(k: &(String, String), a: &Alloc) -> Allocation {
    Allocation {
        attachment: Some(Attachment {
            container_id: k.0.clone(),
            ifname: k.1.clone(),
        }),
        address: Some(a.address.into()),
        pool: "default".into(),
        network: a.network.clone(),
        pod_namespace: a.pod_namespace.clone(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Ipam for FakeIpam {
    async fn allocate(
        &self,
        r: Request<AllocateRequest>,
    ) -> Result<Response<AllocateReply>, Status> {
        let r = r.into_inner();
        let k = key(r.attachment.as_ref())?;
        let mut s = self.0.lock().unwrap();
        if let Some(a) = s.allocs.get(&k) {
            return Ok(Response::new(AllocateReply {
                allocation: Some(allocation(&k, a)),
                existing: true,
                mtu: MTU,
            }));
        }
        if s.exhausted {
            return Err(Status::resource_exhausted(
                "no free address in pool default (198.19.18.0/24)",
            ));
        }
        let a = Alloc {
            address: Ipv4Addr::new(POOL[0], POOL[1], POOL[2], s.next),
            network: r.network,
            pod_namespace: r.pod_namespace,
        };
        s.next += 1;
        let reply = AllocateReply {
            allocation: Some(allocation(&k, &a)),
            existing: false,
            mtu: MTU,
        };
        s.allocs.insert(k, a);
        Ok(Response::new(reply))
    }

    async fn release(&self, r: Request<ReleaseRequest>) -> Result<Response<ReleaseReply>, Status> {
        let k = key(r.into_inner().attachment.as_ref())?;
        let mut s = self.0.lock().unwrap();
        let gone = s.allocs.remove(&k);
        s.released.push(k.clone());
        Ok(Response::new(ReleaseReply {
            released: gone.is_some(),
            allocation: gone.map(|a| allocation(&k, &a)),
        }))
    }

    async fn check(&self, r: Request<CheckRequest>) -> Result<Response<Allocation>, Status> {
        let k = key(r.into_inner().attachment.as_ref())?;
        let s = self.0.lock().unwrap();
        match s.allocs.get(&k) {
            Some(a) => Ok(Response::new(allocation(&k, a))),
            None => Err(Status::not_found(format!(
                "no address for container {} ifname {}",
                k.0, k.1
            ))),
        }
    }

    async fn gc(&self, r: Request<GcRequest>) -> Result<Response<GcReply>, Status> {
        let r = r.into_inner();
        let valid: Vec<(String, String)> = r
            .valid
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        let mut s = self.0.lock().unwrap();
        let doomed: Vec<_> = s
            .allocs
            .iter()
            .filter(|(k, a)| a.network == r.network && !valid.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        let freed = doomed
            .iter()
            .map(|k| allocation(k, &s.allocs.remove(k).expect("listed")))
            .collect();
        Ok(Response::new(GcReply { freed }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<IpamStatus>, Status> {
        let s = self.0.lock().unwrap();
        Ok(Response::new(IpamStatus {
            ready: s.ready,
            reason: s.reason.clone(),
            mtu: MTU,
            ..Default::default()
        }))
    }

    async fn addresses(
        &self,
        _: Request<AddressesRequest>,
    ) -> Result<Response<AddressesReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn pools(&self, _: Request<PoolsRequest>) -> Result<Response<PoolsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn blocks(&self, _: Request<BlocksRequest>) -> Result<Response<BlocksReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn create_pool(&self, _: Request<CreatePoolRequest>) -> Result<Response<Pool>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn add_pool_subnet(
        &self,
        _: Request<AddPoolSubnetRequest>,
    ) -> Result<Response<Pool>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_pool(
        &self,
        _: Request<DeletePoolRequest>,
    ) -> Result<Response<DeletePoolReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A fake controld on `<dir>/controld.sock`, stopped (socket removed) on drop.
pub struct Controld {
    pub state: Arc<Mutex<State>>,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Controld {
    pub fn start(run_dir: &Path) -> Controld {
        let state = Arc::new(Mutex::new(State::default()));
        let socket = run_dir.join(kolach_proto::CONTROLD_SOCKET);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let service = FakeIpam(state.clone());
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = kolach_proto::uds::bind(&path).await.expect("bind");
                ready_tx.send(()).expect("test waits");
                tonic::transport::Server::builder()
                    .add_service(IpamServer::new(service))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async move {
                            let _ = stop_rx.await;
                        },
                    )
                    .await
                    .expect("serve");
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake controld listens");
        Controld {
            state,
            socket,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn address_of(&self, container: &str, ifname: &str) -> Option<Ipv4Addr> {
        self.with(|s| {
            s.allocs
                .get(&(container.to_string(), ifname.to_string()))
                .map(|a| a.address)
        })
    }
}

impl Drop for Controld {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One test's world: a run dir, a host namespace the plugin runs in.
pub struct World {
    pub run_dir: TempDir,
    pub host: Netns,
    tag: String,
}

/// What one plugin run printed.
#[derive(Debug)]
pub struct Reply {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
}

impl Reply {
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.code,
            Some(0),
            "plugin failed: {}\n{}",
            self.stdout,
            self.stderr
        );
        &self.json
    }

    /// The CNI error code and message, asserting exit status 1.
    pub fn err(&self) -> (u64, String) {
        assert_eq!(self.code, Some(1), "plugin succeeded: {}", self.stdout);
        (
            self.json["code"].as_u64().expect("code"),
            self.json["msg"].as_str().expect("msg").to_string(),
        )
    }
}

/// Environment of one call: container ID, ifname, netns path.
pub struct Call<'a> {
    pub command: &'a str,
    pub container: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
    pub args: &'a str,
}

pub fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

impl World {
    pub fn new(tag: &str) -> World {
        World {
            run_dir: TempDir::new(&format!("cni-{tag}")),
            host: Netns::new(&format!("cni-{tag}-h")),
            tag: tag.to_string(),
        }
    }

    /// A pod namespace.
    pub fn pod(&self, n: u8) -> Netns {
        Netns::new(&format!("cni-{}-p{n}", self.tag))
    }

    pub fn controld(&self) -> Controld {
        Controld::start(self.run_dir.path())
    }

    /// `{"cniVersion": version, "name": "kolach", "type": "kolach", "runDir": …}` plus `extra` keys.
    pub fn conf(&self, version: &str, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        format!(
            r#"{{"cniVersion":"{version}","name":"{NETWORK}","type":"kolach","runDir":"{}"{extra}}}"#,
            self.run_dir.path().display()
        )
    }

    /// Runs the built plugin inside the host namespace, as a runtime would.
    pub fn run(&self, call: &Call<'_>, conf: &str) -> Reply {
        run_plugin(
            &self.host.name,
            env!("CARGO_BIN_EXE_kolach"),
            call,
            conf,
            "/opt/cni/bin",
        )
    }

    pub fn add(&self, container: &str, pod: &Netns, version: &str) -> Reply {
        let netns = netns_path(pod);
        self.run(
            &Call {
                command: "ADD",
                container,
                ifname: "eth0",
                netns: &netns,
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
            },
            &self.conf(version, ""),
        )
    }

    pub fn simple(&self, command: &str, container: &str, pod: &Netns, version: &str) -> Reply {
        let netns = netns_path(pod);
        self.run(
            &Call {
                command,
                container,
                ifname: "eth0",
                netns: &netns,
                args: "",
            },
            &self.conf(version, ""),
        )
    }
}

/// `ip netns exec <ns> env -i PATH=… CNI_…=… <program>` with `conf` on stdin.
pub fn run_plugin(ns: &str, program: &str, call: &Call<'_>, conf: &str, cni_path: &str) -> Reply {
    let vars = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("CNI_COMMAND={}", call.command),
        format!("CNI_CONTAINERID={}", call.container),
        format!("CNI_NETNS={}", call.netns),
        format!("CNI_IFNAME={}", call.ifname),
        format!("CNI_ARGS={}", call.args),
        format!("CNI_PATH={cni_path}"),
    ];
    let mut args: Vec<&str> = vec!["netns", "exec", ns, "env", "-i"];
    args.extend(vars.iter().map(String::as_str));
    args.push(program);
    let out = cmd::run_input("ip", &args, Some(conf.as_bytes()), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let json = if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout))
    };
    Reply {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        json,
    }
}

/// `ip -j -n <ns> args…` parsed (an empty answer is an empty list).
pub fn ip_json(ns: &Netns, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-j", "-n", ns.name.as_str()];
    full.extend_from_slice(args);
    let out = cmd::run_ok("ip", &full).unwrap_or_else(|e| panic!("{e:#}"));
    if out.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&out).expect("ip -j prints JSON") {
        Value::Array(v) => v,
        other => vec![other],
    }
}

/// Whether `ns` has link `name`.
pub fn has_link(ns: &Netns, name: &str) -> bool {
    ns.has_link(name)
}

/// A sysctl file's content as seen from inside `ns`.
pub fn proc_sys(ns: &Netns, path: &str) -> String {
    let out = ns.exec(&["cat", path]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host end's name, by the plugin's own formula.
pub fn host_end(container: &str, ifname: &str) -> String {
    kolach_cni::name::host_end(container, ifname)
}
