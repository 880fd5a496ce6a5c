//! `steward mt plan`: packets are decomposed, checked and refused with their reasons.

use crate::support::{Steward, text};

const PACKET: &str = include_str!("../../../../examples/mt-demo/packet.yaml");

#[test]
fn the_demo_packet_plans_into_one_checked_task() {
    let s = Steward::new();
    s.write("packet.yaml", PACKET);
    s.write("calc.py", "def add(a, b):\n    return a - b\n");
    let plan = s.json(&["mt", "plan", "packet.yaml", "--json"]);
    assert_eq!(plan["valid"], true, "{plan}");
    assert_eq!(plan["wp_id"], "WP-demo-add");
    let mt = &plan["micro_tasks"][0];
    assert_eq!(mt["mt_id"], "MT-001");
    assert_eq!(mt["files"]["modify"], serde_json::json!(["calc.py"]));
    assert_eq!(mt["verify"][0]["command"], "python3 -m unittest -q test_calc");
    assert_eq!(plan["execution_waves"], serde_json::json!([["MT-001"]]));
    assert_eq!(plan["execution_policy"]["max_iterations_per_mt"], 5, "DG-MT-04 defaults");
    assert_eq!(plan["report"]["infos"][0]["rule"], "MT-VAL-010");
    let out = s.run(&["mt", "plan", "packet.yaml"]);
    assert!(out.status.success());
    assert!(text(&out).contains("MT-VAL: ok"), "{}", text(&out));
}

/// DG-MT-01: a packet that carries definitions is refused, with the line.
#[test]
fn supplied_definitions_are_refused() {
    let s = Steward::new();
    s.write("packet.yaml", &format!("{PACKET}mt_definitions:\n  - mt_id: MT-001\n"));
    let out = s.run(&["mt", "plan", "packet.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 17: `mt_definitions`: mt_definitions must not be provided"), "{}", text(&out));
}

/// DG-MT-19 and MT-VAL errors block with the full report (exit 1); a bad policy names its field.
#[test]
fn blocking_findings_and_bad_policies_are_reported() {
    let s = Steward::new();
    s.write("calc.py", "");
    s.write(
        "packet.yaml",
        &PACKET.replace("  - python3 -m unittest -q test_calc", "  - python3 -m unittest -q test_calc\n  - rm -rf /"),
    );
    s.write("policy.yaml", "pause_points: [MT-007]\n");
    let out = s.run(&["mt", "plan", "packet.yaml", "--policy", "policy.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> =
        plan["report"]["errors"].as_array().unwrap().iter().filter_map(|f| f["rule"].as_str()).collect();
    assert!(rules.contains(&"DG-MT-19"), "{plan}");
    assert!(rules.contains(&"MT-POLICY"), "{plan}");
    assert!(text(&out).contains("HSK-TERM-002"), "{}", text(&out));

    s.write("policy.yaml", "max_iterations_per_mt: 21\n");
    let out = s.run(&["mt", "plan", "packet.yaml", "--policy", "policy.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("execution policy: max_iterations_per_mt: 21 is outside 1..=20"), "{}", text(&out));
}

/// §2.6.6.8.15: a scope path through a symlinked directory is refused before anything runs.
#[test]
fn scope_through_a_symlink_is_refused() {
    let s = Steward::new();
    std::fs::create_dir(s.path("real")).unwrap();
    std::os::unix::fs::symlink(s.path("real"), s.path("link")).unwrap();
    s.write("packet.yaml", &PACKET.replace("  - calc.py\nread_paths", "  - link/calc.py\nread_paths"));
    let out = s.run(&["mt", "plan", "packet.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("MT-VAL-005: `link/calc.py` goes through a symlink"), "{}", text(&out));
}
