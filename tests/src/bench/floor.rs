//! The round-trip floor of any userspace relay on the machine at hand.
//!
//! A ping over the udp backend wakes a process four times: the dataplane
//! of host1 (the request in its TUN queue), host2's (the datagram on its
//! socket; the echo reply is queued by its own TUN write, so no wake), host1's
//! again (the reply datagram) and ping (the reply). Kernel vxlan wakes none:
//! the whole round trip runs inside ping's send. This measures the same four
//! wakes with no packet work at all: a client, a relay with two sockets it
//! polls (like a packet loop's TUN and socket) and an echo, three processes
//! passing one 64-byte datagram over loopback (client → relay → echo → relay
//! → client). Whatever a userspace data path does per packet comes on top.
//!
//! Two placements: `free` leaves the CPUs to the scheduler, as it does for
//! ping and (between their pinned queue threads) the dataplanes; `one-cpu`
//! pins all three to one CPU, so every wake is a switch on the CPU that is
//! already running — the best case, which a data path cannot force on the
//! pods it serves.
//!
//! The relay and the echo run in child processes of `kolach-bench` (the
//! hidden first argument [`HOP_ARG`]), so that each wake is a switch between
//! address spaces, as between ping and a dataplane.

use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::bench::stats::{median_of, percentile, ratio};

/// `kolach-bench __relay-hop echo|relay <echo port> [cpu]`: run as one hop.
pub const HOP_ARG: &str = "__relay-hop";

/// The datagram passed around, as the bench's UDP runs' payload.
const PAYLOAD: usize = 64;

/// How long one round trip may take before the client calls it lost.
const LOST_AFTER: Duration = Duration::from_millis(200);

/// Where the three processes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Wherever the scheduler puts them.
    Free,
    /// All on one CPU (the first this process may use).
    OneCpu,
}

impl Placement {
    pub const ALL: [Placement; 2] = [Placement::Free, Placement::OneCpu];

    pub fn name(self) -> &'static str {
        match self {
            Placement::Free => "free",
            Placement::OneCpu => "one-cpu",
        }
    }

    fn cpu(self) -> Option<usize> {
        match self {
            Placement::Free => None,
            Placement::OneCpu => Some(first_allowed_cpu()),
        }
    }
}

/// One run of the relay ring.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FloorSample {
    pub round: u32,
    pub placement: Placement,
    pub sent: u32,
    pub received: u32,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// What a hop process does.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hop {
    /// Sends every datagram back where it came from.
    Echo,
    /// Forwards what arrives on its front socket to the echo through its
    /// back socket, and what comes back to whoever last wrote to the front.
    Relay { echo: SocketAddr },
}

/// A hop's arguments (after [`HOP_ARG`]): the role, the echo's port for a
/// relay, and the CPU to pin to, if any.
fn parse_hop(args: &[String]) -> Result<(Hop, Option<usize>)> {
    let cpu = |a: Option<&String>| -> Result<Option<usize>> {
        a.map(|c| c.parse().with_context(|| format!("bad CPU {c:?}")))
            .transpose()
    };
    match args {
        [role, rest @ ..] if role == "echo" && rest.len() <= 1 => {
            Ok((Hop::Echo, cpu(rest.first())?))
        }
        [role, port, rest @ ..] if role == "relay" && rest.len() <= 1 => {
            let port: u16 = port
                .parse()
                .with_context(|| format!("bad echo port {port:?}"))?;
            let echo = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            Ok((Hop::Relay { echo }, cpu(rest.first())?))
        }
        _ => bail!("usage: kolach-bench {HOP_ARG} echo [cpu] | relay <echo port> [cpu]"),
    }
}

/// The body of a hop process: binds on loopback, prints the port it takes
/// datagrams on, then serves until it is killed.
pub fn hop_main(args: &[String]) -> Result<()> {
    let (hop, cpu) = parse_hop(args)?;
    if let Some(cpu) = cpu {
        pin(cpu)?;
    }
    let front = bind()?;
    println!("{}", front.local_addr()?.port());
    match hop {
        Hop::Echo => echo(&front),
        Hop::Relay { echo } => relay(&front, &bind()?, echo),
    }
    .context("relay hop")
}

fn bind() -> io::Result<UdpSocket> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
}

fn echo(sock: &UdpSocket) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        sock.send_to(&buf[..n], from)?;
    }
}

/// Sleeps in poll() on both sockets, like a packet loop on its TUN queue
/// and socket.
fn relay(front: &UdpSocket, back: &UdpSocket, echo: SocketAddr) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut client = None;
    for s in [front, back] {
        s.set_nonblocking(true)?;
    }
    loop {
        let mut fds = [front, back].map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: fds is a valid array of two pollfds for the whole call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        while let Some((n, from)) = try_recv(front, &mut buf)? {
            client = Some(from);
            back.send_to(&buf[..n], echo)?;
        }
        while let Some((n, _)) = try_recv(back, &mut buf)? {
            if let Some(c) = client {
                front.send_to(&buf[..n], c)?;
            }
        }
    }
}

fn try_recv(s: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    match s.recv_from(buf) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lowest CPU in this process's affinity mask (0 if it cannot be read).
fn first_allowed_cpu() -> usize {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills
    // it and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return 0;
        }
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap_or(0)
    }
}

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only touch the set passed to them.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}

/// A hop process, killed when dropped.
struct HopChild {
    child: Child,
    port: u16,
}

impl HopChild {
    fn spawn(args: &[String]) -> Result<HopChild> {
        let exe = std::env::current_exe().context("finding kolach-bench's own binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg(HOP_ARG)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // Gone with the bench even when it is killed before it can kill the
        // hop. SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting a relay hop")?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let read = BufReader::new(stdout).read_line(&mut line);
        let mut hop = HopChild { child, port: 0 };
        read.context("reading the relay hop's port")?;
        hop.port = line
            .trim()
            .parse()
            .with_context(|| format!("relay hop {args:?} printed {line:?}, not its port"))?;
        Ok(hop)
    }
}

impl Drop for HopChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `pings` datagrams round the ring, one every `interval` seconds,
/// and takes the percentiles of their round trips.
pub fn measure(round: u32, placement: Placement, pings: u32, interval: f64) -> Result<FloorSample> {
    let cpu = placement.cpu();
    let cpu_arg: Vec<String> = cpu.map(|c| c.to_string()).into_iter().collect();
    let hop = |role: &[String]| HopChild::spawn(&[role, &cpu_arg].concat());
    let echo = hop(&["echo".to_string()])?;
    let relay = hop(&["relay".to_string(), echo.port.to_string()])?;
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, relay.port));
    let gap = Duration::from_secs_f64(interval);
    // The client runs in a thread of its own so that pinning it leaves
    // the bench's other threads alone.
    let client = std::thread::spawn(move || -> Result<Vec<f64>> {
        if let Some(cpu) = cpu {
            pin(cpu)?;
        }
        ring(to, pings, gap)
    });
    let rtts = client
        .join()
        .map_err(|_| anyhow!("the relay client panicked"))??;
    drop((relay, echo));
    Ok(FloorSample {
        round,
        placement,
        sent: pings,
        received: rtts.len() as u32,
        p50_us: percentile(&rtts, 50.0),
        p99_us: percentile(&rtts, 99.0),
    })
}

/// The client: the round trips that came back, in microseconds.
fn ring(to: SocketAddr, pings: u32, gap: Duration) -> Result<Vec<f64>> {
    let sock = bind()?;
    sock.set_read_timeout(Some(LOST_AFTER))?;
    let mut out = Vec::with_capacity(pings as usize);
    let mut buf = [0u8; 2048];
    for seq in 0..pings {
        let mut msg = [0u8; PAYLOAD];
        msg[..4].copy_from_slice(&seq.to_be_bytes());
        let sent = Instant::now();
        sock.send_to(&msg, to)?;
        // A late answer to an earlier datagram is skipped, not counted.
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n == PAYLOAD && buf[..4] == msg[..4] => {
                    out.push(sent.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e).context("receiving from the relay"),
            }
        }
        std::thread::sleep(gap);
    }
    if out.is_empty() {
        bail!("none of {pings} datagrams came back round the relay ring");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hop_arguments() {
        assert_eq!(parse_hop(&args(&["echo"])).unwrap(), (Hop::Echo, None));
        assert_eq!(
            parse_hop(&args(&["echo", "1"])).unwrap(),
            (Hop::Echo, Some(1))
        );
        let (hop, cpu) = parse_hop(&args(&["relay", "4000", "0"])).unwrap();
        assert_eq!(
            hop,
            Hop::Relay {
                echo: "127.0.0.1:4000".parse().unwrap()
            }
        );
        assert_eq!(cpu, Some(0));
        for bad in [
            &[][..],
            &["relay"],
            &["relay", "x"],
            &["echo", "one"],
            &["bounce"],
        ] {
            assert!(parse_hop(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    fn sample(round: u32, placement: Placement, p50: f64) -> FloorSample {
        FloorSample {
            round,
            placement,
            sent: 10,
            received: 10,
            p50_us: Some(p50),
            p99_us: Some(p50 * 4.0),
        }
    }

    #[test]
    fn medians_per_placement_and_the_ratio_to_vxlan() {
        let samples = [
            sample(0, Placement::Free, 50.0),
            sample(0, Placement::OneCpu, 20.0),
            sample(1, Placement::Free, 70.0),
            sample(2, Placement::Free, 60.0),
        ];
        let s = summarize(&samples, Some(25.0));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].placement, s[0].rounds), (Placement::Free, 3));
        assert_eq!((s[0].p50_us, s[0].p99_us), (Some(60.0), Some(240.0)));
        assert_eq!(s[0].p50_vs_vxlan, Some(2.4));
        assert_eq!(
            (s[1].placement, s[1].rounds, s[1].p50_us),
            (Placement::OneCpu, 1, Some(20.0))
        );
        let text = lines(&s);
        assert!(
            text.contains("relay floor, free: RTT p50 60 us (2.40x vxlan's RTT) p99 240 us"),
            "{text}"
        );
        assert!(
            text.contains("relay floor, one-cpu: RTT p50 20 us (0.80x"),
            "{text}"
        );
        // Without vxlan there is no ratio, and a placement never measured has no line.
        let alone = summarize(&samples[1..2], None);
        assert_eq!(alone.len(), 1);
        assert!(!lines(&alone).contains("vxlan's"));
        assert!(summarize(&[], Some(25.0)).is_empty());
    }

    /// The ring in threads of this process: each datagram comes back whole,
    /// in order, through both relay sockets and the echo.
    #[test]
    fn a_datagram_goes_round_the_ring() {
        let e = bind().unwrap();
        let echo_at = e.local_addr().unwrap();
        std::thread::spawn(move || echo(&e));
        let (front, back) = (bind().unwrap(), bind().unwrap());
        let relay_at = front.local_addr().unwrap();
        std::thread::spawn(move || relay(&front, &back, echo_at));
        let rtts = ring(relay_at, 20, Duration::ZERO).unwrap();
        assert_eq!(rtts.len(), 20);
        assert!(rtts
            .iter()
            .all(|&r| r > 0.0 && r < LOST_AFTER.as_secs_f64() * 1e6));
    }
}

/// Medians over the rounds of one placement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FloorSummary {
    pub placement: Placement,
    pub rounds: usize,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// p50 divided by kernel vxlan's ping RTT p50 in the same run.
    pub p50_vs_vxlan: Option<f64>,
}

/// Per placement that was measured, the medians and the ratio to
/// `vxlan_p50_us`.
pub fn summarize(samples: &[FloorSample], vxlan_p50_us: Option<f64>) -> Vec<FloorSummary> {
    Placement::ALL
        .into_iter()
        .filter_map(|placement| {
            let s: Vec<&FloorSample> = samples
                .iter()
                .filter(|x| x.placement == placement)
                .collect();
            if s.is_empty() {
                return None;
            }
            let p50_us = median_of(s.iter().map(|x| x.p50_us));
            Some(FloorSummary {
                placement,
                rounds: s.len(),
                p50_us,
                p99_us: median_of(s.iter().map(|x| x.p99_us)),
                p50_vs_vxlan: ratio(p50_us, vxlan_p50_us),
            })
        })
        .collect()
}

/// The lines under the table.
pub fn lines(summary: &[FloorSummary]) -> String {
    let mut out = String::new();
    for f in summary {
        let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let vs = f
            .p50_vs_vxlan
            .map(|r| format!(" ({r:.2}x vxlan's RTT)"))
            .unwrap_or_default();
        out += &format!(
            "relay floor, {}: RTT p50 {} us{vs} p99 {} us: 3 processes passing a datagram over loopback with the udp path's 4 wakes and no packet work\n",
            f.placement.name(),
            us(f.p50_us),
            us(f.p99_us),
        );
    }
    out
}
