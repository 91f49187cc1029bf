//! A block key and value as etcd may hold them (`<prefix>/blocks/<a.b.c.d>-<len>`):
//! any bytes, key and value split at the first NUL. Decoding never panics,
//! an accepted key has exactly one spelling (two keys never name one block),
//! an accepted value survives our own round trip, and errors fit on a log line.
#![no_main]

use kolach_controld::ipam::block::{self, BlockValue};
use kolach_controld::model::subnet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, value) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let name = String::from_utf8_lossy(name);
    match block::decode(&name, value, 7, 9, 8) {
        Ok(b) => {
            assert_eq!(subnet::key_name(b.net), name, "a second spelling of {}", b.net);
            assert_eq!(subnet::parse_key(&name), Ok(b.net));
            assert_eq!(b.net.network(), b.net.addr());
            assert_eq!((b.lease_id, b.mod_revision, b.create_revision), (7, 9, 8));
            let v = BlockValue {
                pool: b.pool.clone(),
                public_ip: b.public_ip,
            };
            let again = block::decode(&name, v.to_json().as_bytes(), 7, 9, 8)
                .expect("our own value decodes");
            assert_eq!(again, b);
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.len() < 4096, "error of {} bytes", line.len());
        }
    }
});
