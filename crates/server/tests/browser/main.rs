//! The console in a real browser (issue 13 point 8): headless Chromium, installed by
//! `scripts/browser-install` (`STEWARD_CHROMIUM`), against a real server on loopback. It opens
//! the run list and watches a run finish there live, approves a waiting step through its form,
//! forks a run through the fork form, and saves screenshots of a run page and of a micro-task
//! job's page for a person to look at (under `STEWARD_SCREENSHOTS`, else the target's tmp dir).
//! Without a browser it is skipped, unless `STEWARD_REQUIRE_BROWSER=1` (as `./scripts/test` sets).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod cdp;
#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;

use serde_json::{Value, json};
use steward_store::Store;

use cdp::{Browser, LIMIT, Page};
use common::start;

fn chromium() -> Option<String> {
    match std::env::var("STEWARD_CHROMIUM") {
        Ok(bin) if !bin.is_empty() => Some(bin),
        _ => {
            let required = std::env::var("STEWARD_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "STEWARD_REQUIRE_BROWSER=1 but STEWARD_CHROMIUM is not set (run scripts/browser-install)"
            );
            eprintln!("skipped: no browser (set STEWARD_CHROMIUM, or run ./scripts/test)");
            None
        }
    }
}

fn screenshots() -> PathBuf {
    std::env::var_os("STEWARD_SCREENSHOTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"), PathBuf::from)
}

/// Sets a form control's value as a person typing would.
async fn fill(page: &mut Page, selector: &str, value: &str) {
    let js = format!(
        "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.value = {val}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        sel = json!(selector),
        val = json!(value)
    );
    assert_eq!(page.eval(&js).await, json!(true), "no {selector} on the page");
}

/// Clicks a button and waits for the page its form leads to.
async fn submit(page: &mut Page, selector: &str) {
    page.eval("window.__left = true").await;
    let js = format!(
        "(() => {{ const b = document.querySelector({}); if (!b) return false; b.click(); return true; }})()",
        json!(selector)
    );
    assert_eq!(page.eval(&js).await, json!(true), "no {selector} on the page");
    page.loaded().await;
}

const WAITS: &str =
    "id: waits\nversion: 1\nsteps:\n  - {id: build, type: shell, run: 'echo built'}\n  - {id: publish, type: noop}\n";

const SIGN_OFF: &str = r#"id: release
version: 1
inputs:
  version: {type: string, default: "1.4.0"}
steps:
  - {id: build, type: shell, run: 'echo "built {{inputs.version}}"'}
  - id: sign_off
    type: approval
    needs: [build]
    prompt: "Ship {{inputs.version}} to production?"
    form:
      reason: {type: string, required: true, description: what you checked}
      canary_percent: {type: number, default: 5}
    approvers: [ada]
    timeout_seconds: 86400
    on_reject: build
  - {id: docs, type: shell, needs: [build], run: 'echo docs for {{inputs.version}}'}
  - id: ship
    type: shell
    needs: [sign_off]
    run: 'echo "shipping {{inputs.version}} at {{steps.sign_off.outputs.canary_percent}}%: {{steps.sign_off.outputs.reason}}"'
"#;

const MICRO_TASKS: &str = "id: fix-add\nversion: 1\nsteps:\n  - {id: fix, type: micro_tasks, packet: mt-demo/packet.yaml, policy: mt-demo/scripted-policy.yaml}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_approves_and_forks_in_a_real_browser() {
    let Some(bin) = chromium() else { return };
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let browser = Browser::launch(&bin);
    let mut page = browser.page().await;
    let shots = screenshots();

    // The run list, then a run that appears and finishes while it is open: the page follows
    // the event stream and reloads itself.
    page.open(&format!("{}/", api.base)).await;
    assert_eq!(page.eval("document.querySelector('h1').textContent").await, json!("Runs"));
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": WAITS})).await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    let driving = tokio::spawn({
        let (engine, id) = (api.engine.clone(), id.clone());
        async move { engine.start(&id).await }
    });
    let row = format!("[...document.querySelectorAll('tr')].find(r => r.textContent.includes({}))", json!(id));
    page.wait_for(&format!("{row} && {row}.textContent.includes('completed')"), "the run to show completed", LIMIT)
        .await;
    assert_eq!(driving.await.unwrap().unwrap().state.as_str(), "completed");

    // An approval: its form on the run page, filled in and sent as a person would.
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": SIGN_OFF})).await;
    let release = created["run_id"].as_str().unwrap().to_owned();
    let waiting = api.engine.start(&release).await.unwrap();
    assert_eq!(waiting.state.as_str(), "awaiting_user", "{}", waiting.summary);
    page.open(&format!("{}/runs/{release}", api.base)).await;
    let form = "form.approval";
    assert_eq!(
        page.eval(&format!("document.querySelector('{form} .prompt').textContent")).await,
        json!("Ship 1.4.0 to production?")
    );
    page.screenshot(&shots.join("approval.png")).await;
    fill(&mut page, &format!("{form} [name='field.reason']"), "canary dashboards green").await;
    fill(&mut page, &format!("{form} [name='field.canary_percent']"), "10").await;
    fill(&mut page, &format!("{form} [name='decided_by']"), "ada").await;
    submit(&mut page, &format!("{form} button[value='approve']")).await;
    assert_eq!(page.eval("location.pathname").await, json!(format!("/runs/{release}")));
    assert_eq!(page.eval("document.querySelector('form.approval') === null").await, json!(true), "decided");
    let done = api.engine.resume(&release, "test").await.unwrap();
    assert_eq!(done.state.as_str(), "completed", "{}", done.summary);
    let attempts = api.engine.store().list_attempts(&release).await.unwrap();
    let ship = attempts.iter().find(|a| a.step_id == "ship").unwrap();
    assert_eq!(ship.output.as_ref().unwrap()["stdout"], "shipping 1.4.0 at 10%: canary dashboards green");
    page.open(&format!("{}/runs/{release}", api.base)).await;
    page.screenshot(&shots.join("run.png")).await;

    // A fork with an edited input, from the same page: the browser lands on the new run.
    fill(&mut page, "form.fork [name='input.version']", "1.4.1").await;
    submit(&mut page, "form.fork button").await;
    let path = page.eval("location.pathname").await;
    let fork = path.as_str().unwrap().trim_start_matches("/runs/").to_owned();
    assert_ne!(fork, release, "a new run");
    let (_, shown) = api.get(&format!("/api/v1/runs/{fork}")).await;
    assert_eq!(
        (shown["parent_run_id"].as_str(), shown["inputs"]["version"].as_str()),
        (Some(release.as_str()), Some("1.4.1"))
    );

    // A micro-task job's page: tasks, iterations, models, tokens and validation.
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/mt-demo"),
        &api.dir.path().join("mt-demo"),
    );
    let (status, created) = api.post("/api/v1/runs", json!({"workflow": MICRO_TASKS})).await;
    assert_eq!(status, 201, "{created}");
    let job = created["run_id"].as_str().unwrap().to_owned();
    let finished = api.engine.start(&job).await.unwrap();
    assert_eq!(finished.state.as_str(), "completed", "{}", finished.summary);
    page.open(&format!("{}/runs/{job}", api.base)).await;
    let tasks: Value = page.eval("[...document.querySelectorAll('table.tasks tr')].map(r => r.textContent)").await;
    let text = tasks.to_string();
    assert!(text.contains("MT-001") && text.contains("demo-small") && text.contains("passed"), "{text}");
    page.screenshot(&shots.join("micro-task.png")).await;
    eprintln!("screenshots: {}", shots.display());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
