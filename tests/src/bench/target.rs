//! One lab per mode, built once and kept up for the whole run, so a round
//! only measures. A kolach mode is a two-host mesh on that backend with a pod
//! behind each host's bridge (MTU = KOLACH_MTU, as Docker would set it), and
//! traffic goes pod1 → pod2. The bare underlay is two hosts on the same
//! veth/bridge underlay without daemons, and traffic goes host1 → host2: the
//! path every backend's packets take, without the overlay. udp-busy and
//! udp-1queue are the udp lab again, their dataplaneds started with
//! [`Mode::dataplaned_env`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::config::{network_config, Mode};
use kolach_testkit::lab::backend::Backend;
use kolach_testkit::lab::topology;
use kolach_testkit::lab::Lab;
use kolach_testkit::traffic;

/// How long a lab's kernel may take to hold its backend's objects.
const KERNEL_WITHIN: Duration = Duration::from_secs(15);

pub struct Target {
    pub mode: Mode,
    pub lab: Lab,
    pub client_ns: String,
    pub server_ns: String,
    pub server_ip: Ipv4Addr,
    /// MTU of the client's interface (the pod's: KOLACH_MTU; the host's: 1500).
    pub mtu: u32,
    /// Both hosts' kolach-dataplaned (none for the bare underlay).
    pub dataplaned: Vec<u32>,
    /// The udp backend's packet I/O mode (host1's DataplaneStatus.mode; None
    /// for the other backends).
    pub dataplane_mode: Option<String>,
    pub setup: Duration,
}

impl Target {
    /// Builds the lab of `mode` and checks that the client reaches the server.
    pub fn build(mode: Mode) -> Result<Target> {
        let started = Instant::now();
        let short = format!("b{}", mode.name());
        let mut lab = Lab::new(&short).with_context(|| format!("creating the {mode} lab"))?;
        let built = match mode.backend() {
            Some(b) => kolach(&mut lab, b, mode.dataplaned_env()),
            None => bare(&mut lab),
        };
        let (client_ns, server_ns, server_ip, mtu) = match built {
            Ok(v) => v,
            Err(e) => {
                lab.dump_logs();
                return Err(e.context(format!("setting up the {mode} lab")));
            }
        };
        let dataplaned: Vec<u32> = lab
            .hosts
            .iter()
            .filter_map(|h| h.dataplaned.pid())
            .collect();
        let dataplane_mode = match mode.backend() {
            Some(Backend::Udp) => Some(lab.dp_status(1)?.mode),
            _ => None,
        };
        Ok(Target {
            mode,
            lab,
            client_ns,
            server_ns,
            server_ip,
            mtu,
            dataplaned,
            dataplane_mode,
            setup: started.elapsed(),
        })
    }

    /// Whether both daemons of every host still run (a crash mid-run would
    /// otherwise show up as a slow mode rather than a broken one).
    pub fn daemons_alive(&mut self) -> Result<()> {
        for h in &mut self.lab.hosts {
            for p in [&mut h.dataplaned, &mut h.controld] {
                if p.pid().is_some() {
                    if let Some(status) = p.exited() {
                        bail!("{} exited ({status})", p.label);
                    }
                }
            }
        }
        Ok(())
    }
}

type Endpoints = (String, String, Ipv4Addr, u32);

/// etcd, two hosts on `backend` (their dataplaneds with `env` set), a pod
/// each, routes and kernel objects in place.
fn kolach(lab: &mut Lab, backend: Backend, env: &[(&str, &str)]) -> Result<Endpoints> {
    lab.mesh_with_dataplaned_env(2, &network_config(backend), env)?;
    if backend != Backend::Udp {
        lab.wait_kernel_converged(backend, KERNEL_WITHIN)?;
    }
    lab.assert_all_pairs_ping(2)?;
    let mtu = lab
        .host(1)
        .subnet_env()
        .context("host1 lost its subnet.env")?
        .mtu;
    Ok((
        lab.pod(1).ns.clone(),
        lab.pod(2).ns.clone(),
        lab.pod(2).ip,
        mtu,
    ))
}

/// Two hosts on the underlay, no daemons.
fn bare(lab: &mut Lab) -> Result<Endpoints> {
    let a = lab.add_host()?;
    let b = lab.add_host()?;
    let (client, server) = (lab.host(a).ns.clone(), lab.host(b).ns.clone());
    let ip = topology::host_ip(b);
    let r = traffic::ping(&client, ip, 2, 1.0)?;
    if !r.lossless() {
        bail!("host{a} cannot ping host{b} on the underlay:\n{}", r.output);
    }
    Ok((
        client,
        server,
        ip,
        kolach_testkit::lab::backend::UNDERLAY_MTU,
    ))
}
