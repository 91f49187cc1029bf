//! The pod's network namespace: opened once from `CNI_NETNS`, its fd handed
//! to the kernel when the veth is made, and entered by a thread of its own
//! for the work inside (a netlink socket belongs to the namespace it was
//! opened in, and `setns` changes only the calling thread).

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};

use nix::sched::{setns, CloneFlags};

use super::nl::Nl;
use super::WireError;

#[derive(Debug)]
pub struct Netns {
    file: File,
    pub path: String,
}

impl Netns {
    /// Opens `path`; [`WireError::NoNetns`] when nothing is there.
    pub fn open(path: &str) -> Result<Netns, WireError> {
        match File::open(path) {
            Ok(file) => Ok(Netns {
                file,
                path: path.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(WireError::NoNetns {
                path: path.to_string(),
            }),
            Err(source) => Err(WireError::Netns {
                path: path.to_string(),
                source,
            }),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` with a netlink connection inside the namespace, on a thread
    /// that entered it and ends with the call, so nothing else ever runs there.
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, WireError>
    where
        T: Send,
        F: FnOnce(Nl) -> Fut + Send,
        Fut: Future<Output = Result<T, WireError>>,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|source| WireError::Setns {
                    path: self.path.clone(),
                    source,
                })?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(WireError::Runtime)?;
                rt.block_on(async {
                    let nl = Nl::connect()?;
                    f(nl).await
                })
            })
            .join()
            .unwrap_or(Err(WireError::Panicked))
        })
    }
}
