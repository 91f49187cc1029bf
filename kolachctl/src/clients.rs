//! Reaching the daemons over the sockets in `--run-dir`, and `--json` output.

use kolach_proto::control::control_client::ControlClient;
use kolach_proto::dataplane::dataplane_admin_client::DataplaneAdminClient;
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::ipam::ipam_client::IpamClient;
use kolach_proto::uds::{self, UdsError};
use tonic::transport::Channel;

use crate::cli::Cli;

/// The gRPC clients the command line points at.
pub trait Connect {
    async fn controld(&self) -> Result<ControlClient<Channel>, UdsError>;
    async fn ipam(&self) -> Result<IpamClient<Channel>, UdsError>;
    async fn dataplaned(&self) -> Result<DataplaneClient<Channel>, UdsError>;
    async fn dataplaned_admin(&self) -> Result<DataplaneAdminClient<Channel>, UdsError>;
}

impl Connect for Cli {
    async fn controld(&self) -> Result<ControlClient<Channel>, UdsError> {
        let path = self.run_dir.join(kolach_proto::CONTROLD_SOCKET);
        Ok(ControlClient::new(
            uds::connect(&path, "kolach-controld").await?,
        ))
    }

    async fn ipam(&self) -> Result<IpamClient<Channel>, UdsError> {
        let path = self.run_dir.join(kolach_proto::CONTROLD_SOCKET);
        Ok(IpamClient::new(
            uds::connect(&path, "kolach-controld").await?,
        ))
    }

    async fn dataplaned(&self) -> Result<DataplaneClient<Channel>, UdsError> {
        let path = self.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
        Ok(DataplaneClient::new(
            uds::connect(&path, "kolach-dataplaned").await?,
        ))
    }

    async fn dataplaned_admin(&self) -> Result<DataplaneAdminClient<Channel>, UdsError> {
        let path = self.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
        Ok(DataplaneAdminClient::new(
            uds::connect(&path, "kolach-dataplaned").await?,
        ))
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("views serialize")
    );
}
