//! kolach's wire contracts and the plumbing both daemons share.
//!
//! - [`dataplane`], [`control`] and [`ipam`]: the generated gRPC packages
//!   `kolach.dataplane.v1` (served by kolach-dataplaned), `kolach.control.v1` and
//!   `kolach.ipam.v1` (both served by kolach-controld).
//! - [`backend`]: the backend kinds, their names and overheads.
//! - [`net`]: typed address messages and their conversion to `std::net` / `ipnet`.
//! - [`mac`]: the Ethernet address type (vxlan VTEPs) both daemons use.
//! - [`pod`]: a pod's host end name, which the CNI plugin and kolachctl compute.
//! - [`uds`]: serving and dialing gRPC over the Unix sockets in the run dir, with
//!   the peer-credential check and the "daemon is not running" hint.
//! - [`systemd`]: sd_notify, fd store included; [`signals`]: the stop signals.
//! - [`goflags`]: Go-style command lines (flannel's `-flag=value`, `FLANNELD_`
//!   variables) rewritten for clap, driven by each binary's own flags.
//! - [`manual`]: the manual sections beyond the flags (FILES, SEE ALSO, ...)
//!   each binary keeps next to its flags, for `--help` and kolach-docgen.

#![forbid(unsafe_code)]

pub mod backend;
pub mod goflags;
pub mod mac;
pub mod manual;
pub mod net;
pub mod pod;
pub mod signals;
pub mod systemd;
pub mod uds;

pub use backend::BackendKind;
pub use mac::Mac;
/// The protobuf runtime the messages use, for readers of encoded messages
/// (the dataplane's saved `snapshot.pb`) that do not depend on it themselves.
pub use prost;

/// The generated code, nested as the proto packages are so cross-package
/// references resolve.
mod pb {
    pub mod kolach {
        pub mod net {
            pub mod v1 {
                tonic::include_proto!("kolach.net.v1");
            }
        }
        pub mod dataplane {
            pub mod v1 {
                tonic::include_proto!("kolach.dataplane.v1");
            }
        }
        pub mod control {
            pub mod v1 {
                tonic::include_proto!("kolach.control.v1");
            }
        }
        pub mod ipam {
            pub mod v1 {
                tonic::include_proto!("kolach.ipam.v1");
            }
        }
    }
}

/// `kolach.net.v1`: address types shared by every API.
pub use pb::kolach::net::v1 as netpb;

/// `kolach.dataplane.v1`: snapshots in, status and routes out.
pub use pb::kolach::dataplane::v1 as dataplane;

/// `kolach.control.v1`: controld's status and the lease table.
pub use pb::kolach::control::v1 as control;

/// `kolach.ipam.v1`: pod addresses, pools and blocks (controld, root only).
pub use pb::kolach::ipam::v1 as ipam;

/// Socket file names inside the run dir (DESIGN §7).
pub const CONTROLD_SOCKET: &str = "controld.sock";
pub const DATAPLANED_SOCKET: &str = "dataplaned.sock";
