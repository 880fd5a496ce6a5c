//! The API over real HTTP on loopback, on a real SQLite file (issue 13 points 1–3 and 8).

#![allow(clippy::unwrap_used)]

mod common;

use serde_json::{Value, json};
use steward_server::{AccessError, Readiness, ServeError, Server, ServerConfig};
use steward_store::Store;

use common::{engine, start};
use tokio_util::sync::CancellationToken;

const HELLO: &str = "id: hello\nversion: 1\ninputs:\n  name: {type: string}\nsteps:\n  - {id: greet, type: shell, run: 'echo hello {{inputs.name}}'}\n";

/// `/readyz` answers 503 until the recovery scan has run; `/healthz` while the process lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_say_alive_and_ready_after_recovery() {
    let api = start("127.0.0.1:0", None).await;
    assert_eq!(api.get("/healthz").await, (200, json!({"status": "ok"})));
    let (status, body) = api.get("/readyz").await;
    assert_eq!((status, &body["ready"]), (503, &json!(false)), "{body}");
    api.engine.boot().await.unwrap();
    api.ready.set_ready();
    assert_eq!(api.get("/readyz").await, (200, json!({"ready": true})));
}

/// Create, list, show and read events; the shapes are the CLI's (`views`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_created_listed_and_shown() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (status, created) = api.post("/api/v1/runs", json!({"workflow": HELLO, "inputs": {"name": "ada"}})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["state"].as_str(), created["workflow_id"].as_str()), (Some("queued"), Some("hello")));
    let id = created["run_id"].as_str().unwrap().to_owned();

    std::fs::write(api.dir.path().join("wf.yaml"), HELLO).unwrap();
    let (status, second) = api.post("/api/v1/runs", json!({"file": "wf.yaml", "inputs": {"name": "bob"}})).await;
    assert_eq!(status, 201, "{second}");

    api.engine.start(&id).await.unwrap();
    let (status, run) = api.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["state"], "completed");
    assert_eq!(run["steps"][0]["attempts"][0]["output"]["stdout"], "hello ada");
    assert_eq!(run["inputs"], json!({"name": "ada"}));

    let (_, list) = api.get("/api/v1/runs").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 2, "{list}");
    let (_, done) = api.get("/api/v1/runs?state=completed").await;
    let ids: Vec<&str> = done["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    let (_, page) = api.get("/api/v1/runs?limit=1").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = api.get(&format!("/api/v1/runs?limit=1&after={next}")).await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert_ne!(rest["runs"][0]["run_id"], page["runs"][0]["run_id"]);
    assert_eq!(rest["next"], Value::Null);
    let created_at = run["created_at"].as_str().unwrap().to_owned();
    let (_, from) = api.get(&format!("/api/v1/runs?since={created_at}")).await;
    assert!(from["runs"].as_array().unwrap().iter().any(|r| r["run_id"] == id.as_str()), "{from}");
    let (_, before) = api.get(&format!("/api/v1/runs?until={created_at}")).await;
    assert!(!before["runs"].as_array().unwrap().iter().any(|r| r["run_id"] == id.as_str()), "{before}");
    let (status, _) = api.get("/api/v1/runs?since=yesterday").await;
    assert_eq!(status, 400);
    let (_, found) = api.get("/api/v1/runs?q=hello&workflow=hello").await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 2);

    let tarball = api.http.get(format!("{}/api/v1/runs/{id}/bundle", api.base)).send().await.unwrap();
    assert_eq!(tarball.headers()["content-type"], "application/x-tar");
    let bytes = tarball.bytes().await.unwrap();
    let mut names = Vec::new();
    let mut manifest = Value::Null;
    for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name == "manifest.json" {
            manifest = serde_json::from_reader(&mut entry).unwrap();
        }
        names.push(name);
    }
    assert!(names.iter().any(|n| n == "events.jsonl") && names.iter().any(|n| n == "run.json"), "{names:?}");
    assert_eq!(manifest["run_id"].as_str(), Some(id.as_str()));
    let (status, events) = api.get(&format!("/api/v1/runs/{id}/events?limit=2")).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"][0]["event_type"], "run_created");
    assert_eq!(events["events"].as_array().unwrap().len(), 2);
    let after = events["next_after"].as_i64().unwrap();
    let (_, more) = api.get(&format!("/api/v1/runs/{id}/events?after={after}")).await;
    assert_eq!(more["events"][0]["seq"].as_i64(), Some(after + 1), "no gap, no duplicate");
}

/// 404, 409, 422 and 400 mean what they mean, as JSON with a stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_a_status_a_code_and_a_message() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (status, body) = api.get("/api/v1/runs/run-nope").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = api.get("/api/v1/runs/run-nope/events").await;
    assert_eq!(status, 404, "{body}");

    let broken = "id: broken\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'true'}\n  - {id: b, type: shell, needs: [zzz], run: 'true'}\n";
    let (status, body) = api.post("/api/v1/runs", json!({"workflow": broken})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
    let diagnostic = &body["error"]["details"]["diagnostics"][0];
    assert_eq!((diagnostic["line"].as_u64(), diagnostic["step"].as_str()), (Some(5), Some("b")), "{body}");
    let (status, body) = api.post("/api/v1/runs", json!({"workflow": HELLO, "inputs": {"bogus": 1}})).await;
    assert_eq!(status, 422, "an undeclared input: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("unknown input `bogus`"), "{body}");
    for file in ["../steward.db", "/etc/passwd", "missing.yaml"] {
        let (status, body) = api.post("/api/v1/runs", json!({"file": file})).await;
        assert_eq!(status, 422, "{file}: {body}");
    }
    let (status, body) = api.post("/api/v1/runs", json!({"workflow": HELLO, "file": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = api.post("/api/v1/runs", json!({"workflow": HELLO, "extra": 1})).await;
    assert_eq!(status, 400, "unknown fields are refused: {body}");
    let (status, body) = api.get("/api/v1/runs?state=sleeping").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let big = "x".repeat(100 * 1024);
    let (status, _) = api.post("/api/v1/runs", json!({"workflow": big})).await;
    assert_eq!(status, 413, "bodies are bounded");

    let (_, created) = api.post("/api/v1/runs", json!({"workflow": HELLO, "inputs": {"name": "x"}})).await;
    let id = created["run_id"].as_str().unwrap();
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/gate"), json!({"decision": "continue"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("wrong_state")), "{body}");
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/gate"), json!({"decision": "maybe"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("cancelled")), "{body}");
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("wrong_state")), "a second cancel: {body}");
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/resume"), json!({})).await;
    assert_eq!(status, 409, "{body}");
}

/// Issue 13 point 3: off loopback the server needs a token, and every request carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_every_request_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Server::bind(ServerConfig::new("0.0.0.0:0".parse().unwrap(), dir.path().to_owned())).await;
    assert!(matches!(refused, Err(ServeError::Access(AccessError::TokenRequired(_)))), "{refused:?}");

    let token = "a3f1c0de5b7e9a2d4c6b8e0f1a3c5e7d";
    let mut api = start("0.0.0.0:0", Some(token)).await;
    api.engine.boot().await.unwrap();
    let (status, body) = api.get("/api/v1/runs").await;
    assert_eq!(status, 200, "{body}");
    api.token = Some("a3f1c0de5b7e9a2d4c6b8e0f1a3c5e7X".into());
    let (status, body) = api.get("/api/v1/runs").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(!body.to_string().contains(token), "the token is never echoed");
    api.token = None;
    assert_eq!(api.get("/api/v1/runs").await.0, 401);
    assert_eq!(api.post("/api/v1/runs", json!({"workflow": HELLO})).await.0, 401);
    assert_eq!(api.get("/healthz").await.0, 200, "the probes say nothing about runs");
}

/// What the API shows passes the redactor: a token written literally in a workflow file and
/// printed by its step is shown redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_workflow_file_is_shown_redacted() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let leaked = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    let wf = format!("id: leak\nversion: 1\nsteps:\n  - {{id: a, type: shell, run: 'echo {leaked}'}}\n");
    let (status, created) = api.post("/api/v1/runs", json!({"workflow": wf})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap();
    api.engine.start(id).await.unwrap();
    for path in [format!("/api/v1/runs/{id}"), format!("/api/v1/runs/{id}/events"), "/api/v1/runs".to_owned()] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.to_string().contains(leaked), "{path} shows the secret: {body}");
    }
}

/// One server-sent event: its id, type and data.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// Opens a stream and reads `n` events from it (or all, until it ends, when `n` is `None`).
async fn stream(http: &reqwest::Client, url: &str, last_id: Option<&str>, n: Option<usize>) -> (u16, Vec<Sse>) {
    let mut req = http.get(url).header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let mut res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let mut text = String::new();
    let mut out = Vec::new();
    while n.is_none_or(|n| out.len() < n) {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut e = Sse { id: None, event: None, data: Value::Null };
            for line in block.lines() {
                match line.split_once(':') {
                    Some(("id", v)) => e.id = Some(v.trim().to_owned()),
                    Some(("event", v)) => e.event = Some(v.trim().to_owned()),
                    Some(("data", v)) => e.data = serde_json::from_str(v.trim()).unwrap(),
                    _ => {}
                }
            }
            if e.id.is_some() || e.event.is_some() {
                out.push(e);
            }
        }
        if n.is_some_and(|n| out.len() >= n) {
            break;
        }
        match res.chunk().await.unwrap() {
            Some(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
            None => break,
        }
    }
    (status, out)
}

/// Issue 13 point 2: a run's events stream live and end with the run; a reconnection with
/// `Last-Event-ID` picks up after that event, without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_events_stream_live_and_resume_from_the_last_event_id() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let wf =
        "id: three\nversion: 1\nsteps:\n  - {id: a, type: noop}\n  - {id: b, type: noop}\n  - {id: c, type: noop}\n";
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": wf})).await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/runs/{id}/events");
    // The stream is open before the run starts; it ends when the run has finished.
    let url = format!("{}{path}", api.base);
    let live = tokio::spawn({
        let (http, url) = (api.http.clone(), url.clone());
        async move { stream(&http, &url, None, None).await }
    });
    api.engine.start(&id).await.unwrap();
    let (status, events) = live.await.unwrap();
    assert_eq!(status, 200);
    let ids: Vec<i64> = events.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "every event once, in order: {events:?}");
    assert_eq!(events[0].event.as_deref(), Some("run_created"));
    assert_eq!(events.last().unwrap().data["payload"]["to_state"], "completed", "{events:?}");

    let (_, rest) = stream(&api.http, &url, Some("4"), None).await;
    assert_eq!(rest, events[4..].to_vec(), "after event 4, exactly what followed it");
    let (status, body) = api.call(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "without Accept: text/event-stream the same resource answers JSON: {body}");
    assert_eq!(body["events"].as_array().unwrap().len(), events.len());
}

/// Every run's state changes as one stream, resumable by store-wide event id; live streams
/// are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runs_state_changes_stream_and_streams_are_bounded() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let wf = "id: one\nversion: 1\nsteps:\n  - {id: a, type: noop}\n";
    for _ in 0..2 {
        let (_, created) = api.post("/api/v1/runs", json!({"workflow": wf})).await;
        api.engine.start(created["run_id"].as_str().unwrap()).await.unwrap();
    }
    let url = format!("{}/api/v1/events?type=run_created,run_state_changed", api.base);
    let (status, first) = stream(&api.http, &url, None, Some(6)).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = first.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(kinds, ["run_created", "run_state_changed", "run_state_changed"].repeat(2), "{first:?}");
    let ids: Vec<i64> = first.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let (_, again) = stream(&api.http, &url, Some(&ids[2].to_string()), Some(3)).await;
    assert_eq!(again, first[3..].to_vec(), "resumed after the third, nothing repeated");
    let (status, body) = api.get("/api/v1/events?type=nonsense").await;
    assert_eq!(status, 400, "{body}");
}

/// More live streams than the server allows answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    engine.boot().await.unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_owned());
    config.max_streams = 1;
    let server = Server::bind(config).await.unwrap();
    let port = server.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(engine, Readiness::default(), stop.clone()));
    let http = reqwest::Client::new();
    let open = |http: &reqwest::Client| {
        http.get(format!("http://127.0.0.1:{port}/api/v1/events")).header("accept", "text/event-stream").send()
    };
    let first = open(&http).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let second = open(&http).await.unwrap();
    assert_eq!(second.status().as_u16(), 503);
    drop(first);
    stop.cancel();
}

/// The OpenAPI document is served, and every operation it describes is routed: a request to
/// each (with a run id that does not exist) is answered by its handler, never by the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_is_routed() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = path.replace("{id}", "run-none");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (m == reqwest::Method::POST).then(|| json!({}));
            let (status, answer) = api.call(m, &url, body).await;
            assert_ne!(status, 405, "{method} {path} is not routed");
            assert_ne!(answer["error"]["code"], "no_such_endpoint", "{method} {path} is not routed");
            operations += 1;
        }
    }
    assert_eq!(operations, 17, "a route was added or removed: describe it in openapi.json");
    let (status, body) = api.get("/api/v1/nothing-here").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("no_such_endpoint")), "{body}");
}

/// Issue 13 point 4 (first part): the console's pages read without JavaScript, show what the
/// API shows (escaped, redacted), and its forms act only when posted from its own origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_runs_and_its_forms_refuse_cross_site_posts() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let wf = "id: page\nversion: 1\nsteps:\n  - {id: shout, type: shell, run: 'echo \"<script>alert(1)</script>\"'}\n  - {id: after, type: noop}\n";
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": wf})).await;
    let done = created["run_id"].as_str().unwrap().to_owned();
    api.engine.start(&done).await.unwrap();
    let (_, queued) = api.post("/api/v1/runs", json!({"workflow": wf})).await;
    let waiting = queued["run_id"].as_str().unwrap().to_owned();

    let html = |path: String| {
        let (http, base) = (api.http.clone(), api.base.clone());
        async move {
            let res = http.get(format!("{base}{path}")).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, list) = html("/".into()).await;
    assert_eq!(status, 200);
    assert!(list.contains(&format!("href=\"/runs/{done}\"")) && list.contains(&waiting), "{list}");
    let last = api.engine.store().last_event_id().await.unwrap();
    assert!(list.contains(&format!("data-watch=\"*\" data-after=\"{last}\"")), "the list follows what comes next");
    let (_, only_done) = html("/?state=completed".into()).await;
    assert!(only_done.contains(&done) && !only_done.contains(&waiting));
    let (status, page) = html(format!("/runs/{done}")).await;
    assert_eq!(status, 200);
    for part in ["Timeline", "class=\"bar completed\"", "shout", "after", "run_state_changed", "step_attempt_finished"]
    {
        assert!(page.contains(part), "the run page lacks {part}");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the output is shown, escaped");
    assert!(!page.contains("<script>alert(1)"), "a step's output is never markup");
    let (status, missing) = html("/runs/run-none".into()).await;
    assert_eq!(status, 404, "{missing}");
    let (status, css) = html("/static/console.css".into()).await;
    assert!(status == 200 && css.contains(".waterfall"));

    let cancel = format!("{}/runs/{waiting}/cancel", api.base);
    let no_origin = api.http.post(&cancel).send().await.unwrap();
    assert_eq!(no_origin.status().as_u16(), 403);
    let evil = api.http.post(&cancel).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(evil.status().as_u16(), 403);
    assert_eq!(api.get(&format!("/api/v1/runs/{waiting}")).await.1["state"], "queued", "refused posts changed nothing");
    let ours = api.http.post(&cancel).header("origin", api.base.as_str()).send().await.unwrap();
    assert_eq!(ours.status().as_u16(), 200, "redirected back to the run page");
    assert_eq!(api.get(&format!("/api/v1/runs/{waiting}")).await.1["state"], "cancelled");
}

/// Off loopback a browser signs in once with the token and then reads the console with a
/// session cookie (the token's digest, `HttpOnly`, `SameSite=Strict`); the cookie is no bearer
/// token, a wrong token or a cross-site sign-in gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_a_person_signs_in_to_the_console() {
    let token = "a3f1c0de5b7e9a2d4c6b8e0f1a3c5e7d";
    let api = start("0.0.0.0:0", Some(token)).await;
    api.engine.boot().await.unwrap();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = browser.get(format!("{}/", api.base)).header("accept", "text/html").send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.headers()["location"].to_str().unwrap()), (303, "/login"));
    let form = browser.get(format!("{}/login", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("type=\"password\" name=\"token\""), "{form}");

    let sign_in = |token: &str, origin: &str| {
        browser
            .post(format!("{}/login", api.base))
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    assert_eq!(sign_in("wrong-token-wrong-token", &api.base).await.unwrap().status().as_u16(), 401);
    assert_eq!(sign_in(token, "http://evil.example").await.unwrap().status().as_u16(), 403);
    let ok = sign_in(token, &api.base).await.unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(token), "the token itself is not kept in the browser");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = browser.get(format!("{}/", api.base)).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<h1>Runs</h1>"));
    let value = session.split_once('=').unwrap().1;
    let as_bearer = browser
        .get(format!("{}/api/v1/runs", api.base))
        .header("authorization", format!("Bearer {value}"))
        .send()
        .await;
    assert_eq!(as_bearer.unwrap().status().as_u16(), 401, "the session cookie is not a token");
}

/// Issue 13 point 7: `/metrics` in the Prometheus text format, counted from the event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_event_log_records() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let wf = "id: two\nversion: 1\nsteps:\n  - {id: a, type: noop}\n  - id: b\n    type: shell\n    retry: {max_attempts: 2, backoff: {initial_seconds: 0}}\n    run: 'test -f marker || { touch marker; exit 1; }'\n";
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": wf})).await;
    api.engine.start(created["run_id"].as_str().unwrap()).await.unwrap();
    let scrape = || async {
        let res = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap();
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        res.text().await.unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = scrape().await;
        if text.contains("steward_step_attempts_finished_total{step_type=\"shell\",status=\"completed\"} 1") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the counters never caught up:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for line in [
        "steward_runs{state=\"completed\"} 1",
        "steward_runs{state=\"queued\"} 0",
        "steward_step_attempts_started_total{step_type=\"noop\"} 1",
        "steward_step_attempts_started_total{step_type=\"shell\"} 2",
        "steward_step_attempts_retried_total{step_type=\"shell\"} 1",
        "steward_step_attempts_finished_total{step_type=\"shell\",status=\"failed\"} 1",
        "steward_step_attempts_finished_total{step_type=\"noop\",status=\"completed\"} 1",
        "steward_step_attempt_duration_seconds_count{step_type=\"shell\"} 2",
        "steward_step_attempt_duration_seconds_bucket{step_type=\"noop\",le=\"+Inf\"} 1",
        "# TYPE steward_store_commit_batch_size histogram",
        "# TYPE steward_store_commit_duration_seconds histogram",
        "steward_lease_claims_total 1",
        "steward_claim_to_start_seconds_count 1",
        "steward_fenced_writes_total 0",
        "# TYPE steward_step_attempt_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    // Every write so far went through this process's writer: its commits carried them all.
    let commits = text.lines().find_map(|l| l.strip_prefix("steward_store_commit_batch_size_count ")).unwrap();
    let writes = text.lines().find_map(|l| l.strip_prefix("steward_store_commit_batch_size_sum ")).unwrap();
    let (commits, writes): (u64, u64) = (commits.parse().unwrap(), writes.parse().unwrap());
    assert!(commits >= 1 && writes >= commits, "{commits} commits, {writes} writes");
}

const FLOW: &str = "id: flow\nversion: 1\ninputs:\n  who: {type: string, default: ada}\nsteps:\n  - {id: a, type: shell, run: 'echo a >> effects.log'}\n  - id: b\n    type: shell\n    retry: {max_attempts: 1}\n    run: 'test -f ok'\n  - {id: c, type: shell, run: 'echo c-{{inputs.who}} >> effects.log'}\n";

/// Issue 13 point 6 through the API and the console: restart from a step reuses the work
/// before it; fork changes inputs; the original run is left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_fork_from_the_api_and_the_console() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": FLOW})).await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    assert_eq!(api.engine.start(&id).await.unwrap().state.as_str(), "failed");
    std::fs::write(api.dir.path().join("ok"), "").unwrap();

    let (status, restarted) = api.post(&format!("/api/v1/runs/{id}/restart"), json!({"from": "b"})).await;
    assert_eq!(status, 201, "{restarted}");
    assert_eq!(restarted["parent_run_id"], id.as_str());
    assert_eq!(restarted["steps"][0]["attempts"][0]["reused_from"], format!("{id}:a:1"));
    let child = restarted["run_id"].as_str().unwrap();
    assert_eq!(api.engine.start(child).await.unwrap().state.as_str(), "completed");
    let effects = || std::fs::read_to_string(api.dir.path().join("effects.log")).unwrap();
    assert_eq!(effects(), "a\nc-ada\n");
    assert_eq!(api.get(&format!("/api/v1/runs/{id}")).await.1["state"], "failed", "the original is left as it is");

    let (status, body) = api.post(&format!("/api/v1/runs/{id}/restart"), json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/restart"), json!({"from": "zzz"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
    let (status, forked) = api.post(&format!("/api/v1/runs/{id}/fork"), json!({"inputs": {"who": "bob"}})).await;
    assert_eq!(status, 201, "{forked}");
    assert_eq!((forked["inputs"]["who"].as_str(), forked["steps"].as_array().unwrap().len()), (Some("bob"), 0));

    // The console's forms do the same, from its own pages.
    let page = api.http.get(format!("{}/runs/{id}", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("action=\"/runs/") && page.contains("<option value=\"b\">b</option>"), "{page}");
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let post = |path: String, form: &'static str| {
        browser
            .post(format!("{}{path}", api.base))
            .header("origin", api.base.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let res = post(format!("/runs/{id}/fork"), "input.who=carl&from=b").await.unwrap();
    assert_eq!(res.status().as_u16(), 303);
    let new_id = res.headers()["location"].to_str().unwrap().trim_start_matches("/runs/").to_owned();
    let (_, fork) = api.get(&format!("/api/v1/runs/{new_id}")).await;
    assert_eq!((fork["inputs"]["who"].as_str(), fork["parent_run_id"].as_str()), (Some("carl"), Some(id.as_str())));
    assert_eq!(fork["steps"][0]["attempts"][0]["reused_from"], format!("{id}:a:1"));
    let res = post(format!("/runs/{id}/fork"), "input.who=&input.nope=1").await.unwrap();
    assert_eq!(res.status().as_u16(), 422, "an undeclared input is refused");
    let res = post(format!("/runs/{id}/restart"), "from=c").await.unwrap();
    assert_eq!(res.status().as_u16(), 303);
}

/// The workers page shows who holds which running run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_shows_who_holds_what() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (_, created) = api
        .post(
            "/api/v1/runs",
            json!({"workflow": "id: slow\nversion: 1\nsteps:\n  - {id: wait, type: shell, run: 'sleep 30'}\n"}),
        )
        .await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    let driving = tokio::spawn({
        let (engine, id) = (api.engine.clone(), id.clone());
        async move { engine.start(&id).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while api.get(&format!("/api/v1/runs/{id}")).await.1["current_step_id"] != "wait" {
        assert!(std::time::Instant::now() < deadline, "the step never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let page = api.http.get(format!("{}/workers", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<td>test</td>") && page.contains(&format!("href=\"/runs/{id}\"")), "{page}");
    api.engine.cancel(&id, "test").await.unwrap();
    let _ = driving.await;
}

/// A web page elsewhere cannot use the operator's browser against the server: on loopback a
/// `Host` other than the loopback (DNS rebinding) is refused for every request, and a request
/// that changes something is refused when the browser says another site sent it, with or
/// without a token. Programs that say nothing (curl) are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_elsewhere_cannot_reach_or_drive_the_server() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let rebound =
        api.http.get(format!("{}/api/v1/runs", api.base)).header("host", "evil.example").send().await.unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    assert!(rebound.text().await.unwrap().contains("host_refused"));
    let named = api.http.get(format!("{}/api/v1/runs", api.base)).header("host", "localhost").send().await.unwrap();
    assert_eq!(named.status().as_u16(), 200);

    let (_, created) = api.post("/api/v1/runs", json!({"workflow": HELLO, "inputs": {"name": "x"}})).await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    let cancel = format!("{}/api/v1/runs/{id}/cancel", api.base);
    for (header, value) in [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site"), ("origin", "null")] {
        let res = api.http.post(&cancel).header(header, value).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 403, "{header}: {value}");
    }
    assert_eq!(api.get(&format!("/api/v1/runs/{id}")).await.1["state"], "queued", "nothing was cancelled");

    let token = "a3f1c0de5b7e9a2d4c6b8e0f1a3c5e7d";
    let closed = start("0.0.0.0:0", Some(token)).await;
    closed.engine.boot().await.unwrap();
    let res = closed
        .http
        .post(format!("{}/api/v1/runs", closed.base))
        .header("authorization", format!("Bearer {token}"))
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/json")
        .body(json!({"workflow": HELLO}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403, "a token does not make a cross-site post acceptable");
    let (status, _) = api.post(&format!("/api/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "a program that says nothing about its site is served");
}

const SIGN_OFF: &str = "id: signoff\nversion: 1\nsteps:\n  - {id: build, type: shell, run: 'true'}\n  - id: ok\n    type: approval\n    prompt: Ship it?\n    form: {reason: {type: string, required: true}, budget: number}\n    approvers: [ada]\n";

/// Issue 13 point 5 from the API: a decision names who decides, is checked against the
/// approvers (403) and the form (422), lands once (a second is 409), and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_over_the_api() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": SIGN_OFF})).await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    let run = api.engine.start(&id).await.unwrap();
    assert_eq!(run.state.as_str(), "awaiting_user", "{}", run.summary);
    let approve = format!("/api/v1/runs/{id}/steps/ok/approve");

    let (status, body) = api.post(&approve, json!({"decided_by": "bob", "fields": {"reason": "x"}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_approver")), "{body}");
    let (status, body) = api.post(&approve, json!({"decided_by": "ada", "fields": {"budget": "lots"}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("budget") && message.contains("reason"), "{body}");
    let (status, body) =
        api.post(&format!("/api/v1/runs/{id}/steps/build/approve"), json!({"decided_by": "ada"})).await;
    assert_eq!(status, 422, "not an approval: {body}");
    let (status, body) = api.post(&format!("/api/v1/runs/{id}/steps/ok/reject"), json!({"decided_by": "ada"})).await;
    assert_eq!(status, 422, "a rejection says why: {body}");
    let (status, body) = api.post(&approve, json!({"decided_by": "ada; drop", "fields": {}})).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) =
        api.post(&approve, json!({"decided_by": "ada", "fields": {"reason": "tested", "budget": 3}})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("running")), "{body}");
    let (status, body) = api.post(&approve, json!({"decided_by": "ada", "fields": {"reason": "again"}})).await;
    assert_eq!(status, 409, "the decision was made: {body}");

    let done = api.engine.resume(&id, "test").await.unwrap();
    assert_eq!(done.state.as_str(), "completed", "{}", done.summary);
    let (_, shown) = api.get(&format!("/api/v1/runs/{id}")).await;
    let step = shown["steps"].as_array().unwrap().iter().find(|s| s["step_id"] == "ok").unwrap().clone();
    let decided = step["attempts"].as_array().unwrap().last().unwrap()["output"].clone();
    assert_eq!(
        decided,
        json!({"decision": "approve", "decided_by": "api:ada", "comment": null, "outputs": {"reason": "tested", "budget": 3}})
    );
}

/// The console shows a waiting approval's form (typed fields, who may decide) and takes the
/// decision from it, same-origin only; the form's values become the step's outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_decided_through_the_console_form() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let (_, created) = api.post("/api/v1/runs", json!({"workflow": SIGN_OFF})).await;
    let id = created["run_id"].as_str().unwrap().to_owned();
    api.engine.start(&id).await.unwrap();
    let page = api.http.get(format!("{}/runs/{id}", api.base)).send().await.unwrap().text().await.unwrap();
    for part in [
        &format!("action=\"/runs/{id}/steps/ok/decide\""),
        "Ship it?",
        "name=\"field.reason\" value=\"\" required",
        "type=\"number\" step=\"any\" name=\"field.budget\"",
        "Approvers: ada",
        "value=\"approve\">Approve",
    ] {
        assert!(page.contains(part), "the run page lacks {part}");
    }
    assert!(!page.contains("value=\"continue\""), "an approval is not a gate");

    let decide = format!("{}/runs/{id}/steps/ok/decide", api.base);
    let post = |origin: &str, form: &'static str| {
        api.http
            .post(&decide)
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let form = "decision=approve&decided_by=ada&field.reason=from+the+form&field.budget=";
    assert_eq!(post("http://evil.example", form).await.unwrap().status().as_u16(), 403);
    let bob = post(&api.base, "decision=approve&decided_by=bob&field.reason=x").await.unwrap();
    assert_eq!(bob.status().as_u16(), 403, "bob is no approver");
    let ours = post(&api.base, form).await.unwrap();
    assert_eq!(ours.status().as_u16(), 200, "redirected back to the run page");
    let done = api.engine.resume(&id, "test").await.unwrap();
    assert_eq!(done.state.as_str(), "completed", "{}", done.summary);
    let attempts = api.engine.store().list_attempts(&id).await.unwrap();
    let decided = attempts.iter().rfind(|a| a.step_id == "ok").unwrap().output.clone().unwrap();
    assert_eq!(
        (decided["decided_by"].as_str(), decided["outputs"].clone()),
        (Some("console:ada"), json!({"reason": "from the form"}))
    );
}

/// Issue 13 point 4: a run page lists every model call (model, tokens, latency) with its prompt
/// and response, which open as text through the redactor; only artifacts the run names are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_page_shows_its_model_calls_and_their_prompts_and_responses() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    std::fs::create_dir_all(api.dir.path().join("examples")).unwrap();
    for file in ["review-loop.yaml", "review-loop.answers.yaml"] {
        std::fs::copy(examples.join(file), api.dir.path().join("examples").join(file)).unwrap();
    }
    let (status, created) = api
        .post("/api/v1/runs", json!({"file": "examples/review-loop.yaml", "inputs": {"topic": "tide tables"}}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap().to_owned();
    let done = api.engine.start(&id).await.unwrap();
    assert_eq!(done.state.as_str(), "completed", "{}", done.summary);

    let get = |path: String| {
        let (http, base) = (api.http.clone(), api.base.clone());
        async move {
            let res = http.get(format!("{base}{path}")).send().await.unwrap();
            let status = res.status().as_u16();
            let kind = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            (status, kind, res.text().await.unwrap())
        }
    };
    let (_, _, page) = get(format!("/runs/{id}")).await;
    assert!(page.contains("<h2>Model calls</h2>") && page.contains("scripted-writer"), "{page}");
    let calls = page.split("<table class=\"calls\">").nth(1).unwrap().split("</tbody>").next().unwrap();
    assert_eq!(calls.matches("<tr><td>").count(), 4, "plan, review, plan, review: {calls}");
    let prefix = format!("/runs/{id}/artifacts/");
    let link = |label: &str| {
        let at = page.find(&format!("\">{label}</a>")).unwrap();
        let start = page[..at].rfind(&prefix).unwrap();
        page[start..at].to_owned()
    };
    let (status, kind, prompt) = get(link("prompt")).await;
    assert_eq!((status, kind.as_str()), (200, "text/plain; charset=utf-8"));
    assert!(prompt.contains("Write a short implementation plan for tide tables"), "{prompt}");
    let (status, _, response) = get(link("response")).await;
    assert!(status == 200 && response.contains("workflow_result"), "{response}");

    let (status, _, _) = get(format!("{prefix}sha256:{}", "0".repeat(64))).await;
    assert_eq!(status, 404, "a hash the run does not name");
    let (status, _, _) = get(format!("{prefix}..%2f..%2fsteward.db")).await;
    assert_eq!(status, 400, "only hashes");
}

/// Issue 16 point 4: a workflow of a DireClaw orchestrator file, created over the API, is a run
/// like any other that says which file and workflow it came from, in its JSON and on its
/// console page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direclaw_workflow_is_created_over_the_api_and_shows_where_it_came_from() {
    let api = start("127.0.0.1:0", None).await;
    api.engine.boot().await.unwrap();
    let orchestrator = include_str!("../../../examples/direclaw/engineering.orchestrator.yaml");
    std::fs::write(api.dir.path().join("orch.yaml"), orchestrator).unwrap();
    let body =
        json!({"file": "orch.yaml", "orchestrator_workflow": "engineering_default", "inputs": {"user_prompt": "tidy"}});
    let (status, created) = api.post("/api/v1/runs", body).await;
    assert_eq!(status, 201, "{created}");
    let origin = created["origin"].as_str().unwrap();
    assert!(
        origin.ends_with("/orch.yaml: orchestrator engineering_orchestrator, workflow engineering_default"),
        "{origin}"
    );
    let id = created["run_id"].as_str().unwrap();
    let page = api.http.get(format!("{}/runs/{id}", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("orchestrator engineering_orchestrator, workflow engineering_default"), "{page}");
    let (_, hello) = api.post("/api/v1/runs", json!({"workflow": HELLO, "inputs": {"name": "x"}})).await;
    assert_eq!(hello["origin"], Value::Null, "a Steward file's run came from no orchestrator");

    // Without a choice the file's workflows are named; a Steward file has none to choose.
    let (status, body) = api.post("/api/v1/runs", json!({"file": "orch.yaml"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("name the one to run"), "{body}");
    let (status, body) = api.post("/api/v1/runs", json!({"workflow": HELLO, "orchestrator_workflow": "hello"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("lists no `workflows`"), "{body}");
}
