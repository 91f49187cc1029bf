//! A fake kolach-controld: `kolach.ipam.v1` from an in-memory map, on
//! `<run dir>/controld.sock`, on a thread of its own; stopped (socket
//! removed) on drop. Its [`State`] is the tests' to read and bend.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kolach_proto::ipam::ipam_server::{Ipam, IpamServer};
use kolach_proto::ipam::*;
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
