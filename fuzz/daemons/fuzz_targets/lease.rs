//! A lease key and value as etcd may hold them: any bytes. Parsing never
//! panics, an accepted value survives our own round trip, an accepted key
//! has exactly one spelling (so two keys can never name one subnet), and
//! errors fit on a log line.
#![no_main]

use kolach_controld::model::lease::{self, LeaseAttrs};
use kolach_controld::model::{subnet, vtep};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match LeaseAttrs::parse(data) {
        Ok(a) => {
            assert!(lease::is_host_address(a.public_ip));
            let again = LeaseAttrs::parse(a.to_json().as_bytes()).expect("our own value parses");
            assert_eq!(again, a);
            // Whatever BackendData holds, reading a VTEP MAC from it is safe.
            let _ = vtep::from_backend_data(a.backend_data.as_ref());
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.len() < 1024, "error of {} bytes", line.len());
        }
    }
    if let Ok(name) = std::str::from_utf8(data) {
        match subnet::parse_key(name) {
            Ok(net) => assert_eq!(subnet::key_name(net), name, "a second spelling of {net}"),
            Err(e) => assert!(e.to_string().len() < 1024),
        }
    }
});
