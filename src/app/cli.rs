//! The command line (clap). Lives in the library so tests can check `--help` and the
//! flag-to-config mapping without spawning the binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ProxyOverrides;

#[derive(Debug, Parser)]
#[command(
    name = "rawrxd",
    version,
    about = "Transparent hot-patching proxy for local LLM servers (Ollama API)",
    long_about = "rawrxd sits between an IDE or coding agent and a local model server that speaks \
                  the Ollama API. Point the client at http://127.0.0.1:11435 instead of :11434 \
                  and it gets the same API back.\n\n\
                  Configuration precedence: built-in defaults < rawrxd.toml < RAWRXD_* \
                  environment variables < command-line flags. Set RUST_LOG (e.g. \
                  RUST_LOG=rawrxd=debug) to change how much is logged."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the reverse proxy in front of an Ollama-compatible server.
    Proxy(ProxyArgs),
    /// Serve GGUF models with an Ollama-compatible API (llama.cpp).
    Serve(crate::serve::ServeArgs),
    /// `serve` and `proxy` in one process; the proxy's upstream is this serve.
    Up(UpArgs),
    /// Check rule files, or try rules on a text, without a server.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Read the audit trail: logs/corrections.log and the corrections table.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Inspect, hash, verify, edit and patch GGUF model files (exit codes: 0 ok, 1 mismatch or
    /// difference, 2 unreadable or invalid).
    #[command(subcommand)]
    Gguf(GgufCommand),
}

#[derive(Debug, Subcommand)]
pub enum GgufCommand {
    /// Header, metadata (long arrays summarized), tensor table (name, type, shape, offset,
    /// bytes), totals by type, parameter count and the memory a context needs (weights + f16
    /// KV cache). Reads only the header.
    Inspect {
        file: PathBuf,
        /// JSON instead of text
        #[arg(long)]
        json: bool,
        /// Context length for the memory estimate [default: the model's context_length]
        #[arg(long, value_name = "N")]
        ctx: Option<u64>,
    },
    /// Check a file: its header and layout (always), its sha256 (--sha256), or its tensors
    /// against a `rawrxd gguf hash --per-tensor` / `llama-gguf-hash --sha256` manifest. Exit 1
    /// on a mismatch, 2 when unreadable or invalid.
    Verify {
        file: PathBuf,
        /// Expected sha256 of the whole file (hex)
        #[arg(long, value_name = "HEX", conflicts_with = "manifest")]
        sha256: Option<String>,
        /// Manifest of per-tensor sha256 lines (`sha256  <hex>  <file>:<tensor>`)
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
    /// sha256 of the whole file (`<hex>  <file>`, as sha256sum), or with --per-tensor a manifest
    /// in llama-gguf-hash's format (one line per tensor, then all tensor data together).
    Hash {
        file: PathBuf,
        /// One line per tensor, as `llama-gguf-hash --sha256`
        #[arg(long)]
        per_tensor: bool,
        /// Write the result to this file instead of standard output
        #[arg(long, value_name = "MANIFEST")]
        out: Option<PathBuf>,
    },
    /// Set metadata: KEY=VALUE keeps the key's type; KEY:TYPE=VALUE gives it (u8 i8 u16 i16 u32
    /// i32 u64 i64 f32 f64 bool str; a new key without a type is inferred: true/false bool,
    /// integer u32 (i32 if negative, u64/i64 if larger), number f32, else str).
    Set {
        file: PathBuf,
        /// KEY=VALUE or KEY:TYPE=VALUE
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        /// Write the edited model here (atomically: temporary file, then rename)
        #[arg(long, value_name = "NEW", required_unless_present = "in_place")]
        out: Option<PathBuf>,
        /// Rewrite FILE's header in place; refused when the data would move (size changes)
        #[arg(long, conflicts_with = "out")]
        in_place: bool,
    },
    /// Metadata and tensor differences between two files (tensor data compared by sha256);
    /// exit 1 when they differ.
    Diff { a: PathBuf, b: PathBuf },
    /// Apply a weight patch plan (TOML `[[op]]`: scale, zero, bypass_layer, copy, swap, write)
    /// or re-apply a patch set (.json) to a copy of FILE written atomically to --out; writes the
    /// patch set (hashes before/after) and a gzip backup of the touched tensors.
    Patch {
        file: PathBuf,
        /// Plan (TOML) or patch set (JSON) to re-apply
        #[arg(long, value_name = "PLAN")]
        plan: PathBuf,
        /// The patched model
        #[arg(long, value_name = "NEW")]
        out: PathBuf,
        /// Where the patch set goes [default: NEW.patch.json; backup: NEW.patch.backup.gz]
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Restore the original bytes of the tensors a patch touched, from its gzip backup, checking
    /// the recorded hashes before and after.
    Revert {
        /// The patched model
        file: PathBuf,
        /// The patch set `patch` wrote [default: FILE.patch.json]
        #[arg(long, value_name = "FILE")]
        patch_set: Option<PathBuf>,
        /// Write the restored model here [default: replace FILE, atomically]
        #[arg(long, value_name = "NEW")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the last lines of corrections.log; with -f, keep printing new ones.
    Tail {
        /// How many lines
        #[arg(short = 'n', long, value_name = "N", default_value_t = 20)]
        lines: usize,
        /// Keep printing lines as they are written (follows rotation); stop with Ctrl-C
        #[arg(short, long)]
        follow: bool,
        /// Log directory [default: proxy.log_dir of the config, else logs]
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Config file; without it ./rawrxd.toml is read when present
        #[arg(long, value_name = "FILE", env = "RAWRXD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Search stored corrections (full-text: every word must appear in the rule id, the
    /// detected or corrected text, or the model name).
    Search {
        /// Words to look for; none lists the newest corrections
        query: Vec<String>,
        /// Only this rule id
        #[arg(long, value_name = "ID")]
        rule: Option<String>,
        /// Only since this time: 2025-01-20T14:00:00Z, a duration back (15m, 2h) or Unix ms
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Most corrections shown (the newest)
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of log lines
        #[arg(long)]
        json: bool,
        /// SQLite database [default: proxy.db of the config, else rawrxd.db]
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Config file; without it ./rawrxd.toml is read when present
        #[arg(long, value_name = "FILE", env = "RAWRXD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files; prints every problem and exits non-zero if there is one.
    Check {
        /// Rule files to check; without any, every *.toml in --rules
        files: Vec<PathBuf>,
        /// Rule directory [default: rules]
        #[arg(long, value_name = "DIR", default_value = "rules")]
        rules: PathBuf,
    },
    /// Apply the rules to a model's text (--input) or to a request body (--request) and show
    /// the result and which rules fired.
    Test {
        /// The model's text, or a path to a file holding it: runs the response-side rules
        #[arg(
            long,
            value_name = "TEXT|FILE",
            required_unless_present = "request",
            conflicts_with = "request"
        )]
        input: Option<String>,
        /// A request body (JSON file) as a client would send it: runs the request-side rules
        /// and prints the body the upstream would get
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
        /// Rule directory [default: rules]
        #[arg(long, value_name = "DIR", default_value = "rules")]
        rules: PathBuf,
        /// Model name the rules are selected for [default: the request's `model`, else none]
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Endpoint the rules are selected for: generate, chat, openai_chat, openai_completions
        /// [default: generate; with --request, chat when the body has `messages`]
        #[arg(long, value_name = "ENDPOINT")]
        endpoint: Option<String>,
        /// Workspace for path rules: every `path` rule looks in DIR instead of its roots (and
        /// one is added when the rules have none), so `--root . --input "see src/mian.rs"`
        /// shows what a path rule would do here
        #[arg(long, value_name = "DIR", conflicts_with = "request")]
        root: Option<PathBuf>,
    },
    /// List the rules in a directory.
    List {
        /// Rule directory [default: rules]
        #[arg(long, value_name = "DIR", default_value = "rules")]
        rules: PathBuf,
    },
}

/// Flags of `rawrxd proxy`; each maps to a `[proxy]` key of rawrxd.toml and to a
/// `RAWRXD_PROXY_<KEY>` environment variable.
#[derive(Debug, Args, Default)]
pub struct ProxyArgs {
    /// Address to listen on [default: 127.0.0.1:11435]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Base URL of the upstream model server [default: http://127.0.0.1:11434]
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,

    /// Directory of rules/*.toml files [default: rules]
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,

    /// SQLite database file [default: rawrxd.db]
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Directory for corrections.log and navigation_fixes.log [default: logs]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Config file; without it ./rawrxd.toml is read when present
    #[arg(long, value_name = "FILE", env = "RAWRXD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Largest request body accepted, e.g. 100MiB; larger ones get 413 [default: 100MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,

    /// How long to wait for the upstream's response headers before answering 504; first
    /// tokens can take minutes on CPU [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// How long to wait for a TCP connection to the upstream before answering 502 [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,

    /// Most client connections served at once; more wait in the listen backlog [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGINT/SIGTERM, how long in-flight requests may finish before exit [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,

    /// Bearer token for rawrxd's state-changing endpoints; required to listen off loopback
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
}

impl ProxyArgs {
    /// The flags that were given, as the top configuration layer.
    pub fn overrides(&self) -> ProxyOverrides {
        ProxyOverrides {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            rules: self.rules.clone(),
            db: self.db.clone(),
            log_dir: self.log_dir.clone(),
            max_body: self.max_body.clone(),
            header_timeout: self.header_timeout.clone(),
            connect_timeout: self.connect_timeout.clone(),
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace.clone(),
            admin_token: self.admin_token.clone(),
        }
    }
}

/// Flags of `rawrxd up`: every proxy flag (including `--config`, read for both halves), and
/// serve's flags with serve's address as `--serve-listen` (the proxy's upstream; `--listen` is
/// the proxy's).
#[derive(Debug, Args, Default)]
pub struct UpArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Address `serve` listens on; the proxy forwards to it [default: 127.0.0.1:11434]
    #[arg(long, value_name = "ADDR")]
    pub serve_listen: Option<String>,

    #[command(flatten)]
    pub engine: crate::serve::EngineFlags,
}

impl UpArgs {
    /// The serve half, as `rawrxd serve` flags (same config file).
    pub fn serve_args(&self) -> crate::serve::ServeArgs {
        crate::serve::ServeArgs {
            listen: self.serve_listen.clone(),
            config: self.proxy.config.clone(),
            admin_token: None,
            engine: self.engine.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn proxy_help_lists_every_contract_flag() {
        let help = Cli::command()
            .find_subcommand_mut("proxy")
            .unwrap()
            .render_long_help()
            .to_string();
        for flag in [
            "--listen",
            "--upstream",
            "--rules",
            "--db",
            "--log-dir",
            "--config",
            "--max-body",
            "--header-timeout",
            "--max-connections",
            "--shutdown-grace",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn flags_become_overrides() {
        let cli = Cli::try_parse_from([
            "rawrxd",
            "proxy",
            "--listen",
            "127.0.0.1:9",
            "--max-body",
            "1KiB",
        ])
        .unwrap();
        let Command::Proxy(args) = cli.command else {
            panic!("parsed as another command");
        };
        let overrides = args.overrides();
        assert_eq!(overrides.listen.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(overrides.max_body.as_deref(), Some("1KiB"));
        assert_eq!(overrides.upstream, None);
    }
}
