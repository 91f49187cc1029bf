//! A snapshot as the dataplane's socket may receive it: any bytes, decoded,
//! validated and turned into a forwarding table without a panic.
#![no_main]

use kolach_dataplaned::snapshot;
use kolach_proto::dataplane::Snapshot;
use kolach_proto::prost::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Snapshot::decode(data) else {
        return;
    };
    if let Ok(v) = snapshot::validate(&s) {
        assert!(v.network.contains(&v.local_subnet));
        assert!(!(253..=255).contains(&v.export_table));
        assert_eq!(v.exported().len(), 1 + v.local_blocks.len());
        let t = v.forward_table();
        assert!(t.routes.len() <= v.routes.len());
    }
});
