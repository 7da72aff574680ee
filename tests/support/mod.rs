//! Test harness: a scripted upstream that misbehaves on purpose, a proxy started in-process on
//! port 0, and clients that record when each body frame arrives.
#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use rawrxd::config::RawProxy;
use rawrxd::proxy::server::Finished;
use rawrxd::ProxyState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One thing the scripted upstream does after reading a request.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Close the connection at once (mid-response if the response was not finished).
    Close,
}

/// What the upstream answers to every request.
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub steps: Vec<Step>,
}

impl Script {
    pub fn write(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.steps.push(Step::Write(bytes.as_ref().to_vec()));
        self
    }

    pub fn sleep(mut self, duration: Duration) -> Self {
        self.steps.push(Step::Sleep(duration));
        self
    }

    pub fn close(mut self) -> Self {
        self.steps.push(Step::Close);
        self
    }

    pub fn chunk(self, bytes: impl AsRef<[u8]>) -> Self {
        let bytes = bytes.as_ref();
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        self.write(framed)
    }

    fn chunked_head(content_type: &str) -> Self {
        Script::default().write(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ))
    }

    /// An Ollama-style NDJSON stream, one line per chunk, `delay` before each line.
    pub fn ndjson(lines: &[impl AsRef<str>], delay: Duration) -> Self {
        let mut script = Self::chunked_head("application/x-ndjson");
        for line in lines {
            script = script.sleep(delay).chunk(format!("{}\n", line.as_ref()));
        }
        script.write("0\r\n\r\n")
    }

    /// An OpenAI-style SSE stream, one event per chunk, `delay` before each, then `[DONE]`.
    pub fn sse(events: &[&str], delay: Duration) -> Self {
        let mut script = Self::chunked_head("text/event-stream");
        for event in events {
            script = script.sleep(delay).chunk(format!("data: {event}\n\n"));
        }
        script.chunk("data: [DONE]\n\n").write("0\r\n\r\n")
    }

    /// A stream that dies: the given whole lines, then half a line, then the socket closes.
    pub fn dies_mid_stream(content_type: &str, whole: &[impl AsRef<str>], partial: &str) -> Self {
        let mut script = Self::chunked_head(content_type);
        for piece in whole {
            script = script.chunk(piece.as_ref());
        }
        script
            .chunk(partial)
            .sleep(Duration::from_millis(50))
            .close()
    }

    /// Nothing for `delay`, then a small JSON answer.
    pub fn stall(delay: Duration) -> Self {
        Script::default()
            .sleep(delay)
            .write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    }

    /// A complete response with a `Content-Length` body.
    pub fn status(code: u16, content_type: &str, body: &[u8]) -> Self {
        Script::default()
            .write(format!(
                "HTTP/1.1 {code} Whatever\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ))
            .write(body)
    }

    /// `size` bytes of a repeating pattern, `Content-Length`-framed, written in 64 KiB pieces.
    pub fn huge(size: usize) -> Self {
        let mut script = Script::default().write(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
        ));
        let body = pattern(size);
        for piece in body.chunks(64 * 1024) {
            script = script.write(piece);
        }
        script
    }
}

/// Deterministic filler bytes.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request line and header lines, exactly as sent.
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// Header values by lower-case name, as raw bytes.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.head
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|&b| b == b':')?;
                let (key, value) = line.split_at(colon);
                (String::from_utf8_lossy(key).eq_ignore_ascii_case(name))
                    .then(|| value[1..].trim_ascii().to_vec())
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn request_line(&self) -> String {
        self.head_text().lines().next().unwrap_or("").to_string()
    }
}

/// A scripted upstream on `127.0.0.1:0`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// When a client connection went away while a script was still running.
    pub disconnects: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(script: Script) -> Upstream {
        Self::start_sequence(vec![script]).await
    }

    /// An upstream that answers its n-th request (counted over all connections) with
    /// `scripts[n]`, and every request past the last with the last.
    pub async fn start_sequence(scripts: Vec<Script>) -> Upstream {
        let scripts = Arc::new(scripts);
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let disconnects = Arc::new(Mutex::new(Vec::new()));
        let (r, d) = (received.clone(), disconnects.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (scripts, served, r, d) =
                    (scripts.clone(), served.clone(), r.clone(), d.clone());
                tokio::spawn(serve_connection(stream, scripts, served, r, d));
            }
        });
        Upstream {
            addr,
            received,
            disconnects,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last(&self) -> Received {
        self.received.lock().unwrap().last().cloned().unwrap()
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    scripts: Arc<Vec<Script>>,
    served: Arc<std::sync::atomic::AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    disconnects: Arc<Mutex<Vec<Instant>>>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        received.lock().unwrap().push(request);
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let script = &scripts[n.min(scripts.len() - 1)];
        let (mut reader, mut writer) = stream.split();
        let run = async {
            for step in &script.steps {
                match step {
                    Step::Write(bytes) => {
                        if writer.write_all(bytes).await.is_err() {
                            return false;
                        }
                    }
                    Step::Sleep(duration) => tokio::time::sleep(*duration).await,
                    Step::Close => return false,
                }
            }
            true
        };
        // Watch the read side while the script runs: EOF means the peer went away.
        let watch = async {
            let mut byte = [0u8; 1024];
            loop {
                match reader.read(&mut byte).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(n) => buffer.extend_from_slice(&byte[..n]),
                }
            }
        };
        let keep_going = tokio::select! {
            finished = run => finished,
            gone = watch => {
                disconnects.lock().unwrap().push(gone);
                false
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// Reads one request (head plus Content-Length or chunked body).
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Received> {
    let head_end = loop {
        if let Some(i) = find(buffer, b"\r\n\r\n") {
            break i;
        }
        read_more(stream, buffer).await?;
    };
    let head = buffer[..head_end].to_vec();
    buffer.drain(..head_end + 4);
    let request = Received {
        head,
        body: Vec::new(),
    };
    let length = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    let mut body = Vec::new();
    if let Some(length) = length {
        while buffer.len() < length {
            read_more(stream, buffer).await?;
        }
        body = buffer.drain(..length).collect();
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = find(buffer, b"\r\n") {
                    break i;
                }
                read_more(stream, buffer).await?;
            };
            let size_text = String::from_utf8_lossy(&buffer[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buffer.drain(..line_end + 2);
            while buffer.len() < size + 2 {
                read_more(stream, buffer).await?;
            }
            body.extend(buffer.drain(..size));
            buffer.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    Some(Received { body, ..request })
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The proxy, in-process, on `127.0.0.1:0`.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub state: Arc<ProxyState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Finished>>,
    /// The store, audit writer and rule manager, for proxies started with [`TestProxy::app`].
    app: Option<rawrxd::app::App>,
}

/// A fresh empty directory under the system temp dir.
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-{tag}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestProxy {
    pub async fn start(upstream: &str) -> TestProxy {
        Self::start_with(upstream, |_| {}).await
    }

    /// A proxy with the rules of `rules_toml` (one rule file) in force.
    pub async fn with_rules(upstream: &str, rules_toml: &str) -> TestProxy {
        let dir = std::env::temp_dir().join(format!(
            "rawrxd-rules-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("test.toml"), rules_toml).unwrap();
        let live = rawrxd::live::Live::load_dir(&dir).unwrap();
        Self::launch(upstream, |_| {}, live).await
    }

    pub async fn start_with(upstream: &str, tweak: impl FnOnce(&mut RawProxy)) -> TestProxy {
        Self::launch(upstream, tweak, rawrxd::live::Live::empty()).await
    }

    async fn launch(
        upstream: &str,
        tweak: impl FnOnce(&mut RawProxy),
        live: rawrxd::live::Live,
    ) -> TestProxy {
        let mut raw = RawProxy {
            listen: "127.0.0.1:0".into(),
            upstream: upstream.into(),
            ..RawProxy::default()
        };
        tweak(&mut raw);
        let config = raw.validate().unwrap();
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::with_rules(config, live));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rawrxd::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
            app: None,
        }
    }

    /// The whole proxy as `rawrxd proxy` runs it (rule store, live reload, audit log), with
    /// `dir/rules`, `dir/rawrxd.db` and `dir/logs`.
    pub async fn app(
        upstream: &str,
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut RawProxy),
    ) -> TestProxy {
        let mut raw = RawProxy {
            listen: "127.0.0.1:0".into(),
            upstream: upstream.into(),
            rules: dir.join("rules"),
            db: dir.join("rawrxd.db"),
            log_dir: dir.join("logs"),
            ..RawProxy::default()
        };
        tweak(&mut raw);
        let config = raw.validate().unwrap();
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = rawrxd::app::App::start(config).unwrap();
        let state = app.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rawrxd::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
            app: Some(app),
        }
    }

    /// Signals shutdown and waits for the drain to finish.
    pub async fn shutdown(&mut self) -> Finished {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let finished = self.task.take().unwrap().await.unwrap();
        if let Some(app) = self.app.take() {
            tokio::task::spawn_blocking(move || app.stop())
                .await
                .unwrap();
        }
        finished
    }
}

/// A response as a client saw it, with the arrival time of every body frame.
#[derive(Debug)]
pub struct Seen {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub sent: Instant,
    pub head_at: Instant,
    pub frames: Vec<(Instant, Bytes)>,
    /// Set when the body ended in an error instead of a clean end.
    pub error: Option<String>,
}

impl Seen {
    pub fn body(&self) -> Vec<u8> {
        self.frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body()).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` over a fresh HTTP/1.1 connection to `addr` and records the answer.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let sent = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    collect(response, sent).await
}

/// Records a response's frames with arrival times.
pub async fn collect(response: Response<hyper::body::Incoming>, sent: Instant) -> Seen {
    let head_at = Instant::now();
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((Instant::now(), data));
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Seen {
        status: parts.status,
        headers: parts.headers,
        sent,
        head_at,
        frames,
        error,
    }
}

/// As [`call`], with extra headers.
pub async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Seen {
    let mut request = request(method, addr, path, body);
    for (name, value) in headers {
        request.headers_mut().insert(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    send(addr, request).await
}

/// Writes `text` to `path` the way editors save: a temporary file renamed over the old one.
pub fn save(path: &std::path::Path, text: &str) {
    let temp = path.with_extension("toml.tmp~");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Sends `method path` with `body` over a fresh connection to `addr` (the usual one-liner).
pub async fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Seen {
    send(addr, request(method, addr, path, body)).await
}

/// Builds a request with `host` set the way a normal client would.
pub fn request(method: &str, addr: SocketAddr, path: &str, body: &[u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

/// Writes raw bytes to `addr`, optionally half-closes, and reads until EOF or `wait` passes.
pub async fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    half_close: bool,
    wait: Duration,
) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    out
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// An Ollama `/api/generate` stream: `n` lines whose text is `"{word} "`, `delay` before
/// each, then a done line.
pub fn word_stream(word: &str, n: usize, delay: Duration) -> Script {
    let mut lines: Vec<String> = (0..n)
        .map(|_| format!(r#"{{"model":"m","response":"{word} ","done":false}}"#))
        .collect();
    lines.push(r#"{"model":"m","response":"","done":true}"#.to_string());
    Script::ndjson(&lines, delay)
}

/// A running `rawrxd` binary (killed when dropped), its address (read from its "listening
/// on" log line) and its stderr lines.
pub struct Spawned {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub logs: std::sync::mpsc::Receiver<String>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `rawrxd ARGS` in `cwd` with `RUST_LOG=info` and waits for its listening address.
pub fn spawn_binary(args: &[&str], cwd: &std::path::Path) -> Spawned {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rawrxd"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("RAWRXD_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, logs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(20))
            .expect("rawrxd never logged its address");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    Spawned { child, addr, logs }
}

/// An NDJSON line like Ollama streams.
pub fn token_line(i: usize) -> String {
    format!(
        r#"{{"model":"m","created_at":"2025-01-01T00:00:00Z","response":"tok{i} ","done":false}}"#
    )
}

/// The Gemma test model (`RAWRXD_TEST_MODEL`, set by scripts/test.sh).
pub fn model_path() -> std::path::PathBuf {
    let path = std::env::var_os("RAWRXD_TEST_MODEL")
        .map(std::path::PathBuf::from)
        .expect("RAWRXD_TEST_MODEL must name the Gemma 3 270M GGUF (scripts/fetch-model.sh)");
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

/// `rawrxd up` (in a fresh directory, the test model as `gemma3:270m`) with `rules_toml` as
/// its rules; the proxy's address and serve's.
pub fn spawn_up(
    tag: &str,
    rules_toml: &str,
) -> (Spawned, std::net::SocketAddr, std::net::SocketAddr) {
    spawn_up_in(&tempdir(tag), rules_toml)
}

/// As [`spawn_up`], in `dir` (its rules in `dir/rules/request.toml`, which a test may rewrite).
pub fn spawn_up_in(
    dir: &std::path::Path,
    rules_toml: &str,
) -> (Spawned, std::net::SocketAddr, std::net::SocketAddr) {
    let model = format!("gemma3:270m={}", model_path().display());
    spawn_up_serving(dir, rules_toml, &model)
}

/// As [`spawn_up_in`], serving `model` (a `--model` argument: `NAME=PATH` or a path).
pub fn spawn_up_serving(
    dir: &std::path::Path,
    rules_toml: &str,
    model: &str,
) -> (Spawned, std::net::SocketAddr, std::net::SocketAddr) {
    let dir = dir.to_path_buf();
    let (models, rules) = (dir.join("models"), dir.join("rules"));
    std::fs::create_dir_all(&models).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    save(&rules.join("request.toml"), rules_toml);
    let up = spawn_binary(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--serve-listen",
            "127.0.0.1:0",
            "--models",
            models.to_str().unwrap(),
            "--model",
            model,
        ],
        &dir,
    );
    // Each half logs "rawrxd proxy|serve listening on ADDR"; `spawn_binary` has read the
    // first of the two lines (either half may log first).
    let (mut proxy, mut serve): (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) =
        (None, None);
    loop {
        match (proxy, serve) {
            (Some(_), Some(_)) => break,
            (Some(p), None) if p != up.addr => serve = Some(up.addr),
            (None, Some(s)) if s != up.addr => proxy = Some(up.addr),
            _ => {
                let line = up.logs.recv_timeout(Duration::from_secs(30)).unwrap();
                for (half, slot) in [("proxy", &mut proxy), ("serve", &mut serve)] {
                    let marker = format!("rawrxd {half} listening on ");
                    if let Some(rest) = line.split(marker.as_str()).nth(1) {
                        *slot = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    }
                }
            }
        }
    }
    let (proxy, serve) = (proxy.unwrap(), serve.unwrap());
    (up, proxy, serve)
}

/// The unpacked sources of this project's dependencies, found through Cargo.lock.
/// `(name, version)` of every package this build uses on this machine's platform
/// (`cargo metadata --filter-platform HOST`).
fn packages_built_here() -> std::collections::HashSet<(String, String)> {
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-vV")
            .output()
            .unwrap();
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &host,
        ])
        .arg("--manifest-path")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| nodes.contains(id)))
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_string(),
                p["version"].as_str()?.to_string(),
            ))
        })
        .collect()
}

pub fn dependency_sources() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .unwrap();
    let lock = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
    )
    .unwrap();
    let lock: toml::Value = toml::from_str(&lock).unwrap();
    let registries: Vec<std::path::PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .map(|dirs| dirs.flatten().map(|d| d.path()).collect())
        .unwrap_or_default();
    let built = packages_built_here();
    let mut dirs = Vec::new();
    for package in lock["package"].as_array().unwrap() {
        let (Some(name), Some(version)) = (package["name"].as_str(), package["version"].as_str())
        else {
            continue;
        };
        if package.get("source").is_none() {
            continue; // this crate itself
        }
        // Crates for other platforms (objc2 for macOS, r-efi for UEFI…) are in Cargo.lock and
        // may be unpacked in the registry, but they are not part of this build.
        if !built.contains(&(name.to_string(), version.to_string())) {
            continue;
        }
        for registry in &registries {
            let dir = registry.join(format!("{name}-{version}"));
            if dir.is_dir() {
                dirs.push(dir);
                break;
            }
        }
    }
    dirs
}

/// `rawrxd serve` in-process on `127.0.0.1:0` on its own runtime thread, serving the Gemma test
/// model (as `gemma-3-270m-q4_k_m`) with `parallel` slots of `ctx` tokens; its address.
pub fn serve_in_process(parallel: u32, ctx: u32) -> SocketAddr {
    serve_models_in_process(parallel, ctx, vec![model_path().display().to_string()])
}

/// As [`serve_in_process`], serving the model files `models`.
pub fn serve_models_in_process(parallel: u32, ctx: u32, models: Vec<String>) -> SocketAddr {
    launch_serve(serve_config(parallel, ctx, models))
}

/// A validated serve configuration on `127.0.0.1:0` for the model files `models`.
pub fn serve_config(parallel: u32, ctx: u32, models: Vec<String>) -> rawrxd::serve::ServeConfig {
    let args = rawrxd::serve::ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        config: None,
        admin_token: None,
        engine: rawrxd::serve::EngineFlags {
            models: Some(tempdir("serve-no-models")),
            model: models,
            parallel: Some(parallel),
            threads: Some(2),
            ctx_size: Some(ctx),
            queue: Some(16),
            preload: false,
            max_loaded: None,
        },
    };
    args.validate().unwrap()
}

/// Runs `rawrxd serve` with `config` in-process on its own runtime thread; its address.
pub fn launch_serve(config: rawrxd::serve::ServeConfig) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind(config.listen).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let state = Arc::new(rawrxd::serve::ServeState::new(&config));
            rawrxd::serve::run(
                listener,
                state,
                std::future::pending(),
                config.shutdown_grace,
            )
            .await;
        });
    });
    rx.recv().unwrap()
}

/// A blocking JSON POST (for tests that do not run on a runtime): status and body.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = runtime.block_on(call(addr, "POST", path, body.to_string().as_bytes()));
    let value = serde_json::from_slice(&seen.body())
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", seen.text()));
    (seen.status.as_u16(), value)
}

/// A copy of the Gemma test model named `name.gguf` with `template` as its
/// `tokenizer.chat_template` (a new string key: the Gemma file has none), written with the
/// project's GGUF writer (`rawrxd gguf set`'s library call).
pub fn model_with_template(name: &str, template: &str) -> std::path::PathBuf {
    let dir = tempdir(&format!("model-{name}"));
    let out = dir.join(format!("{name}.gguf"));
    let set = format!("tokenizer.chat_template:str={template}");
    rawrxd::gguf::edit::set(&model_path(), &[set], Some(&out), false).unwrap();
    let meta = rawrxd::gguf::read_meta(&out).unwrap();
    assert_eq!(meta.str("tokenizer.chat_template"), Some(template));
    out
}

/// A blocking POST of a JSON body: the response body as text (a stream read to its end).
pub fn post_text(addr: SocketAddr, path: &str, body: &serde_json::Value) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = runtime.block_on(call(addr, "POST", path, body.to_string().as_bytes()));
    assert_eq!(seen.status.as_u16(), 200, "{path}: {}", seen.text());
    seen.text()
}
