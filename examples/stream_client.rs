//! Streams one `/api/generate` request and prints each NDJSON line with the milliseconds
//! since the request was sent: a quick way to see that tokens arrive one by one through the
//! proxy, and how the proxy compares to talking to the model server directly.
//!
//! ```text
//! cargo run --example stream_client -- http://127.0.0.1:11435 gemma3:270m "Why is the sky blue?"
//! cargo run --example stream_client -- http://127.0.0.1:11434 gemma3:270m "Why is the sky blue?"
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:11435".into());
    let model = args.next().unwrap_or_else(|| "gemma3:270m".into());
    let prompt = args.next().unwrap_or_else(|| "Say hello.".into());

    let body = serde_json::json!({ "model": model, "prompt": prompt, "stream": true });
    let request = http::Request::post(format!("{}/api/generate", base.trim_end_matches('/')))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let sent = Instant::now();
    let response = client.request(request).await?;
    println!("{:>8.1} ms  HTTP {}", ms(sent), response.status());
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            println!(
                "{:>8.1} ms  {}",
                ms(sent),
                String::from_utf8_lossy(&line).trim_end()
            );
        }
    }
    if !pending.is_empty() {
        println!(
            "{:>8.1} ms  {}",
            ms(sent),
            String::from_utf8_lossy(&pending)
        );
    }
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
