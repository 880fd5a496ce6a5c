// The benchmark's oracle (bench.yaml `check`); not part of the work packet.
#[path = "size.rs"]
mod size;

use size::human_size;

#[test]
fn every_unit_boundary() {
    let k: u64 = 1024;
    assert_eq!(human_size(k - 1), "1023 B");
    assert_eq!(human_size(k), "1.0 KiB");
    assert_eq!(human_size(k * k), "1.0 MiB");
    assert_eq!(human_size(k * k * k), "1.0 GiB");
    assert_eq!(human_size(k * k * k * k), "1.0 TiB");
    assert_eq!(human_size(k * k * k * k * k), "1024.0 TiB");
}

#[test]
fn between_boundaries() {
    assert_eq!(human_size(1024 * 1024 + 512 * 1024), "1.5 MiB");
    assert_eq!(human_size(10 * 1024 * 1024 * 1024 + 1024 * 1024 * 1024 / 4), "10.2 GiB");
    assert_eq!(human_size(1000), "1000 B");
}
