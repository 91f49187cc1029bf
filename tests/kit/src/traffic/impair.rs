//! A userspace netem for the underlay: this machine's kernel has no
//! `sch_netem` (CONFIG_NET_SCH_NETEM is off, and it has no modules), so the
//! impairment is done the way a netem box on the wire would, in a process.
//!
//! Inside a host's namespace, a policy rule sends the host's overlay
//! datagrams (UDP to a peer's udp port) into a TUN device `kimp0` that this
//! module reads. Each packet is then dropped, delayed (with jitter), sent
//! ahead of the others (reordered), duplicated, or corrupted, and written
//! back onto the underlay through a raw socket whose mark (`0x6b`) routes it
//! by the main table. A corrupted packet has one byte of its inner packet
//! changed and its UDP checksum cleared (as a corruption the outer checksum
//! does not catch), so the receiving dataplane's own checks are what stand
//! between it and the pods.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns;

const TUN_NAME: &str = "kimp0";
const MARK: u32 = 0x6b;
const TABLE: &str = "2107";
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// What to do to the packets, netem's knobs.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Probability of dropping a packet.
    pub loss: f64,
    pub delay: Duration,
    /// Each packet's delay is `delay` ± up to `jitter`.
    pub jitter: Duration,
    /// Probability of sending a packet at once, ahead of delayed ones.
    pub reorder: f64,
    /// Probability of sending a packet twice.
    pub duplicate: f64,
    /// Probability of changing one byte of the inner packet.
    pub corrupt: f64,
}

/// What the impairer did, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub seen: u64,
    pub dropped: u64,
    pub reordered: u64,
    pub duplicated: u64,
    /// Corrupted in the inner IPv4 header (the receiver must drop it as malformed).
    pub corrupted_header: u64,
    /// Corrupted in the inner payload (the pod's TCP/UDP checksum catches it).
    pub corrupted_payload: u64,
    pub sent: u64,
}

#[derive(Default)]
struct Counters {
    seen: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
    duplicated: AtomicU64,
    corrupted_header: AtomicU64,
    corrupted_payload: AtomicU64,
    sent: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            seen: g(&self.seen),
            dropped: g(&self.dropped),
            reordered: g(&self.reordered),
            duplicated: g(&self.duplicated),
            corrupted_header: g(&self.corrupted_header),
            corrupted_payload: g(&self.corrupted_payload),
            sent: g(&self.sent),
        }
    }
}

/// xorshift64*: enough randomness for impairments, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

struct Due {
    at: Instant,
    seq: u64,
    pkt: Vec<u8>,
    hit: Option<Hit>,
}

/// Where a corruption landed; counted when the packet is actually sent, so
/// packets still queued when the impairer stops are not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    Header,
    Payload,
}

impl Counters {
    fn count_hit(&self, hit: Option<Hit>) {
        match hit {
            Some(Hit::Header) => self.corrupted_header.fetch_add(1, Ordering::Relaxed),
            Some(Hit::Payload) => self.corrupted_payload.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    // Earliest first out of a max-heap.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: Mutex<BinaryHeap<Due>>,
    ready: Condvar,
}

/// A running impairer in one namespace.
pub struct Impairer {
    ns: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// The byte offset of the inner packet, the inner header's length, and the
/// UDP checksum's offset, for an outer IPv4/UDP packet.
fn layout(pkt: &[u8]) -> Option<(usize, usize, usize)> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let inner = ihl + 8;
    let inner_ihl = usize::from(*pkt.get(inner)? & 0x0f) * 4;
    Some((inner, inner_ihl.max(20), ihl + 6))
}

impl Impairer {
    /// Impairs every UDP datagram namespace `ns` sends to `to`:`dport`.
    pub fn start(ns: &str, to: Ipv4Addr, dport: u16, imp: Impairment, seed: u64) -> Result<Self> {
        let (tun, raw) = netns::within(ns, open_fds)?;
        netns::ip(ns, &["link", "set", TUN_NAME, "up"])?;
        netns::ip(
            ns,
            &["route", "add", "default", "dev", TUN_NAME, "table", TABLE],
        )?;
        let mark = format!("{MARK:#x}");
        netns::ip(
            ns,
            &[
                "rule", "add", "pref", "100", "fwmark", &mark, "lookup", "main",
            ],
        )?;
        let to_s = format!("{to}/32");
        let dport_s = dport.to_string();
        netns::ip(
            ns,
            &[
                "rule", "add", "pref", "101", "to", &to_s, "ipproto", "udp", "dport", &dport_s,
                "lookup", TABLE,
            ],
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let queue = Arc::new(Queue::default());
        let reader = {
            let (stop, counters, queue) = (stop.clone(), counters.clone(), queue.clone());
            std::thread::spawn(move || read_loop(tun, imp, seed, &stop, &counters, &queue))
        };
        let sender = {
            let (stop, counters, queue) = (stop.clone(), counters.clone(), queue.clone());
            std::thread::spawn(move || send_loop(raw, &stop, &counters, &queue))
        };
        Ok(Impairer {
            ns: ns.to_string(),
            stop,
            threads: vec![reader, sender],
            counters,
        })
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops impairing: the rules go, packets take the plain path again.
    pub fn stop(mut self) -> Stats {
        self.shutdown();
        self.counters.snapshot()
    }

    fn shutdown(&mut self) {
        for pref in ["101", "100"] {
            let _ = netns::ip(&self.ns, &["rule", "del", "pref", pref]);
        }
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Impairer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The TUN device and the marked raw socket, opened inside the namespace.
fn open_fds() -> Result<(OwnedFd, OwnedFd)> {
    let tun = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..TUN_NAME.len()].copy_from_slice(TUN_NAME.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq-sized struct we own.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        bail!("TUNSETIFF {TUN_NAME}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if raw < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let raw = unsafe { OwnedFd::from_raw_fd(raw) };
    let mark = MARK;
    // SAFETY: setsockopt with a u32 value of the right size.
    let r = unsafe {
        libc::setsockopt(
            raw.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!("SO_MARK: {}", std::io::Error::last_os_error());
    }
    Ok((tun.into(), raw))
}

fn read_loop(tun: OwnedFd, imp: Impairment, seed: u64, stop: &AtomicBool, c: &Counters, q: &Queue) {
    let mut file = File::from(tun);
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 65536];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        c.seen.fetch_add(1, Ordering::Relaxed);
        if rng.chance(imp.loss) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let copies = if rng.chance(imp.duplicate) {
            c.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut pkt = buf[..n].to_vec();
            let hit = if rng.chance(imp.corrupt) {
                corrupt(&mut pkt, &mut rng)
            } else {
                None
            };
            let at = if rng.chance(imp.reorder) {
                c.reordered.fetch_add(1, Ordering::Relaxed);
                Instant::now()
            } else {
                let j = imp.jitter.as_micros() as u64;
                let base = imp.delay.as_micros() as u64;
                let us = (base + rng.below(2 * j + 1)).saturating_sub(j);
                Instant::now() + Duration::from_micros(us)
            };
            seq += 1;
            q.heap
                .lock()
                .expect("queue")
                .push(Due { at, seq, pkt, hit });
            q.ready.notify_one();
        }
    }
}

/// Changes one byte of the inner packet and clears the UDP checksum; says
/// whether the byte was in the inner header or its payload.
fn corrupt(pkt: &mut [u8], rng: &mut Rng) -> Option<Hit> {
    let (inner, inner_ihl, csum) = layout(pkt)?;
    if pkt.len() <= inner || csum + 2 > pkt.len() {
        return None;
    }
    let at = inner + rng.below((pkt.len() - inner) as u64) as usize;
    let flip = (rng.below(255) + 1) as u8;
    pkt[at] ^= flip;
    pkt[csum] = 0;
    pkt[csum + 1] = 0;
    Some(if at < inner + inner_ihl {
        Hit::Header
    } else {
        Hit::Payload
    })
}

fn send_loop(raw: OwnedFd, stop: &AtomicBool, c: &Counters, q: &Queue) {
    let mut heap = q.heap.lock().expect("queue");
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let wait = match heap.peek() {
            Some(d) if d.at <= now => {
                let d = heap.pop().expect("peeked");
                drop(heap);
                if send(&raw, &d.pkt) {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                    c.count_hit(d.hit);
                }
                heap = q.heap.lock().expect("queue");
                continue;
            }
            Some(d) => (d.at - now).min(Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        heap = q.ready.wait_timeout(heap, wait).expect("queue").0;
    }
}

/// Sends one packet; false if it could not be.
fn send(raw: &OwnedFd, pkt: &[u8]) -> bool {
    if pkt.len() < 20 {
        return false;
    }
    let dst = [pkt[16], pkt[17], pkt[18], pkt[19]];
    // SAFETY: a zeroed sockaddr_in filled with the destination.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_addr.s_addr = u32::from_ne_bytes(dst);
    // SAFETY: sendto with our buffer and a valid sockaddr_in.
    let sent = unsafe {
        libc::sendto(
            raw.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    sent == pkt.len() as isize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_chances_are_about_right() {
        let mut r = Rng(42);
        let hits = (0..100_000).filter(|_| r.chance(0.1)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert!(!Rng(1).chance(0.0));
    }

    #[test]
    fn corruption_lands_in_the_inner_packet() {
        // Outer IPv4 (20) + UDP (8) + inner IPv4 (20) + 12 bytes payload.
        let mut pkt = vec![0u8; 60];
        pkt[0] = 0x45;
        pkt[26] = 0xab;
        pkt[27] = 0xcd;
        pkt[28] = 0x45;
        let orig = pkt.clone();
        let c = Counters::default();
        let mut r = Rng(7);
        for _ in 0..200 {
            let mut p = orig.clone();
            c.count_hit(corrupt(&mut p, &mut r));
            let changed: Vec<usize> = (0..p.len()).filter(|&i| p[i] != orig[i]).collect();
            assert!(changed.contains(&26) && changed.contains(&27));
            let inner: Vec<usize> = changed.into_iter().filter(|&i| i >= 28).collect();
            assert_eq!(inner.len(), 1, "one inner byte changed");
        }
        let s = c.snapshot();
        assert_eq!(s.corrupted_header + s.corrupted_payload, 200);
        assert!(s.corrupted_header > 0 && s.corrupted_payload > 0);
    }

    #[test]
    fn earliest_due_comes_out_first() {
        let t = Instant::now();
        let mut h = BinaryHeap::new();
        for (i, ms) in [30u64, 10, 20].iter().enumerate() {
            h.push(Due {
                at: t + Duration::from_millis(*ms),
                seq: i as u64,
                pkt: vec![],
                hit: None,
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| h.pop().map(|d| d.seq)).collect();
        assert_eq!(order, [1, 2, 0]);
    }
}
