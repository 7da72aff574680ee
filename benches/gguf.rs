//! `rawrxd gguf`, measured on the Gemma 3 270M file (`RAWRXD_TEST_MODEL`, default
//! `~/.cache/rawrxd/models/gemma-3-270m-q4_k_m.gguf`), with the file in the page cache:
//!
//! * **inspect**: reading and checking the header plus building the text report (target
//!   ≤ 20 ms), against gguf-py's `GGUFReader` on the same file (`GGUF_PY`, default
//!   `.venv/bin/python`, with `gguf` 0.19 installed: `python3 -m venv .venv &&
//!   .venv/bin/pip install 'gguf==0.19.*'`);
//! * **hash**: whole-file sha256 and per-tensor sha256 (target ≥ 1 GB/s), against `sha256sum`;
//! * **patch**: `bypass_layer` of one layer — the time, the bytes of tensor data rewritten, and
//!   the bytes the copy took.
//!
//! `cargo bench --bench gguf`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // bench code

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rawrxd::gguf::{hash, inspect, patch, read_file};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let model = std::env::var_os("RAWRXD_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/rawrxd/models/gemma-3-270m-q4_k_m.gguf")
        });
    if !model.exists() {
        println!("no model at {} (set RAWRXD_TEST_MODEL)", model.display());
        return;
    }
    let len = std::fs::metadata(&model).unwrap().len();
    // Into the page cache.
    std::hint::black_box(std::fs::read(&model).unwrap());
    println!("file: {} ({len} bytes)", model.display());

    let inspect_t = time(21, || {
        let g = read_file(&model).unwrap();
        inspect::text(&g, "m", None).len()
    });
    let read_t = time(21, || read_file(&model).unwrap().tensors.len());
    println!(
        "inspect (read + check header + text report): median {:.2} ms (header only {:.2} ms)",
        ms(inspect_t),
        ms(read_t)
    );
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/rawrxd");
    if exe.exists() {
        let cli = time(11, || {
            Command::new(&exe)
                .args(["gguf", "inspect"])
                .arg(&model)
                .output()
                .unwrap()
        });
        println!(
            "  `rawrxd gguf inspect` process, end to end: median {:.2} ms",
            ms(cli)
        );
    }
    let py = std::env::var_os("GGUF_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let script = "import sys,time,gguf\nts=[]\nfor _ in range(5):\n  t=time.perf_counter(); r=gguf.GGUFReader(sys.argv[1]); n=len(r.tensors); ts.append(time.perf_counter()-t)\nts.sort(); print(gguf.__version__ if hasattr(gguf,'__version__') else '?', ts[2]*1e3, n)";
    match Command::new(&py).args(["-c", script]).arg(&model).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let parts: Vec<&str> = text.split_whitespace().collect();
            let py_ms: f64 = parts
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            println!(
                "  gguf-py GGUFReader (in-process, median of 5): {py_ms:.2} ms, {} tensors → \
                 rawrxd {:.1}× faster",
                parts.get(2).unwrap_or(&"?"),
                py_ms / ms(inspect_t)
            );
        }
        other => println!("  gguf-py not run ({}): {other:?}", py.display()),
    }

    let whole = time(5, || {
        hash::sha256_file(&model, &hash::Progress::none()).unwrap()
    });
    println!(
        "hash (whole-file sha256): median {:.1} ms = {:.2} GB/s",
        ms(whole),
        gbps(len, whole)
    );
    let g = read_file(&model).unwrap();
    let per = time(5, || {
        hash::tensor_hashes(&model, &g, &hash::Progress::none()).unwrap()
    });
    println!(
        "hash --per-tensor ({} tensors + model line): median {:.1} ms = {:.2} GB/s of tensor data",
        g.tensors.len(),
        ms(per),
        gbps(g.data_size, per)
    );
    let sum = time(5, || {
        Command::new("sha256sum").arg(&model).output().unwrap()
    });
    println!(
        "  sha256sum (process): median {:.1} ms = {:.2} GB/s → rawrxd {:.2}× its speed",
        ms(sum),
        gbps(len, sum),
        sum.as_secs_f64() / whole.as_secs_f64()
    );

    let dir = std::env::temp_dir().join(format!("rawrxd-bench-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("patched.gguf");
    let mut last = None;
    let patch_t = time(5, || {
        let done = patch::patch_file(
            &model,
            &[patch::Op::BypassLayer { layer: 5 }],
            None,
            &out,
            None,
        )
        .unwrap();
        last = Some(done.clone());
        done
    });
    let done = last.unwrap();
    println!(
        "patch bypass_layer 5: median {:.1} ms; {} bytes of tensor data rewritten ({:.2}% of the \
         file), {} bytes copied by the kernel (copy_file_range), backup {} bytes gzip",
        ms(patch_t),
        done.bytes_patched,
        done.bytes_patched as f64 * 100.0 / len as f64,
        done.bytes_copied,
        done.backup_bytes
    );
    let _ = std::fs::remove_dir_all(&dir);
}
