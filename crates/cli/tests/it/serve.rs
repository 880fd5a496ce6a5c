//! `steward serve` as a user starts it: the real binary, real HTTP on loopback, its embedded
//! worker driving what the API created, and SIGTERM draining it (issue 13 point 1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::*;

/// One HTTP/1.1 request on a fresh connection: the status and the body as JSON.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())))
}

#[test]
fn serve_answers_the_api_its_worker_drives_the_runs_and_sigterm_stops_it() {
    serve_flow(Steward::new());
}

/// The same on PostgreSQL.
#[test]
fn serve_works_on_postgres() {
    let Some(pg) = steward_test_support::pg::PgCluster::shared() else { return };
    serve_flow(Steward::on_postgres(pg.create_database()));
}

fn serve_flow(s: Steward) {
    s.write("hello.yaml", "id: hello\nversion: 1\ninputs:\n  name: {type: string}\nsteps:\n  - {id: greet, type: shell, run: 'echo hello {{inputs.name}}'}\n");
    let mut server = Spawned::new(
        s.cmd(&["serve", "--listen", "127.0.0.1:0", "--workers", "2"]).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let mut lines = BufReader::new(server.child().stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let port: u16 = first
        .strip_prefix("serving http://127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    assert_eq!(http(port, "GET", "/healthz", None).0, 200);

    let (status, created) =
        http(port, "POST", "/api/v1/runs", Some(&json!({"file": "hello.yaml", "inputs": {"name": "http"}})));
    assert_eq!(status, 201, "{created}");
    let id = created["run_id"].as_str().unwrap().to_owned();
    // `wait` follows the run the embedded worker claimed.
    let out = s.run(&["wait", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(http(port, "GET", "/readyz", None), (200, json!({"ready": true})));

    let (status, shown) = http(port, "GET", &format!("/api/v1/runs/{id}"), None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["steps"][0]["attempts"][0]["output"]["stdout"], "hello http");
    assert_eq!(shown, s.json(&["status", &id, "--json"]), "the API and the CLI's --json show the same");

    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let (status, _) = server.wait();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("stopped serving")), "{rest:?}");

    let out = s.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("without a token"), "{}", text(&out));
}
