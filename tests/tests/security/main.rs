//! Multi-host tests of what an intruder can do: datagrams from strangers,
//! local users at the daemons' sockets, etcd over TLS, garbage in etcd.

mod intruder_datagrams;
mod intruder_etcd_tls;
mod intruder_garbage;
mod intruder_sockets;
mod socket_group;
