//! `rawrxd gguf …`: runs one GGUF command and maps its result to the exit codes scripts rely
//! on (0 ok, 1 mismatch or difference, 2 unreadable or invalid input).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use super::cli::GgufCommand;
use crate::gguf::{self, hash, inspect, GgufError};

/// Runs `command`, reports to `out` (results) and `err` (errors, timings).
pub fn run_gguf(command: GgufCommand, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match run(command, out, err) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn label(path: &Path) -> String {
    path.display().to_string()
}

fn run(command: GgufCommand, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, GgufError> {
    let write = |out: &mut dyn Write, text: &str| -> Result<(), GgufError> {
        out.write_all(text.as_bytes())
            .map_err(gguf::GgufError::io(Path::new("<stdout>")))
    };
    match command {
        GgufCommand::Inspect { file, json, ctx } => {
            let g = gguf::read_file(&file)?;
            let text = if json {
                let mut s = serde_json::to_string_pretty(&inspect::json(&g, &label(&file), ctx))
                    .map_err(|e| GgufError::Refused(e.to_string()))?;
                s.push('\n');
                s
            } else {
                inspect::text(&g, &label(&file), ctx)
            };
            write(out, &text)?;
            Ok(0)
        }
        GgufCommand::Verify {
            file,
            sha256,
            manifest,
        } => {
            let g = gguf::read_file(&file)?;
            if let Some(expected) = sha256 {
                let expected = expected.trim().to_ascii_lowercase();
                let got = hash::sha256_file(&file, &hash::Progress::bytes(g.file_len, "sha256"))?;
                if got != expected {
                    return Err(GgufError::Mismatch(format!(
                        "{}: sha256 {got}, expected {expected}",
                        label(&file)
                    )));
                }
                write(out, &format!("{}: OK (sha256 {got})\n", label(&file)))?;
            } else if let Some(manifest) = manifest {
                let text = std::fs::read_to_string(&manifest).map_err(GgufError::io(&manifest))?;
                let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
                let lines = hash::parse_manifest(&text, &names)?;
                let hashes =
                    hash::tensor_hashes(&file, &g, &hash::Progress::bytes(g.data_size, "sha256"))?;
                let v = hash::check_manifest(&lines, &hashes);
                if !v.problems.is_empty() {
                    return Err(GgufError::Mismatch(format!(
                        "{}: {} of {} manifest lines do not match:\n  {}",
                        label(&file),
                        v.problems.len(),
                        v.checked,
                        v.problems.join("\n  ")
                    )));
                }
                write(
                    out,
                    &format!("{}: OK ({} hashes match)\n", label(&file), v.checked),
                )?;
            } else {
                write(
                    out,
                    &format!(
                        "{}: OK (GGUF v{}, {} tensors, layout checked)\n",
                        label(&file),
                        g.version,
                        g.tensors.len()
                    ),
                )?;
            }
            Ok(0)
        }
        GgufCommand::Hash {
            file,
            per_tensor,
            out: dest,
        } => {
            let text = if per_tensor {
                let g = gguf::read_file(&file)?;
                let hashes =
                    hash::tensor_hashes(&file, &g, &hash::Progress::bytes(g.data_size, "sha256"))?;
                hash::manifest(&label(&file), &hashes, true)
            } else {
                let len = std::fs::metadata(&file)
                    .map_err(GgufError::io(&file))?
                    .len();
                let h = hash::sha256_file(&file, &hash::Progress::bytes(len, "sha256"))?;
                format!("{h}  {}\n", label(&file))
            };
            match dest {
                Some(dest) => std::fs::write(&dest, text).map_err(GgufError::io(&dest))?,
                None => write(out, &text)?,
            }
            Ok(0)
        }
        GgufCommand::Set {
            file,
            assignments,
            out: dest,
            in_place,
        } => {
            let done = gguf::edit::set(&file, &assignments, dest.as_deref(), in_place)?;
            let target = dest.as_deref().unwrap_or(&file);
            write(
                out,
                &format!(
                    "{}: {} bytes written{}\n",
                    label(target),
                    done.bytes_written,
                    if done.in_place {
                        " (header, in place)"
                    } else {
                        ""
                    }
                ),
            )?;
            Ok(0)
        }
        GgufCommand::Diff { a, b } => {
            let lines = gguf::edit::diff(&a, &b)?;
            for l in &lines {
                write(out, &format!("{l}\n"))?;
            }
            Ok(u8::from(!lines.is_empty()))
        }
        GgufCommand::Patch {
            file,
            plan,
            out: dest,
            export,
        } => {
            let started = Instant::now();
            let (ops, expect) = gguf::patch::load_plan(&plan)?;
            let done =
                gguf::patch::patch_file(&file, &ops, expect.as_ref(), &dest, export.as_deref())?;
            for (op, changes) in done.patch_set.ops.iter().zip(&done.patch_set.changes) {
                let op = serde_json::to_string(op).unwrap_or_default();
                write(out, &format!("{op}\n"))?;
                for c in changes {
                    write(
                        out,
                        &format!("  {}: {} → {}\n", c.tensor, c.before, c.after),
                    )?;
                }
            }
            write(
                out,
                &format!(
                    "{}: {} bytes of tensor data rewritten ({} copied by the kernel), backup {} \
                     ({} bytes), patch set {}, {:.3} s\n",
                    label(&dest),
                    done.bytes_patched,
                    done.bytes_copied,
                    label(&done.backup_path),
                    done.backup_bytes,
                    label(&done.patch_set_path),
                    started.elapsed().as_secs_f64()
                ),
            )?;
            let _ = err.flush();
            Ok(0)
        }
        GgufCommand::Revert {
            file,
            patch_set,
            out: dest,
        } => {
            let set = patch_set.unwrap_or_else(|| gguf::patch::default_patch_set_path(&file));
            let target = dest.unwrap_or_else(|| file.clone());
            let n = gguf::patch::revert_file(&file, &set, &target)?;
            write(
                out,
                &format!("{}: {n} bytes of tensor data restored\n", label(&target)),
            )?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use clap::Parser;

    /// A one-tensor GGUF (f32 [8], value 1.0..8.0) as ggml writes it.
    fn tiny() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(12u64.to_le_bytes());
        b.extend(b"general.name");
        b.extend(8u32.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(b"tiny");
        b.extend(1u64.to_le_bytes());
        b.extend(b"w");
        b.extend(1u32.to_le_bytes());
        b.extend(8i64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.resize(b.len().div_ceil(32) * 32, 0);
        for i in 1..=8 {
            b.extend((i as f32).to_le_bytes());
        }
        b
    }

    /// Runs `rawrxd gguf ARGS…`: (exit code, stdout, stderr).
    fn gguf(args: &[&str]) -> (u8, String, String) {
        let cli =
            super::super::cli::Cli::try_parse_from(["rawrxd", "gguf"].iter().chain(args.iter()))
                .unwrap();
        let super::super::cli::Command::Gguf(command) = cli.command else {
            panic!("not a gguf command");
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = match run(command, &mut out, &mut err) {
            Ok(code) => code,
            Err(e) => {
                err.extend(e.to_string().as_bytes());
                e.exit_code()
            }
        };
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn exit_codes_are_0_ok_1_mismatch_2_invalid() {
        let dir = std::env::temp_dir().join(format!("rawrxd-gguf-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.gguf");
        std::fs::write(&file, tiny()).unwrap();
        let f = file.to_str().unwrap();

        let (code, out, _) = gguf(&["inspect", f]);
        assert_eq!(code, 0);
        assert!(out.contains("parameters:  8"), "{out}");
        let (code, out, _) = gguf(&["inspect", "--json", f]);
        assert_eq!(code, 0);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["tensors"][0]["name"], "w");

        let (code, out, _) = gguf(&["hash", f]);
        assert_eq!(code, 0);
        let sha = out.split_whitespace().next().unwrap().to_string();
        assert_eq!(gguf(&["verify", f, "--sha256", &sha]).0, 0);
        let (code, _, err) = gguf(&["verify", f, "--sha256", &"0".repeat(64)]);
        assert_eq!(code, 1, "{err}");

        let manifest = dir.join("m.txt");
        let m = manifest.to_str().unwrap();
        assert_eq!(gguf(&["hash", f, "--per-tensor", "--out", m]).0, 0);
        assert_eq!(gguf(&["verify", f, "--manifest", m]).0, 0);

        let copy = dir.join("c.gguf");
        let c = copy.to_str().unwrap();
        assert_eq!(gguf(&["set", f, "general.name=tinz", "--out", c]).0, 0);
        assert_eq!(gguf(&["diff", f, f]).0, 0);
        let (code, out, _) = gguf(&["diff", f, c]);
        assert_eq!(code, 1);
        assert!(out.contains("general.name"), "{out}");

        let plan = dir.join("plan.toml");
        std::fs::write(
            &plan,
            "[[op]]\nop = \"scale\"\ntensor = \"w\"\nfactor = 3\n",
        )
        .unwrap();
        let patched = dir.join("p.gguf");
        let p = patched.to_str().unwrap();
        let (code, out, err) = gguf(&["patch", f, "--plan", plan.to_str().unwrap(), "--out", p]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("32 bytes of tensor data rewritten"), "{out}");
        // The patched file fails the original's manifest (exit 1), revert makes it pass.
        let (code, _, err) = gguf(&["verify", p, "--manifest", m]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("tensor w"), "{err}");
        assert_eq!(gguf(&["revert", p]).0, 0);
        assert_eq!(std::fs::read(&patched).unwrap(), tiny());

        // Unreadable or invalid: 2, with the reason.
        let bad = dir.join("bad.gguf");
        let mut bytes = tiny();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&bad, &bytes).unwrap();
        for args in [
            vec!["inspect", bad.to_str().unwrap()],
            vec!["verify", bad.to_str().unwrap()],
            vec!["hash", "--per-tensor", bad.to_str().unwrap()],
            vec!["inspect", "/nonexistent/x.gguf"],
        ] {
            let (code, _, err) = gguf(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(
                err.contains("runs past the end") || err.contains("cannot read"),
                "{args:?}: {err}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
