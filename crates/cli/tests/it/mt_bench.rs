//! `steward mt bench`: the shipped packets of `examples/mt-bench` run with their scripted answers
//! give the same figures every time, every ending is the right one, and no false completion is
//! ever accepted; against the real local model, the same bench runs end to end.

use serde_json::Value;
use steward_test_support::LlamaServer;

use crate::support::{Steward, text};

const BENCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mt-bench");

fn bench(s: &Steward, dir: &str, policy: &str) -> (Option<i32>, Value) {
    let out = s.run(&["mt", "bench", dir, "--policy", policy, "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    (out.status.code(), report)
}

/// Issue 14 point 8: per packet, the ending and the counts the scripted answers make (each
/// packet's README row says why), and in total: 11 completed, 1 stopped at the hard gate, 11
/// false completions caught, none accepted.
#[test]
fn the_shipped_packets_give_their_figures_with_scripted_answers() {
    let s = Steward::new();
    let (code, report) = bench(&s, BENCH, &format!("{BENCH}/scripted-policy.yaml"));
    assert_eq!(code, Some(0), "{report:#}");
    // (packet, ending, iterations, escalations, drop-backs, false completions caught)
    let expected = [
        ("01-py-one-line", "completed", 1, 0, 0, 0),
        ("02-py-missing-function", "completed", 2, 0, 0, 1),
        ("03-py-two-files-agree", "completed", 2, 0, 0, 1),
        ("04-py-off-by-one", "completed", 3, 1, 0, 2),
        ("05-py-format-bad-edit", "completed", 2, 0, 0, 1),
        ("06-sh-quoting", "completed", 4, 1, 0, 0),
        ("07-sh-missing-function", "completed", 2, 1, 0, 0),
        ("08-c-boundary", "completed", 1, 0, 0, 0),
        ("09-c-header-impl", "completed", 2, 0, 0, 1),
        ("10-c-hard-gate", "hard_gate:escalation_exhausted", 4, 2, 0, 2),
        ("11-rust-boundary", "completed", 2, 0, 0, 1),
        ("12-py-two-tasks", "completed", 4, 1, 1, 2),
    ];
    let packets = report["packets"].as_array().unwrap();
    let got: Vec<(String, String, u64, u64, u64, u64)> = packets
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap();
            (
                p["packet"].as_str().unwrap().to_owned(),
                p["ending"].as_str().unwrap().to_owned(),
                n("iterations"),
                n("escalations"),
                n("drop_backs"),
                n("false_completions_caught"),
            )
        })
        .collect();
    let want: Vec<(String, String, u64, u64, u64, u64)> =
        expected.iter().map(|(p, e, i, x, d, c)| (p.to_string(), e.to_string(), *i, *x, *d, *c)).collect();
    assert_eq!(got, want);
    for p in packets {
        assert_eq!((p["as_expected"].as_bool(), p["check_passed"].as_bool()), (Some(true), Some(true)), "{p}");
        assert_eq!(p["false_completions_accepted"], 0, "{p}");
        assert!(p["tokens"].as_u64().unwrap() > 0 && p["wall_ms"].as_u64().is_some(), "{p}");
    }
    let total = &report["total"];
    assert_eq!((total["iterations"].as_u64(), total["false_completions_caught"].as_u64()), (Some(29), Some(11)));
    assert_eq!(total["false_completions_accepted"], 0);
    assert_eq!(total["ending"], "11/12 completed, 12/12 as expected");
    assert_eq!(total["tokens"].as_u64(), Some(packets.iter().map(|p| p["tokens"].as_u64().unwrap()).sum::<u64>()));
    // The bench never writes into the runs it was started beside.
    assert_eq!(s.json(&["list", "--json"]), serde_json::json!([]));
}

/// A completion the oracle refutes is a false completion accepted: reported, and the bench
/// exits 1. A bench directory without packets is a clear error.
#[test]
fn a_completion_the_oracle_refutes_is_a_false_completion_accepted() {
    let s = Steward::new();
    let dir = s.path("bench");
    let packet = dir.join("01-py-one-line");
    std::fs::create_dir_all(&packet).unwrap();
    for f in ["packet.yaml", "answers.yaml", "temperature.py", "test_temperature.py"] {
        std::fs::copy(format!("{BENCH}/01-py-one-line/{f}"), packet.join(f)).unwrap();
    }
    std::fs::write(packet.join("bench.yaml"), "kind: python\nexpect: completed\ncheck: [\"exit 3\"]\n").unwrap();
    let (code, report) = bench(&s, dir.to_str().unwrap(), &format!("{BENCH}/scripted-policy.yaml"));
    assert_eq!(code, Some(1), "{report:#}");
    let p = &report["packets"][0];
    assert_eq!((p["ending"].as_str(), p["check_passed"].as_bool()), (Some("completed"), Some(false)), "{p}");
    assert_eq!((p["false_completions_accepted"].as_u64(), p["as_expected"].as_bool()), (Some(1), Some(false)));

    std::fs::write(packet.join("bench.yaml"), "expect: finished\n").unwrap();
    let (_, report) = bench(&s, dir.to_str().unwrap(), &format!("{BENCH}/scripted-policy.yaml"));
    assert!(
        report["packets"][0]["error"].as_str().unwrap().contains("bench.yaml: not a bench expectation"),
        "{report}"
    );

    let out = s.run(&["mt", "bench", s.path("nothing-here").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot read the bench directory"), "{}", text(&out));
}

/// The whole bench against the real local model (SmolLM2-135M behind llama.cpp's server, one
/// model level, one iteration per task, answers capped at 64 tokens: a call takes 5 to 15 s on
/// two cores, mostly reading the prompt): every packet runs end to end, whatever the model
/// manages, and a false completion is never accepted. The figures are printed.
#[test]
fn the_bench_runs_against_a_real_local_model() {
    let Some(server) = LlamaServer::start(8192) else {
        eprintln!("skipping: no local model server (run ./scripts/test, which installs one)");
        return;
    };
    let s = Steward::new();
    let policy = s.write(
        "local-policy.yaml",
        &format!(
            "max_iterations_per_mt: 1\nescalation_chain:\n  - {{level: 0, provider: openai, base_url: \"{}\", model: smollm2, options: {{temperature: 0, max_tokens: 64, seed: 7}}}}\n  - {{level: 1, hard_gate: true}}\n",
            server.base_url()
        ),
    );
    let (_, report) = bench(&s, BENCH, policy.to_str().unwrap());
    for p in report["packets"].as_array().unwrap().iter().chain([&report["total"]]) {
        eprintln!(
            "{} {} it={} caught={} accepted={} tokens={} wall_ms={} model_ms={} engine_ms/it={:.1}",
            p["packet"],
            p["ending"],
            p["iterations"],
            p["false_completions_caught"],
            p["false_completions_accepted"],
            p["tokens"],
            p["wall_ms"],
            p["model_ms"],
            p["engine_ms_per_iteration"].as_f64().unwrap_or(0.0)
        );
    }
    let total = &report["total"];
    assert_eq!(total["false_completions_accepted"], 0, "{report:#}");
    for p in report["packets"].as_array().unwrap() {
        let ending = p["ending"].as_str().unwrap();
        assert!(ending == "completed" || ending.starts_with("hard_gate:"), "{p}");
        assert!(p["model_ms"].as_u64().unwrap() > 0 && p["tokens"].as_u64().unwrap() > 0, "{p}");
    }
}
