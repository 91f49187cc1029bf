//! Outside input shown in log lines and status, clipped: a value in etcd can
//! be a megabyte, and a log line should stay one line.

/// How much of a value a log line shows.
pub const SHOWN: usize = 80;

/// `s` cut to at most `max` bytes (at a character boundary), with the full
/// size appended when anything was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// [`clip`] to [`SHOWN`] bytes.
pub fn shown(s: impl AsRef<str>) -> String {
    clip(s.as_ref(), SHOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_long_values_only() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 4), "abcd... (10 bytes)");
        // Never inside a multi-byte character.
        assert_eq!(clip("ééé", 3), "é... (6 bytes)");
        assert_eq!(
            shown("x".repeat(1000)).len(),
            SHOWN + " ... (1000 bytes)".len() - 1
        );
    }
}
