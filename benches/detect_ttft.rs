//! Time to first token with every built-in `detect` rule on (bench binary):
//! `cargo bench --bench detect_ttft`.
//!
//! `detect` rules that may retry hold the start of an answer while a refusal could still be
//! starting ("I" could begin "I can't help"), and hold an answer with no text yet while it
//! could still turn out empty or a bad tool call. An ordinary answer should lose at most one
//! token to that.
//!
//! In one process: a fake upstream (hyper) that streams back, piece by piece (about a token:
//! 4 characters, cut after a space or punctuation), each ordinary answer of the labelled set
//! (`tests/fixtures/detect/labelled.jsonl`, 337 answers: code, prose, apologies that are not
//! refusals, "I'll …" starts), the first piece at once and then one every `--token-ms`
//! (20 ms: 50 tokens/s, a small local model on a CPU); two proxies in front of it, one with
//! no rules and one with all seven built-in detectors (refusal, empty, truncated,
//! tool_not_offered and tool_args_invalid as `retry`, abandonment as `audit`, repetition as
//! `stop`). For each answer, on `/api/chat` (NDJSON) and `/v1/chat/completions` (SSE), the
//! same request through both proxies (order alternating), timing the arrival of the first
//! frame that carries answer text. Reported: the added time per answer (with − without),
//! median / p90 / max, in milliseconds and in tokens. Target (issue 17): median ≤ 1 token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code
#![allow(clippy::print_stdout)] // the report

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rawrxd::config::RawProxy;
use rawrxd::live::Live;
use rawrxd::ProxyState;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

const DETECTORS: &str = r#"
[[rule]]
id = "refusal"
kind = "detect"
detector = "refusal"
action = "retry"

[[rule]]
id = "empty"
kind = "detect"
detector = "empty"
action = "retry"

[[rule]]
id = "truncated"
kind = "detect"
detector = "truncated"
action = "retry"

[[rule]]
id = "tool-not-offered"
kind = "detect"
detector = "tool_not_offered"
action = "retry"

[[rule]]
id = "tool-args"
kind = "detect"
detector = "tool_args_invalid"
action = "retry"

[[rule]]
id = "abandonment"
kind = "detect"
detector = "abandonment"
action = "audit"

[[rule]]
id = "loops"
kind = "detect"
detector = "repetition"
action = "stop"
"#;

/// The answer's pieces: about 4 characters, cut after whitespace or punctuation.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    for c in text.chars() {
        piece.push(c);
        if piece.len() >= 4 && !c.is_alphanumeric() {
            out.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

fn chunk(sse: bool, text: &str, last: bool) -> Bytes {
    if sse {
        let choice = if last {
            json!({"index": 0, "delta": {}, "finish_reason": "stop"})
        } else {
            json!({"index": 0, "delta": {"content": text}, "finish_reason": null})
        };
        let event = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [choice]});
        let mut out = format!("data: {event}\n\n");
        if last {
            out.push_str("data: [DONE]\n\n");
        }
        Bytes::from(out)
    } else {
        let line = json!({"model": "m", "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text}, "done": last});
        Bytes::from(format!("{line}\n"))
    }
}

/// Streams back the answer named in the request (`messages[0].content`).
async fn upstream(
    request: Request<Incoming>,
    token: Duration,
) -> Result<Response<ChannelBody>, Infallible> {
    let sse = request.uri().path().starts_with("/v1/");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let text = body["messages"][0]["content"].as_str().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for (i, piece) in pieces(&text).iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(token).await;
            }
            if tx.send(chunk(sse, piece, false)).await.is_err() {
                return; // the client went away
            }
        }
        let _ = tx.send(chunk(sse, "", true)).await;
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    Ok(Response::builder()
        .header("content-type", content_type)
        .body(ChannelBody(rx))
        .unwrap())
}

/// A response body fed by a channel, one frame per message.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

async fn start_upstream(token: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = service_fn(move |r| upstream(r, token));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn start_proxy(upstream: SocketAddr, live: Live) -> SocketAddr {
    let raw = RawProxy {
        listen: "127.0.0.1:0".into(),
        upstream: format!("http://{upstream}"),
        ..RawProxy::default()
    };
    let config = raw.validate().unwrap();
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ProxyState::with_rules(config, live));
    tokio::spawn(rawrxd::run(listener, state, std::future::pending::<()>()));
    addr
}

/// Time from sending the request to the first frame carrying answer text.
async fn first_text(proxy: SocketAddr, path: &str, answer: &str) -> Duration {
    let stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let body = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": answer}]});
    let request = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let sent = Instant::now();
    let mut response = sender.send_request(request).await.unwrap();
    let marker: &[u8] = b"\"content\":\"";
    while let Some(frame) = response.body_mut().frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        // A frame with a non-empty `content`.
        let text = &data[..];
        if let Some(at) = text.windows(marker.len()).position(|w| w == marker) {
            if text.get(at + marker.len()) != Some(&b'"') {
                return sent.elapsed();
            }
        }
    }
    panic!("no answer text through {proxy} on {path}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let token_ms: u64 = std::env::args()
        .skip_while(|a| a != "--token-ms")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let token = Duration::from_millis(token_ms);
    let corpus = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/detect/labelled.jsonl"),
    )
    .unwrap();
    let answers: Vec<String> = corpus
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["label"] == "ordinary")
        .map(|v| v["text"].as_str().unwrap().to_string())
        .filter(|t| !t.trim().is_empty())
        .collect();

    let upstream = start_upstream(token).await;
    let plain = start_proxy(upstream, Live::empty()).await;
    let dir = std::env::temp_dir().join(format!("rawrxd-detect-ttft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("detect.toml"), DETECTORS).unwrap();
    let watched = start_proxy(upstream, Live::load_dir(&dir).unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "detect_ttft: {} ordinary answers, one piece every {token_ms} ms; added time to the \
         first answer text with all built-in detectors on",
        answers.len()
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10}",
        "endpoint", "base p50", "added p50", "added p90", "added max", "p50 tokens", "held>=1/2"
    );
    let mut worst_median_tokens: f64 = 0.0;
    for path in ["/api/chat", "/v1/chat/completions"] {
        let mut added = Vec::new();
        let mut base = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            let (with, without) = if i % 2 == 0 {
                let with = first_text(watched, path, answer).await;
                (with, first_text(plain, path, answer).await)
            } else {
                let without = first_text(plain, path, answer).await;
                (first_text(watched, path, answer).await, without)
            };
            base.push(without.as_secs_f64() * 1e3);
            added.push((with.as_secs_f64() - without.as_secs_f64()) * 1e3);
        }
        added.sort_by(f64::total_cmp);
        base.sort_by(f64::total_cmp);
        let median = percentile(&added, 0.5);
        worst_median_tokens = worst_median_tokens.max(median / token_ms as f64);
        let held = added
            .iter()
            .filter(|&&ms| ms > token_ms as f64 / 2.0)
            .count();
        println!(
            "{path:<22} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>12.2} {:>6}/{}",
            percentile(&base, 0.5),
            median,
            percentile(&added, 0.9),
            added[added.len() - 1],
            median / token_ms as f64,
            held,
            added.len()
        );
    }
    let verdict = if worst_median_tokens <= 1.0 {
        "met"
    } else {
        "NOT met"
    };
    println!("target: added median <= 1 token: {verdict} ({worst_median_tokens:.2} tokens)");
}
