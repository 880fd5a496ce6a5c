//! A real llama.cpp server with a real small model on loopback, as `scripts/local-model`
//! installs them; tests that need it skip without it, unless `STEWARD_REQUIRE_MODEL` is set.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `llama-server`, killed on drop.
pub struct LlamaServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlamaServer {
    /// Starts the server named by `STEWARD_TEST_LLAMA_SERVER` on `STEWARD_TEST_MODEL` (alias
    /// `smollm2`) with a `ctx`-token context, and waits until it reports healthy. `None` when the
    /// variables are not set; then a test skips, unless `STEWARD_REQUIRE_MODEL` says it must not.
    pub fn start(ctx: u32) -> Option<LlamaServer> {
        let (Ok(server), Ok(model)) = (std::env::var("STEWARD_TEST_LLAMA_SERVER"), std::env::var("STEWARD_TEST_MODEL"))
        else {
            assert!(
                std::env::var("STEWARD_REQUIRE_MODEL").is_err(),
                "STEWARD_REQUIRE_MODEL is set but STEWARD_TEST_LLAMA_SERVER/STEWARD_TEST_MODEL are not: run scripts/local-model"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&server)
            .args(["-m", &model, "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", &ctx.to_string(), "-t", "2", "--alias", "smollm2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let server = LlamaServer { child, port };
        // The server loads the model before it reports healthy; nothing to await but its word.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthy(port) {
            assert!(Instant::now() < deadline, "llama-server did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// The OpenAI-compatible base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}
