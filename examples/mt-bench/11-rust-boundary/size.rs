//! Byte counts for people.

/// Formats a byte count with binary units and one decimal: "512 B", "1.5 KiB", "1.0 MiB".
/// A value is shown in the largest unit it reaches (1024 KiB is "1.0 MiB"), up to TiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{} B", bytes);
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value > 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{:.1} {}", value, UNITS[unit])
}
