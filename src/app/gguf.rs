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
