//! Opening the persistent TUN device.
//!
//! Done with our own ioctls rather than the `tun` crate, which opens one queue
//! only and has no TUNSETOFFLOAD, TUNSETSTEERINGEBPF or TUNGETIFF (README, "The
//! udp data path", says why in full). The device is persistent (TUNSETPERSIST):
//! it must outlive the process so that a restart or crash of the dataplane
//! leaves the address and the kernel route in place.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

pub const TUN_PATH: &str = "/dev/net/tun";
/// Linux IFNAMSIZ minus the terminating NUL.
pub const MAX_NAME_LEN: usize = 15;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// TUNSETOFFLOAD flags: the kernel may hand us packets with a partial
/// checksum (`TUN_F_CSUM`) and TCP/IPv4 super-packets (`TUN_F_TSO4`).
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

/// Packets the kernel may queue for us before it drops (default 500): a
/// burst from many pods must fit while the loop sends the previous batch.
pub const TXQUEUELEN: u32 = 1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags member of the
/// union, padded to the kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

// TUNSETIFF is declared _IOW('T', 202, int) but takes a struct ifreq pointer.
nix::ioctl_write_ptr_bad!(
    tunsetiff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    IfReq
);
nix::ioctl_write_int!(tunsetpersist, b'T', 203);
nix::ioctl_write_int!(tunsetoffload, b'T', 208);
// TUNGETIFF is declared _IOR('T', 210, unsigned int) but fills a struct ifreq.
nix::ioctl_read_bad!(
    tungetiff,
    nix::request_code_read!(b'T', 210, std::mem::size_of::<libc::c_uint>()),
    IfReq
);

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("invalid TUN name {0:?}: 1 to 15 bytes, no '/', whitespace or NUL")]
    BadName(String),
    #[error("{TUN_PATH} does not exist: load the tun module (modprobe tun) or give the container the device")]
    NoDevice,
    #[error("cannot open {TUN_PATH}: {0} (kolach-dataplaned needs CAP_NET_ADMIN)")]
    Open(io::Error),
    #[error("no permission to create or attach TUN {0}: kolach-dataplaned needs CAP_NET_ADMIN")]
    Permission(String),
    #[error("TUN {0} is in use by another process (is another kolach-dataplaned running?)")]
    Busy(String),
    #[error("cannot attach TUN {name}: {source} (a non-TUN device with that name exists?)")]
    Attach { name: String, source: io::Error },
    #[error("cannot make TUN {name} persistent: {source}")]
    Persist { name: String, source: io::Error },
    #[error("the inherited fd is not attached to a TUN device: {0}")]
    NotAttached(io::Error),
    #[error("the inherited fd belongs to TUN {found}, not {wanted}")]
    OtherDevice { found: String, wanted: String },
}

/// How the TUN fd frames packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One bare IPv4 packet per read and write.
    Plain,
    /// A `virtio_net_hdr` before every packet, TSO and partial checksums on.
    Offload,
}

pub fn check_name(name: &str) -> Result<(), TunError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(TunError::BadName(name.to_string()))
    }
}

/// Creates the TUN device `name` (IFF_TUN | IFF_NO_PI, persistent), or attaches
/// to it if it already exists, framed as asked; where the kernel refuses the
/// offloads, falls back to plain framing. The returned file is non-blocking
/// and close-on-exec.
pub fn open_persistent(name: &str, want: Framing) -> Result<(File, Framing), TunError> {
    open_with(name, want, 0)
}

/// Opens `n` queues of the persistent multi-queue TUN `name` (creating it if
/// it does not exist), framed as asked, in queue order. A device made
/// single-queue (by an image before queues) stays so: one queue is opened
/// then, and the bool says so.
pub fn open_queues(
    name: &str,
    want: Framing,
    n: usize,
) -> Result<(Vec<File>, Framing, bool), TunError> {
    let (first, framing) = match open_with(name, want, IFF_MULTI_QUEUE) {
        Err(TunError::Attach { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            let (f, framing) = open_persistent(name, want)?;
            return Ok((vec![f], framing, true));
        }
        r => r?,
    };
    let extra = if framing == Framing::Offload {
        IFF_VNET_HDR
    } else {
        0
    };
    let mut files = vec![first];
    for _ in 1..n {
        files.push(open_framed(name, extra | IFF_MULTI_QUEUE)?);
    }
    // Queues of a multi-queue device attach without EBUSY: more queues
    // than ours means another process holds some.
    if let Some(attached) = queue_count(name).filter(|a| *a > files.len()) {
        tracing::debug!(
            device = name,
            attached,
            ours = files.len(),
            "TUN queues held elsewhere"
        );
        return Err(TunError::Busy(name.to_string()));
    }
    Ok((files, framing, false))
}

/// Opens one fd of `name` framed as asked (plain where the kernel refuses
/// the offloads); `mq` is `IFF_MULTI_QUEUE` or 0.
fn open_with(name: &str, want: Framing, mq: libc::c_short) -> Result<(File, Framing), TunError> {
    if want == Framing::Offload {
        let file = open_framed(name, IFF_VNET_HDR | mq)?;
        match set_offload(&file) {
            Ok(()) => return Ok((file, Framing::Offload)),
            Err(e) => {
                tracing::warn!(device = name, error = %e, "the kernel refuses TUN offloads (TUNSETOFFLOAD); using plain framing");
            }
        }
    }
    Ok((open_framed(name, mq)?, Framing::Plain))
}

/// The TUN's attached queues, as the kernel's transmit queues show them.
fn queue_count(name: &str) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{name}/queues")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("tx-"))
            .count(),
    )
}

/// Turns on TSO and partial checksums for a TUN fd with `IFF_VNET_HDR`.
pub fn set_offload(file: &File) -> io::Result<()> {
    offload_flags(file, TUN_F_CSUM | TUN_F_TSO4)
}

/// Whether the kernel takes UDP super-packets (`GSO_UDP_L4`) written to a
/// TUN: Linux 6.2 and later (TUN USO). Read from the release rather than
/// probed with `TUNSETOFFLOAD`, which would announce a feature change on the
/// device at every start and hot upgrade.
pub fn uso_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    kernel_version(release.trim()).is_some_and(|v| v >= (6, 2))
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v657`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn offload_flags(file: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes an integer argument, no pointers.
    unsafe { tunsetoffload(file.as_raw_fd(), flags.into()) }?;
    Ok(())
}

fn open_framed(name: &str, extra_flags: libc::c_short) -> Result<File, TunError> {
    check_name(name)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TunError::NoDevice,
            _ => TunError::Open(e),
        })?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI | extra_flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: req is a live, properly sized ifreq for the duration of the call.
    unsafe { tunsetiff(file.as_raw_fd(), &req) }.map_err(|errno| match errno {
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => {
            TunError::Permission(name.to_string())
        }
        nix::errno::Errno::EBUSY => TunError::Busy(name.to_string()),
        e => TunError::Attach {
            name: name.to_string(),
            source: e.into(),
        },
    })?;
    // SAFETY: TUNSETPERSIST takes an integer argument, no pointers.
    unsafe { tunsetpersist(file.as_raw_fd(), 1) }.map_err(|e| TunError::Persist {
        name: name.to_string(),
        source: e.into(),
    })?;
    Ok(file)
}

/// The name of the TUN device `file` is attached to.
pub fn attached_name(file: &File) -> io::Result<String> {
    Ok(attached(file)?.0)
}

/// How a TUN fd (for example one handed down) frames packets.
pub fn framing(file: &File) -> io::Result<Framing> {
    Ok(attached(file)?.1)
}

fn attached(file: &File) -> io::Result<(String, Framing)> {
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: req is a live, properly sized ifreq the kernel fills in.
    unsafe { tungetiff(file.as_raw_fd(), &mut req) }?;
    let len = req.name.iter().position(|b| *b == 0).unwrap_or(16);
    let framing = if req.flags & IFF_VNET_HDR != 0 {
        Framing::Offload
    } else {
        Framing::Plain
    };
    Ok((
        String::from_utf8_lossy(&req.name[..len]).into_owned(),
        framing,
    ))
}

/// `struct ifreq` with the `ifr_qlen` member of the union.
#[repr(C)]
struct IfReqQlen {
    name: [u8; 16],
    qlen: libc::c_int,
    _pad: [u8; 20],
}

nix::ioctl_write_ptr_bad!(siocsiftxqlen, libc::SIOCSIFTXQLEN, IfReqQlen);

/// Sets the device's transmit queue length (the packets the kernel queues
/// for our reads).
pub fn set_txqueuelen(name: &str, len: u32) -> io::Result<()> {
    check_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))?;
    let mut req = IfReqQlen {
        name: [0; 16],
        qlen: len.try_into().unwrap_or(libc::c_int::MAX),
        _pad: [0; 20],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: req is a live, properly sized ifreq for the duration of the call.
    unsafe { siocsiftxqlen(sock.as_raw_fd(), &req) }?;
    Ok(())
}

/// Takes over a TUN fd handed down (hot upgrade, systemd's fd store) if it
/// is attached to `name`; makes it non-blocking like one we open.
pub fn adopt(file: File, name: &str) -> Result<File, TunError> {
    let found = attached_name(&file).map_err(TunError::NotAttached)?;
    if found != name {
        return Err(TunError::OtherDevice {
            found,
            wanted: name.to_string(),
        });
    }
    let fl = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| TunError::NotAttached(e.into()))?;
    let fl = nix::fcntl::OFlag::from_bits_retain(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(|e| TunError::NotAttached(e.into()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<IfReqQlen>(), 40);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("6.2.0"), Some((6, 2)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6-rc1"), None);
        assert_eq!(kernel_version(""), None);
        assert!(uso_supported(), "this machine runs Linux >= 6.2");
    }

    #[test]
    fn names() {
        assert!(check_name("kolach0").is_ok());
        assert!(check_name("abcdefghijklmno").is_ok());
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_codes_match_linux_headers() {
        assert_eq!(
            nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
            0x400454ca
        );
        assert_eq!(
            nix::request_code_write!(b'T', 203, std::mem::size_of::<libc::c_int>()),
            0x400454cb
        );
        assert_eq!(
            nix::request_code_read!(b'T', 210, std::mem::size_of::<libc::c_uint>()),
            0x800454d2
        );
        assert_eq!(
            nix::request_code_write!(b'T', 208, std::mem::size_of::<libc::c_int>()),
            0x400454d0
        );
    }

    #[test]
    fn a_file_that_is_no_tun_is_not_adopted() {
        let f = File::open("/dev/null").unwrap();
        assert!(matches!(adopt(f, "kolach0"), Err(TunError::NotAttached(_))));
    }
}
