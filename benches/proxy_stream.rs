#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Proxy streaming overhead (issue 2): what does putting `rawrxd proxy` between a client and
//! an Ollama-style server cost a streaming response?
//!
//! One run of `cargo bench --bench proxy_stream` does all of this in one process:
//!
//! 1. starts a fast fake upstream in-process (hyper on 127.0.0.1:0) that answers
//!    `POST /api/generate` with a chunked `application/x-ndjson` stream, one Ollama-like line
//!    per body frame, each line carrying its send time (`"t"`, ns since a shared origin);
//! 2. spawns the real `rawrxd` binary as a separate process in front of it, so its memory
//!    (`VmRSS`/`VmHWM` from `/proc`) and CPU time can be read on their own;
//! 3. runs N concurrent streaming clients, each doing several sequential requests over one
//!    keep-alive connection, alternately **direct** to the upstream and **through the proxy**
//!    (direct, proxy, proxy, direct, ...), and measures time to first byte, per-line delivery
//!    latency (arrival time minus the embedded send time) and aggregate lines per second;
//! 4. prints a table and checks the targets of issue 2.
//!
//! Options (flag or environment variable; cargo's own `--bench` and unknown flags are
//! ignored):
//!
//! ```text
//! --streams N       PROXY_BENCH_STREAMS      concurrent clients            (64)
//! --lines N         PROXY_BENCH_LINES        NDJSON lines per response     (200)
//! --interval-ms F   PROXY_BENCH_INTERVAL_MS  upstream pause between lines  (1; 0 = unpaced)
//! --requests N      PROXY_BENCH_REQUESTS     sequential requests per client per phase (4)
//! --rounds N        PROXY_BENCH_ROUNDS       direct/proxy phase pairs per scenario     (3)
//! --scenarios LIST  PROXY_BENCH_SCENARIOS    any of paced,unpaced,batched,single     (all)
//! --rules DIR       PROXY_BENCH_RULES        rule directory for the proxy          (no rules)
//! --proxy-bin PATH  PROXY_BENCH_PROXY_BIN    another rawrxd binary to measure (this build's)
//! ```
//!
//! Scenarios: `paced` is N streams at the given interval, first requests spread over one
//! response time; `unpaced` is N streams with no pause between lines (3x the requests), the
//! upstream still writing each line on its own like Ollama; `batched` is the same but lets
//! the upstream gather lines into few writes; `single` is one client alone (at most 50 lines,
//! 10x the requests) for a clean latency figure.
//!
//! e.g. `cargo bench --bench proxy_stream -- --streams 64 --lines 200 --interval-ms 1`.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;
use tokio::time::{Interval, MissedTickBehavior};

// ---------------------------------------------------------------------------------------------
// Clock shared by the upstream (send times) and the clients (arrival times).

static ORIGIN: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Options.

#[derive(Debug, Clone)]
struct Options {
    streams: usize,
    lines: u64,
    interval: Duration,
    requests: usize,
    rounds: usize,
    scenarios: Vec<String>,
    /// Rule directory for the proxy; `None` runs it without rules.
    rules: Option<std::path::PathBuf>,
    /// The proxy binary: this build's `rawrxd` unless another is given (to compare builds).
    proxy_bin: std::path::PathBuf,
}

impl Options {
    fn parse() -> Options {
        fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
        }
        let mut streams: usize = env("PROXY_BENCH_STREAMS").unwrap_or(64);
        let mut lines: u64 = env("PROXY_BENCH_LINES").unwrap_or(200);
        let mut interval_ms: f64 = env("PROXY_BENCH_INTERVAL_MS").unwrap_or(1.0);
        let mut requests: usize = env("PROXY_BENCH_REQUESTS").unwrap_or(4);
        let mut rounds: usize = env("PROXY_BENCH_ROUNDS").unwrap_or(3);
        let mut scenarios: String = env("PROXY_BENCH_SCENARIOS").unwrap_or_else(|| ALL.into());
        let mut rules: Option<String> = env("PROXY_BENCH_RULES");
        let mut proxy_bin: Option<String> = env("PROXY_BENCH_PROXY_BIN");

        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let (flag, inline) = match args[i].split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (args[i].clone(), None),
            };
            let known = matches!(
                flag.as_str(),
                "--streams"
                    | "--lines"
                    | "--interval-ms"
                    | "--requests"
                    | "--rounds"
                    | "--scenarios"
                    | "--rules"
                    | "--proxy-bin"
            );
            if !known {
                i += 1; // `--bench` from cargo, filters, anything else: ignored
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .unwrap_or_else(|| panic!("{flag} needs a value"))
                }
            };
            fn num<T: std::str::FromStr>(flag: &str, value: &str) -> T {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{flag}: cannot parse {value:?}"))
            }
            match flag.as_str() {
                "--streams" => streams = num(&flag, &value),
                "--lines" => lines = num(&flag, &value),
                "--interval-ms" => interval_ms = num(&flag, &value),
                "--requests" => requests = num(&flag, &value),
                "--rounds" => rounds = num(&flag, &value),
                "--scenarios" => scenarios = value,
                "--rules" => rules = Some(value),
                "--proxy-bin" => proxy_bin = Some(value),
                _ => unreachable!(),
            }
            i += 1;
        }
        assert!(streams >= 1 && lines >= 1 && requests >= 1 && rounds >= 1);
        assert!(interval_ms >= 0.0, "--interval-ms must not be negative");
        let scenarios: Vec<String> = scenarios
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for name in &scenarios {
            assert!(
                ALL.split(',').any(|known| known == name),
                "--scenarios: unknown {name:?} (known: {ALL})"
            );
        }
        Options {
            streams,
            lines,
            interval: Duration::from_secs_f64(interval_ms / 1e3),
            requests,
            rounds,
            scenarios,
            // The proxy runs in a scratch directory: make the path absolute.
            rules: rules
                .filter(|r| !r.is_empty())
                .map(|r| std::fs::canonicalize(&r).unwrap_or_else(|e| panic!("--rules {r}: {e}"))),
            proxy_bin: proxy_bin.filter(|p| !p.is_empty()).map_or_else(
                || env!("CARGO_BIN_EXE_rawrxd").into(),
                |p| std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("--proxy-bin {p}: {e}")),
            ),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// Scenario names for `--scenarios`.
const ALL: &str = "paced,unpaced,batched,single";

// ---------------------------------------------------------------------------------------------
// The fake upstream.

/// What a client asks for: the request body is Ollama's, plus a pacing field.
fn generate_request_body(lines: u64, interval: Duration, batch: bool) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "bench",
            "prompt": "Why is the sky blue?",
            "stream": true,
            "options": { "num_predict": lines },
            "bench_interval_us": interval.as_micros() as u64,
            "bench_batch_writes": batch,
        })
        .to_string(),
    )
}

/// The response body: `total` NDJSON lines, one per frame, each stamped when it is produced
/// (that is, when hyper polls for it, just before writing it to the socket).
///
/// Unpaced, a body that is always ready lets hyper gather up to 16 lines into one `writev`.
/// Ollama does not do that: its handler writes and flushes every token on its own. So unless
/// `batch` is set, the body says "not yet" once between lines (waking itself at once), which
/// makes hyper flush each line in its own write, as Ollama does.
struct PacedBody {
    sent: u64,
    total: u64,
    interval: Option<Interval>,
    batch: bool,
    yielded: bool,
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent >= this.total {
            return Poll::Ready(None);
        }
        // The first line goes out at once (like a model's first token once the prompt is
        // evaluated); the pause comes between lines.
        if this.sent > 0 {
            if let Some(interval) = &mut this.interval {
                ready!(interval.poll_tick(cx));
            } else if !this.batch && !this.yielded {
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        this.yielded = false;
        this.sent += 1;
        let line = if this.sent == this.total {
            format!(
                "{{\"model\":\"bench\",\"created_at\":\"2024-06-01T00:00:00.000000Z\",\
                 \"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"t\":{}}}\n",
                now_ns()
            )
        } else {
            format!(
                "{{\"model\":\"bench\",\"created_at\":\"2024-06-01T00:00:00.000000Z\",\
                 \"response\":\"tok\",\"done\":false,\"t\":{}}}\n",
                now_ns()
            )
        };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type UpstreamBody = Either<PacedBody, Full<Bytes>>;

async fn upstream_handle(request: Request<Incoming>) -> Response<UpstreamBody> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
            text.as_bytes(),
        ))));
        *response.status_mut() = status;
        response
    };
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/") => plain(StatusCode::OK, "Ollama is running"),
        ("POST", "/api/generate") => {
            let Ok(body) = request.into_body().collect().await else {
                return plain(StatusCode::BAD_REQUEST, "bad body");
            };
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
                return plain(StatusCode::BAD_REQUEST, "bad json");
            };
            let total = json["options"]["num_predict"].as_u64().unwrap_or(10).max(1);
            let interval_us = json["bench_interval_us"].as_u64().unwrap_or(0);
            let batch = json["bench_batch_writes"].as_bool().unwrap_or(false);
            let interval = (interval_us > 0).then(|| {
                let period = Duration::from_micros(interval_us);
                // Not `interval(period)`: its first tick waits for the timer wheel's next
                // millisecond, which would add up to 1 ms to every time to first byte.
                let mut interval =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                // A token generator keeps its rate: late ticks are caught up, like a model
                // whose tokens queued while the process was descheduled.
                interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
                interval
            });
            let body = PacedBody {
                sent: 0,
                total,
                interval,
                batch,
                yielded: false,
            };
            Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(Either::Left(body))
                .unwrap()
        }
        _ => plain(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Ollama (Go) sets TCP_NODELAY on its sockets.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    service_fn(|r| async move { Ok::<_, Infallible>(upstream_handle(r).await) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The proxy process.

struct ProxyProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    /// stderr lines other than the listening line (warnings, errors).
    other_log_lines: Arc<AtomicUsize>,
}

impl ProxyProcess {
    fn spawn(
        binary: &std::path::Path,
        upstream: SocketAddr,
        rules: Option<&std::path::Path>,
        scratch: &std::path::Path,
    ) -> ProxyProcess {
        std::fs::create_dir_all(scratch).unwrap();
        // A directory that does not exist means "no rules".
        let rules = rules.map_or_else(|| scratch.join("no-rules"), |r| r.to_path_buf());
        let mut command = Command::new(binary);
        command
            .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
            .arg(format!("http://{upstream}"))
            .arg("--rules")
            .arg(rules)
            .arg("--db")
            .arg(scratch.join("rawrxd.db"))
            .arg("--log-dir")
            .arg(scratch.join("logs"))
            // The listening line is logged at info by rawrxd::proxy::server; the access log
            // (target rawrxd::access, one line per request) stays off.
            .env("RUST_LOG", "warn,rawrxd::proxy::server=info")
            // A scratch working directory: no stray rawrxd.toml; no RAWRXD_* settings either.
            .current_dir(scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RAWRXD_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("cannot start the rawrxd binary");
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let other_log_lines = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let counter = other_log_lines.clone();
        // Drain stderr for the process's whole life so the pipe never fills.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    if let (Ok(addr), Some(tx)) = (addr.parse(), tx.take()) {
                        let _ = tx.send(addr);
                        continue;
                    }
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n < 20 {
                    eprintln!("[rawrxd] {line}");
                } else if n == 20 {
                    eprintln!("[rawrxd] (further log lines counted, not shown)");
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("rawrxd did not log its listening address within 15 s");
            }
        };
        ProxyProcess {
            child,
            pid,
            addr,
            other_log_lines,
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU time of a process (all its threads, living or not), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// CPU time used by everything on the machine (user, nice, system, irq, softirq; not idle,
/// iowait or steal), in clock ticks, from the first line of `/proc/stat`.
fn system_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum()
}

/// Linux reports CPU times in USER_HZ, which is 100 on every mainstream configuration.
const TICKS_PER_SEC: f64 = 100.0;

/// Polls the proxy's `VmRSS` in the background and keeps the largest value seen.
struct RssSampler {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_kb.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(kb) = proc_status_kb(pid, "VmRSS") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler { peak_kb, stop }
    }

    fn take_peak(&self) -> u64 {
        self.peak_kb.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Clients.

#[derive(Debug, Clone)]
struct Scenario {
    label: String,
    streams: usize,
    lines: u64,
    interval: Duration,
    requests: usize,
    /// Let the upstream batch unpaced lines into few writes (see [`PacedBody`]).
    batch: bool,
    /// Spread the clients' first requests over one response's duration, so requests arrive
    /// evenly (steady state) instead of all at the same instant.
    stagger: bool,
}

#[derive(Debug, Default)]
struct ClientResult {
    ttfb_ns: Vec<u64>,
    latency_ns: Vec<u64>,
    lines: u64,
    requests_ok: u64,
    errors: Vec<String>,
}

/// Feeds one body frame's bytes: every completed line gives a latency sample.
struct LineReader {
    partial: Vec<u8>,
    lines: u64,
    done_seen: bool,
    bad_lines: u64,
}

impl LineReader {
    fn new() -> Self {
        LineReader {
            partial: Vec::new(),
            lines: 0,
            done_seen: false,
            bad_lines: 0,
        }
    }

    fn feed(&mut self, data: &[u8], arrived: u64, latencies: &mut Vec<u64>) {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(head, arrived, latencies);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(head);
                self.line(&whole, arrived, latencies);
                whole.clear();
                self.partial = whole;
            }
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, line: &[u8], arrived: u64, latencies: &mut Vec<u64>) {
        self.lines += 1;
        match sent_time(line) {
            Some(sent) => latencies.push(arrived.saturating_sub(sent)),
            None => self.bad_lines += 1,
        }
        if line.windows(11).any(|w| w == b"\"done\":true") {
            self.done_seen = true;
        }
    }
}

/// The `"t":<ns>` field, which the upstream writes last on every line.
fn sent_time(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"t\":";
    let at = line.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for &d in digits {
        value = value * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(value)
}

async fn run_client(
    target: SocketAddr,
    scenario: Arc<Scenario>,
    start_delay: Duration,
    barrier: Arc<Barrier>,
) -> ClientResult {
    let mut result = ClientResult::default();
    let connected = async {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok::<_, std::io::Error>(sender)
    }
    .await;
    barrier.wait().await;
    let mut sender = match connected {
        Ok(sender) => sender,
        Err(error) => {
            result.errors.push(format!("connect {target}: {error}"));
            return result;
        }
    };
    tokio::time::sleep(start_delay).await;
    let body = generate_request_body(scenario.lines, scenario.interval, scenario.batch);
    let host = target.to_string();
    for _ in 0..scenario.requests {
        if let Err(error) = sender.ready().await {
            result.errors.push(format!("connection closed: {error}"));
            return result;
        }
        let request = Request::post("/api/generate")
            .header("host", &host)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let sent = now_ns();
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                result.errors.push(format!("request failed: {error}"));
                return result;
            }
        };
        let status = response.status();
        let mut body = response.into_body();
        let mut reader = LineReader::new();
        let mut first_byte = None;
        let mut failed = None;
        while let Some(frame) = body.frame().await {
            let arrived = now_ns();
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        if data.is_empty() {
                            continue;
                        }
                        first_byte.get_or_insert(arrived);
                        reader.feed(data, arrived, &mut result.latency_ns);
                    }
                }
                Err(error) => {
                    failed = Some(format!("body error: {error}"));
                    break;
                }
            }
        }
        if let Some(first) = first_byte {
            result.ttfb_ns.push(first - sent);
        }
        result.lines += reader.lines;
        let problem = failed
            .or_else(|| (status != StatusCode::OK).then(|| format!("status {status}")))
            .or_else(|| {
                (reader.lines != scenario.lines)
                    .then(|| format!("{} lines instead of {}", reader.lines, scenario.lines))
            })
            .or_else(|| (!reader.done_seen).then(|| "no done:true line".to_string()))
            .or_else(|| {
                (reader.bad_lines > 0 || !reader.partial.is_empty())
                    .then(|| format!("{} malformed lines", reader.bad_lines))
            });
        match problem {
            Some(problem) => result.errors.push(problem),
            None => result.requests_ok += 1,
        }
    }
    result
}

#[derive(Debug, Default)]
struct PhaseStats {
    ttfb_ns: Vec<u64>,
    latency_ns: Vec<u64>,
    lines: u64,
    requests_ok: u64,
    errors: Vec<String>,
    wall: Duration,
    proxy_cpu_ticks: u64,
    bench_cpu_ticks: u64,
    /// CPU used by anything else on the machine (other processes, unattributed softirq).
    other_cpu_ticks: u64,
    /// The largest share of one phase's wall time that "anything else" used, in % of a core.
    max_other_percent: f64,
}

impl PhaseStats {
    fn absorb(&mut self, other: PhaseStats) {
        self.ttfb_ns.extend(other.ttfb_ns);
        self.latency_ns.extend(other.latency_ns);
        self.lines += other.lines;
        self.requests_ok += other.requests_ok;
        self.errors.extend(other.errors);
        self.wall += other.wall;
        self.proxy_cpu_ticks += other.proxy_cpu_ticks;
        self.bench_cpu_ticks += other.bench_cpu_ticks;
        self.other_cpu_ticks += other.other_cpu_ticks;
        self.max_other_percent = self.max_other_percent.max(other.max_other_percent);
    }

    fn lines_per_sec(&self) -> f64 {
        self.lines as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_percent(&self, ticks: u64) -> f64 {
        ticks as f64 / TICKS_PER_SEC / self.wall.as_secs_f64().max(1e-9) * 100.0
    }
}

async fn run_phase(target: SocketAddr, scenario: &Scenario, proxy_pid: u32) -> PhaseStats {
    let scenario = Arc::new(scenario.clone());
    let n = scenario.streams;
    let barrier = Arc::new(Barrier::new(n + 1));
    let response_time = scenario.interval * (scenario.lines as u32);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let delay = if scenario.stagger {
            response_time * (i as u32) / (n as u32)
        } else {
            Duration::ZERO
        };
        tasks.push(tokio::spawn(run_client(
            target,
            scenario.clone(),
            delay,
            barrier.clone(),
        )));
    }
    barrier.wait().await; // every client is connected
    let proxy_pid_text = proxy_pid.to_string();
    let proxy_cpu = cpu_ticks(&proxy_pid_text);
    let bench_cpu = cpu_ticks("self");
    let system_cpu = system_busy_ticks();
    let started = Instant::now();
    let mut stats = PhaseStats::default();
    for task in tasks {
        let r = task.await.unwrap();
        stats.ttfb_ns.extend(r.ttfb_ns);
        stats.latency_ns.extend(r.latency_ns);
        stats.lines += r.lines;
        stats.requests_ok += r.requests_ok;
        stats.errors.extend(r.errors);
    }
    stats.wall = started.elapsed();
    stats.proxy_cpu_ticks = cpu_ticks(&proxy_pid_text).saturating_sub(proxy_cpu);
    stats.bench_cpu_ticks = cpu_ticks("self").saturating_sub(bench_cpu);
    stats.other_cpu_ticks = system_busy_ticks()
        .saturating_sub(system_cpu)
        .saturating_sub(stats.proxy_cpu_ticks + stats.bench_cpu_ticks);
    stats.max_other_percent = stats.cpu_percent(stats.other_cpu_ticks);
    stats
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    ttfb_p50: f64,
    ttfb_p99: f64,
    lat_p50: f64,
    lat_p99: f64,
    lines_per_sec: f64,
    samples_ttfb: usize,
}

fn summarize(stats: &mut PhaseStats) -> Summary {
    stats.ttfb_ns.sort_unstable();
    stats.latency_ns.sort_unstable();
    let us = |ns: u64| ns as f64 / 1e3;
    Summary {
        ttfb_p50: us(percentile(&stats.ttfb_ns, 0.50)),
        ttfb_p99: us(percentile(&stats.ttfb_ns, 0.99)),
        lat_p50: us(percentile(&stats.latency_ns, 0.50)),
        lat_p99: us(percentile(&stats.latency_ns, 0.99)),
        lines_per_sec: stats.lines_per_sec(),
        samples_ttfb: stats.ttfb_ns.len(),
    }
}

struct ScenarioResult {
    scenario: Scenario,
    direct: Summary,
    proxy: Summary,
    direct_stats: PhaseStats,
    proxy_stats: PhaseStats,
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn print_report(
    options: &Options,
    results: &[ScenarioResult],
    rss: (u64, u64, u64, u64),
    log_lines: usize,
) {
    let (idle_kb, peak_sampled_kb, hwm_kb, after_kb) = rss;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!();
    println!("== rawrxd proxy streaming overhead (issue 2) ==");
    println!("machine: {cores} cores ({cpu_model}); upstream, clients and proxy share them");
    println!(
        "options: --streams {} --lines {} --interval-ms {} --requests {} --rounds {}",
        options.streams,
        options.lines,
        options.interval.as_secs_f64() * 1e3,
        options.requests,
        options.rounds
    );
    if options.proxy_bin.as_os_str() != env!("CARGO_BIN_EXE_rawrxd") {
        println!("proxy binary: {}", options.proxy_bin.display());
    }
    match &options.rules {
        Some(dir) => println!("proxy rules: {}", dir.display()),
        None => println!("proxy rules: none (pure forwarding path)"),
    }
    println!();
    println!(
        "{:<28} {:<6} {:>8} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>7} {:>5}",
        "scenario",
        "path",
        "lines",
        "wall s",
        "lines/s",
        "TTFB p50",
        "TTFB p99",
        "lat p50",
        "lat p99",
        "proxy%",
        "bench%",
        "other%",
        "errs"
    );
    println!("{}", "-".repeat(137));
    for r in results {
        for (path, s, st) in [
            ("direct", &r.direct, &r.direct_stats),
            ("proxy", &r.proxy, &r.proxy_stats),
        ] {
            println!(
                "{:<28} {:<6} {:>8} {:>7.2} {:>9.0} {:>8.0}us {:>8.0}us {:>8.0}us {:>8.0}us {:>6.0}% {:>6.0}% {:>6.0}% {:>5}",
                r.scenario.label,
                path,
                st.lines,
                st.wall.as_secs_f64(),
                s.lines_per_sec,
                s.ttfb_p50,
                s.ttfb_p99,
                s.lat_p50,
                s.lat_p99,
                st.cpu_percent(st.proxy_cpu_ticks),
                st.cpu_percent(st.bench_cpu_ticks),
                st.cpu_percent(st.other_cpu_ticks),
                st.errors.len()
            );
        }
    }
    println!();
    println!("derived (proxy minus direct):");
    println!(
        "{:<28} {:>14} {:>14} {:>16} {:>16} {:>11} {:>15} {:>13}",
        "scenario",
        "+TTFB p50",
        "+TTFB p99",
        "+chunk lat p50",
        "+chunk lat p99",
        "thr ratio",
        "proxy CPU/line",
        "TTFB samples"
    );
    println!("{}", "-".repeat(134));
    for r in results {
        let cpu_per_line_us = r.proxy_stats.proxy_cpu_ticks as f64 / TICKS_PER_SEC * 1e6
            / r.proxy_stats.lines.max(1) as f64;
        println!(
            "{:<28} {:>12.0}us {:>12.0}us {:>14.0}us {:>14.0}us {:>11.3} {:>13.1}us {:>13}",
            r.scenario.label,
            r.proxy.ttfb_p50 - r.direct.ttfb_p50,
            r.proxy.ttfb_p99 - r.direct.ttfb_p99,
            r.proxy.lat_p50 - r.direct.lat_p50,
            r.proxy.lat_p99 - r.direct.lat_p99,
            r.proxy.lines_per_sec / r.direct.lines_per_sec,
            cpu_per_line_us,
            r.proxy.samples_ttfb.min(r.direct.samples_ttfb)
        );
    }
    println!();
    println!(
        "proxy RSS: idle {:.1} MB | peak under load {:.1} MB (sampled VmRSS), {:.1} MB (VmHWM) | after load {:.1} MB",
        mb(idle_kb),
        mb(peak_sampled_kb),
        mb(hwm_kb),
        mb(after_kb)
    );
    let other = results
        .iter()
        .flat_map(|r| {
            [
                r.direct_stats.max_other_percent,
                r.proxy_stats.max_other_percent,
            ]
        })
        .fold(0.0, f64::max);
    if other > 15.0 {
        println!(
            "WARNING: something else used up to {other:.0}% CPU during a phase (other% column): \
             the machine was not quiet, these numbers are contaminated"
        );
    }
    if log_lines > 0 {
        println!("proxy wrote {log_lines} warning/error log line(s) during the run (see stderr)");
    }
    let errors: Vec<&String> = results
        .iter()
        .flat_map(|r| r.direct_stats.errors.iter().chain(&r.proxy_stats.errors))
        .collect();
    if !errors.is_empty() {
        println!("{} failed request(s); first: {}", errors.len(), errors[0]);
    }

    println!();
    println!("targets:");
    for r in results
        .iter()
        .filter(|r| r.scenario.streams == options.streams)
    {
        let ratio = r.proxy.lines_per_sec / r.direct.lines_per_sec;
        println!(
            "  [{}] throughput via proxy >= 0.9x direct @ {} streams, {:<22} ratio {:.3}",
            verdict(ratio >= 0.9),
            r.scenario.streams,
            format!("{}:", r.scenario.label),
            ratio
        );
    }
    for r in results {
        let added = r.proxy.ttfb_p99 - r.direct.ttfb_p99;
        println!(
            "  [{}] p99 added TTFB <= 1 ms, {:<38} {:+.0} us",
            verdict(added <= 1000.0),
            format!("{}:", r.scenario.label),
            added
        );
    }
    println!(
        "  [{}] idle RSS <= 30 MB: {:.1} MB",
        verdict(mb(idle_kb) <= 30.0),
        mb(idle_kb)
    );
    println!();
    println!("notes: latencies are one-way, send (upstream) to arrival (client), on one clock;");
    println!("  '+' columns are proxy percentile minus direct percentile, not per-line pairs.");
    println!("  Upstream, clients and proxy share {cores} cores: when proxy% + bench% nears");
    println!(
        "  {}%, the runs are CPU-bound and the proxy's CPU is taken from the upstream",
        cores * 100
    );
    println!("  and clients, so unpaced throughput ratios measure CPU cost per line, not a");
    println!("  stall in the proxy. Unpaced chunk latency is mostly queueing in socket buffers.");
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let options = Options::parse();
    ORIGIN.get_or_init(Instant::now);
    // Explicit worker count, so TOKIO_WORKER_THREADS (inherited by the proxy) tunes only it.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let bench_started = Instant::now();

    let upstream = runtime.block_on(start_upstream());
    let scratch = std::env::temp_dir().join(format!("rawrxd-bench-{}", std::process::id()));
    let proxy = ProxyProcess::spawn(
        &options.proxy_bin,
        upstream,
        options.rules.as_deref(),
        &scratch,
    );
    std::thread::sleep(Duration::from_millis(300));
    let idle_kb = proc_status_kb(proxy.pid, "VmRSS").unwrap_or(0);
    eprintln!(
        "upstream on {upstream}, rawrxd (pid {}) on {}, idle RSS {} kB",
        proxy.pid, proxy.addr, idle_kb
    );
    let sampler = RssSampler::start(proxy.pid);

    let paced = !options.interval.is_zero();
    let ms = options.interval.as_secs_f64() * 1e3;
    let mut scenarios = Vec::new();
    if paced && options.wants("paced") {
        scenarios.push(Scenario {
            label: format!("{} streams, {ms} ms/line", options.streams),
            streams: options.streams,
            lines: options.lines,
            interval: options.interval,
            requests: options.requests,
            batch: false,
            stagger: true,
        });
    }
    for batch in [false, true] {
        if !options.wants(if batch { "batched" } else { "unpaced" }) {
            continue;
        }
        scenarios.push(Scenario {
            label: format!(
                "{} streams, unpaced{}",
                options.streams,
                if batch { ", batched" } else { "" }
            ),
            streams: options.streams,
            lines: options.lines,
            interval: Duration::ZERO,
            // Unpaced responses are over in milliseconds: more of them for a measurable phase.
            requests: options.requests * 3,
            batch,
            stagger: false,
        });
    }
    // One client alone: the clean latency figure. Shorter responses, more of them, so the
    // TTFB percentiles have samples to stand on.
    let single_interval = if paced {
        options.interval
    } else {
        Duration::from_millis(1)
    };
    if options.wants("single") {
        scenarios.push(Scenario {
            label: format!("1 stream, {} ms/line", single_interval.as_secs_f64() * 1e3),
            streams: 1,
            lines: options.lines.min(50),
            interval: single_interval,
            requests: options.requests * 10,
            batch: false,
            stagger: false,
        });
    }

    let mut results = Vec::new();
    for scenario in &scenarios {
        eprintln!("scenario: {}", scenario.label);
        // Warm-up: connections in the proxy's upstream pool, allocator, caches.
        let warmup = Scenario {
            lines: scenario.lines.min(20),
            requests: 1,
            stagger: false,
            ..scenario.clone()
        };
        runtime.block_on(run_phase(upstream, &warmup, proxy.pid));
        runtime.block_on(run_phase(proxy.addr, &warmup, proxy.pid));

        let mut direct = PhaseStats::default();
        let mut via_proxy = PhaseStats::default();
        for round in 0..options.rounds {
            // direct, proxy | proxy, direct | ...: neither path always goes first.
            let order: [bool; 2] = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for through_proxy in order {
                let target = if through_proxy { proxy.addr } else { upstream };
                let phase = runtime.block_on(run_phase(target, scenario, proxy.pid));
                eprintln!(
                    "  round {} {:<6} {:>8} lines in {:>6.2} s  ({} errors)",
                    round + 1,
                    if through_proxy { "proxy" } else { "direct" },
                    phase.lines,
                    phase.wall.as_secs_f64(),
                    phase.errors.len()
                );
                if through_proxy {
                    via_proxy.absorb(phase);
                } else {
                    direct.absorb(phase);
                }
            }
        }
        let direct_summary = summarize(&mut direct);
        let proxy_summary = summarize(&mut via_proxy);
        results.push(ScenarioResult {
            scenario: scenario.clone(),
            direct: direct_summary,
            proxy: proxy_summary,
            direct_stats: direct,
            proxy_stats: via_proxy,
        });
    }

    let peak_sampled_kb = sampler.take_peak();
    drop(sampler);
    std::thread::sleep(Duration::from_millis(500));
    let after_kb = proc_status_kb(proxy.pid, "VmRSS").unwrap_or(0);
    let hwm_kb = proc_status_kb(proxy.pid, "VmHWM").unwrap_or(0);
    let log_lines = proxy.other_log_lines.load(Ordering::Relaxed);
    print_report(
        &options,
        &results,
        (idle_kb, peak_sampled_kb, hwm_kb, after_kb),
        log_lines,
    );
    println!(
        "total bench time {:.1} s",
        bench_started.elapsed().as_secs_f64()
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&scratch);
}
