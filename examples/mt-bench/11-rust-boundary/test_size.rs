#[path = "size.rs"]
mod size;

use size::human_size;

#[test]
fn bytes() {
    assert_eq!(human_size(0), "0 B");
    assert_eq!(human_size(1023), "1023 B");
}

#[test]
fn kibibytes() {
    assert_eq!(human_size(1024), "1.0 KiB");
    assert_eq!(human_size(1536), "1.5 KiB");
}

#[test]
fn a_whole_mebibyte_is_shown_in_mib() {
    assert_eq!(human_size(1024 * 1024), "1.0 MiB");
}

#[test]
fn gibibytes() {
    assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
}
