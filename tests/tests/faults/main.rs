//! Multi-host fault tests: etcd outages, a cluster losing its leader,
//! partitions, compaction, an impaired underlay, leases deleted by hand.

mod fault_compaction;
mod fault_etcd_cluster;
mod fault_etcd_outage;
mod fault_impaired_underlay;
mod fault_lease_deleted;
mod fault_partition;
