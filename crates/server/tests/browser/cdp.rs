//! A small Chrome DevTools Protocol client: headless Chromium started as a child process, one
//! page driven over a WebSocket (RFC 6455, client side) on loopback. Enough to open pages,
//! read and fill them, click, wait for a condition and take screenshots, without a
//! browser-automation dependency.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headless Chromium, killed when dropped.
pub(crate) struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts `bin` headless with a fresh profile and a DevTools port of the system's choosing.
    pub(crate) fn launch(bin: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        // Chromium says where DevTools listens on stderr: `DevTools listening on ws://127.0.0.1:PORT/...`.
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let port = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("{bin} exited before it said where DevTools listens"),
            };
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse::<u16>().unwrap();
            }
        };
        // Keep draining stderr so the browser never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Browser { child, port, _profile: profile }
    }

    /// The browser's first page, connected.
    pub(crate) async fn page(&self) -> Page {
        let list = reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port)).await.unwrap();
        let list: Value = serde_json::from_str(&list.text().await.unwrap()).unwrap();
        let target = list.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page target");
        let url = target["webSocketDebuggerUrl"].as_str().unwrap();
        let path = url.split_once(&format!("127.0.0.1:{}", self.port)).unwrap().1;
        let mut page = Page { ws: WebSocket::connect(self.port, path).await, next_id: 0 };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }
}

/// One page of the browser.
pub(crate) struct Page {
    ws: WebSocket,
    next_id: u64,
}

impl Page {
    /// Sends a command and returns its result; events that arrive meanwhile are passed over.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(&json!({"id": id, "method": method, "params": params}).to_string()).await;
        loop {
            let msg: Value = serde_json::from_str(&self.ws.recv().await).unwrap();
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression (promises awaited).
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `condition` (JavaScript) is true, looking again after every browser event
    /// and at least every 50 ms; fails with `what` after `limit`.
    pub(crate) async fn wait_for(&mut self, condition: &str, what: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            if self.eval(&format!("Boolean({condition})")).await == json!(true) {
                return;
            }
            assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
            let _ = tokio::time::timeout(Duration::from_millis(50), self.ws.recv()).await;
        }
    }

    /// Opens `url` and waits until it has loaded.
    pub(crate) async fn open(&mut self, url: &str) {
        self.eval("window.__left = true").await;
        self.call("Page.navigate", json!({"url": url})).await;
        self.loaded().await;
    }

    /// Waits until the page that replaced the current one (a navigation, a form's redirect) has
    /// loaded. Call `eval("window.__left = true")` before what navigates.
    pub(crate) async fn loaded(&mut self) {
        self.wait_for("window.__left === undefined && document.readyState === 'complete'", "the next page", LIMIT)
            .await;
    }

    /// A PNG of what a person sees of the page: its first screen.
    pub(crate) async fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert_eq!(&png[..4], b"\x89PNG", "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

/// How long one page may take to do what a test waits for.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

/// The client end of a WebSocket: text messages out (masked, as a client must), text messages in.
struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    async fn connect(port: u16, path: &str) -> WebSocket {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c3Rld2FyZC1icm93c2VyLXQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "the DevTools socket refused the upgrade: {head}");
        WebSocket { stream }
    }

    async fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x2e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next text message (fragments joined; pings answered).
    async fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let b0 = self.stream.read_u8().await.unwrap();
            let b1 = self.stream.read_u8().await.unwrap();
            let len = match b1 & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mask = if b1 & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.stream.read_exact(&mut m).await.unwrap();
                Some(m)
            } else {
                None
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).await.unwrap();
            if let Some(m) = mask {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match b0 & 0x0f {
                0x9 => {
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.stream.write_all(&pong).await.unwrap();
                }
                0x8 => panic!("the DevTools socket closed"),
                0xa => {}
                _ => {
                    message.extend_from_slice(&payload);
                    if b0 & 0x80 != 0 {
                        return String::from_utf8(message).unwrap();
                    }
                }
            }
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (u32::from(value(c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
