//! The official Python clients (`ollama`, `openai`) against the real `rawrxd serve` binary,
//! directly and through the real `rawrxd proxy` binary: `tests/clients/test_clients.py` does
//! the talking, this harness starts the servers on port 0 and fails when any check fails.
//! Needs python3 with `pip install -r tests/clients/requirements.txt` and the test model
//! (`scripts/fetch-model.sh`); it fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
#![allow(clippy::print_stdout)] // the script's report is printed when the test passes

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rawrxd");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/test_clients.py");
const MODEL: &str = "gemma-3-270m-q4_k_m";

/// Endpoint groups `rawrxd serve` does not support: the script reports their checks as
/// "expected to fail: endpoint missing or unsupported" instead of failing; anything else in
/// them still fails. Groups: embed, copy, delete, pull, create, push (`manage` = the last five).
/// Only push is refused by design (there is no registry to push to; it answers 400 saying
/// so). The script prints "[passes: drop …]" once a tolerated group passes.
const ALLOW_MISSING: &str = "push";

/// Longest a whole script run may take (a debug build of llama.cpp on two shared cores).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(20 * 60);

fn model_path() -> PathBuf {
    let path = std::env::var_os("RAWRXD_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("RAWRXD_MODEL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/rawrxd/models")
                });
            cache.join(format!("{MODEL}.gguf"))
        });
    assert!(
        path.is_file(),
        "test model {} not found: run scripts/fetch-model.sh (or set RAWRXD_TEST_MODEL)",
        path.display()
    );
    path
}

/// A running `rawrxd` subcommand, killed on drop; keeps every line it logs.
struct Running {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn spawn(name: &'static str, args: &[&std::ffi::OsStr], dir: &Path) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("RAWRXD_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, first) = mpsc::channel();
        let kept = logs.clone();
        // Drains stderr for the whole life of the child, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = match first.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => panic!(
                "rawrxd {name} never logged its address; its log:\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        Running {
            name,
            child,
            addr,
            logs,
        }
    }

    fn log_tail(&self) -> String {
        let logs = self.logs.lock().unwrap();
        let start = logs.len().saturating_sub(40);
        format!(
            "last lines of rawrxd {}'s log:\n{}",
            self.name,
            logs[start..].join("\n")
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "rawrxd-clients-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails (never skips) when python3 or the client packages are missing.
fn require_python_clients() {
    let probe = Command::new("python3")
        .args(["-c", "import ollama, openai"])
        .output();
    match probe {
        Err(error) => panic!(
            "python3 not runnable ({error}): install Python 3, then \
             pip install -r tests/clients/requirements.txt"
        ),
        Ok(out) if !out.status.success() => panic!(
            "the Python client packages are missing: pip install -r tests/clients/requirements.txt\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

/// Runs the script against `base`; panics with its output (and the servers' logs) on failure.
fn run_script(label: &str, base: &str, servers: &[&Running]) {
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args([
            "--base",
            base,
            "--model",
            MODEL,
            "--allow-missing",
            ALLOW_MISSING,
        ])
        .arg("--gguf")
        .arg(model_path())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let finished = output
        .lines()
        .any(|l| l.starts_with("clients: ") && l.contains(" passed, 0 failed"));
    let logs: Vec<String> = servers.iter().map(|s| s.log_tail()).collect();
    match status {
        Some(status) if status.success() && finished => {
            println!("== {label} ({:.0?}) ==\n{output}", started.elapsed());
        }
        Some(status) => panic!(
            "client checks {label} failed ({status}):\n{output}\n{}",
            logs.join("\n")
        ),
        None => panic!(
            "client checks {label} did not finish within {SCRIPT_DEADLINE:?}:\n{output}\n{}",
            logs.join("\n")
        ),
    }
}

/// Both runs in one test: one server, used by one script at a time (same-seed checks compare
/// generations that must not be batched with others).
#[test]
fn official_python_clients_direct_and_through_the_proxy() {
    require_python_clients();
    let model = model_path();
    let dir = tempdir("serve");
    // The pull check downloads from a file server on 127.0.0.1, which serve refuses unless
    // allowed (rawrxd.toml in serve's working directory).
    std::fs::write(
        dir.join("rawrxd.toml"),
        "[serve]\npull_allowed_hosts = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let serve = Running::spawn(
        "serve",
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--models".as_ref(),
            dir.join("no-models").as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
            "--parallel".as_ref(),
            "4".as_ref(),
        ],
        &dir,
    );
    run_script("direct", &format!("http://{}", serve.addr), &[&serve]);

    let pdir = tempdir("proxy");
    let rules = pdir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let upstream = format!("http://{}", serve.addr);
    let proxy = Running::spawn(
        "proxy",
        &[
            "proxy".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--upstream".as_ref(),
            upstream.as_ref(),
            "--rules".as_ref(),
            rules.as_os_str(),
            "--db".as_ref(),
            pdir.join("rawrxd.db").as_os_str(),
            "--log-dir".as_ref(),
            pdir.join("logs").as_os_str(),
        ],
        &pdir,
    );
    run_script(
        "through the proxy",
        &format!("http://{}", proxy.addr),
        &[&proxy, &serve],
    );
    drop(proxy);
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pdir);
}
