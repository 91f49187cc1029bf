//! The allocation journal as a crash, a full disk or a hand edit may leave
//! it: any bytes in `allocations.journal`. Replay never panics nor fails on
//! content, every replayed allocation sits under its own address and holds
//! it alone, each attachment has one address, and a compaction of what was
//! replayed replays to the same allocations and cursors.
#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use kolach_controld::ipam::journal::{Journal, FILE_NAME};
use libfuzzer_sys::fuzz_target;

/// One directory per fuzzing process, its journal overwritten each run.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("kolach-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.join(FILE_NAME), data).expect("writing the journal");
    let (mut journal, r) = Journal::open(dir).expect("any content replays");

    let mut attachments = HashSet::new();
    for (ip, a) in &r.allocations {
        assert_eq!(a.address, *ip, "allocation of {} filed under {ip}", a.address);
        assert!(
            attachments.insert(a.attachment.clone()),
            "{:?} holds two addresses",
            a.attachment
        );
    }
    let nonblank = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    assert_eq!(r.lines, nonblank);

    if r.allocations.is_empty() && r.cursors.is_empty() {
        return;
    }
    journal
        .compact(r.allocations.values(), &r.cursors)
        .expect("compaction");
    drop(journal);
    let (_, again) = Journal::open(dir).expect("a compacted journal replays");
    assert_eq!(again.allocations, r.allocations);
    assert_eq!(again.cursors, r.cursors);
    assert_eq!(again.lines, r.allocations.len() + r.cursors.len());
});
