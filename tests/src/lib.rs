//! Multi-host test harness (see tests/*.rs).
