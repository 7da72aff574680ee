//! The edge both servers share — the proxy's port and `rawrxd serve`'s: who may talk to
//! rawrxd at all ([`guard`]: `Host`, `Origin`, tokens, JSON-only writes), the client protocols
//! and their error shapes ([`wire`]: Ollama NDJSON, OpenAI SSE, in-band errors), and the log
//! line that announces a bound address.
//!
//! May use: nothing else in the crate (plain functions over `http` types). Used by `proxy`,
//! `serve`, `config` and `app`.

pub mod guard;
pub mod wire;

/// The log line announcing the bound address; tests of the binary read the address from it.
pub fn listening_message(what: &str, addr: std::net::SocketAddr) -> String {
    format!("rawrxd {what} listening on {addr}")
}
