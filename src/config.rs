//! Configuration: built-in defaults < `rawrxd.toml` < `RAWRXD_*` environment < flags.
//!
//! Two types, as STYLE.md asks: [`RawConfig`] is shaped like the file (unknown keys are an
//! error that names the key) and is merged by figment from every source; [`ProxyConfig`] is the
//! validated runtime form, reached only through [`RawProxy::validate`], which reports every
//! problem at once.
//!
//! Environment variables map onto sections by prefix: `RAWRXD_PROXY_LISTEN` sets
//! `proxy.listen`, `RAWRXD_PROXY_MAX_BODY` sets `proxy.max_body`, `RAWRXD_SERVE_CTX` sets
//! `serve.ctx`. Other `RAWRXD_*` variables are not configuration and are ignored.
//!
//! `[serve]` (for `rawrxd serve` and `rawrxd up`) is validated by [`crate::serve`], which owns
//! what its values mean.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use http::Uri;
use serde::{Deserialize, Serialize};

/// The sections of `rawrxd.toml`; an environment variable `RAWRXD_<SECTION>_<KEY>` sets
/// `<section>.<key>`.
const SECTIONS: &[&str] = &["proxy", "serve"];

/// Default config file, read from the working directory when it exists.
pub const DEFAULT_CONFIG_FILE: &str = "rawrxd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub serve: RawServe,
}

/// `[serve]` as written by the user; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawServe {
    /// Address `rawrxd serve` listens on.
    pub listen: String,
    /// Models directory (`None`: the user's data directory).
    pub models: Option<PathBuf>,
    /// Named GGUF files: `"gemma3:270m" = "/path/to/file.gguf"`.
    pub model: std::collections::BTreeMap<String, PathBuf>,
    /// Sequence slots per loaded model.
    pub parallel: u32,
    /// Inference threads (`None`: the physical cores).
    pub threads: Option<u32>,
    /// Context length of each slot, in tokens.
    pub ctx: u32,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Load the configured models at start.
    pub preload: bool,
    /// Most models loaded at once; loading another unloads the least recently used idle one.
    pub max_loaded: usize,
}

impl Default for RawServe {
    fn default() -> Self {
        RawServe {
            listen: "127.0.0.1:11434".into(),
            models: None,
            model: Default::default(),
            parallel: 4,
            threads: None,
            ctx: 4096,
            queue: 64,
            preload: false,
            max_loaded: 2,
        }
    }
}

/// `[serve]` values given on the command line; `None` (or empty) leaves the lower layers in
/// charge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub model: std::collections::BTreeMap<String, PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_loaded: Option<usize>,
}

/// `[proxy]` as written by the user; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// Address the proxy listens on.
    pub listen: String,
    /// Base URL of the upstream model server.
    pub upstream: String,
    /// Directory of `*.toml` rule files.
    pub rules: PathBuf,
    /// SQLite database file.
    pub db: PathBuf,
    /// Directory for `corrections.log` and friends.
    pub log_dir: PathBuf,
    /// Largest request body accepted, bytes or a size such as "100MiB".
    pub max_body: ByteSize,
    /// How long to wait for the upstream's response headers ("10m", "90s").
    pub header_timeout: String,
    /// How long to wait for a TCP connection to the upstream.
    pub connect_timeout: String,
    /// Most client connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long in-flight requests may run after SIGINT/SIGTERM before the proxy exits.
    pub shutdown_grace: String,
    /// Bearer token for state-changing admin endpoints; required off loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Size at which `corrections.log` is rotated (and gzipped).
    pub audit_max_size: ByteSize,
    /// Rotated logs kept (`corrections.log.1.gz` …).
    pub audit_keep: usize,
}

impl Default for RawProxy {
    fn default() -> Self {
        RawProxy {
            listen: "127.0.0.1:11435".into(),
            upstream: "http://127.0.0.1:11434".into(),
            rules: "rules".into(),
            db: "rawrxd.db".into(),
            log_dir: "logs".into(),
            max_body: ByteSize::Text("100MiB".into()),
            header_timeout: "10m".into(),
            connect_timeout: "5s".into(),
            max_connections: 1024,
            shutdown_grace: "30s".into(),
            admin_token: None,
            audit_max_size: ByteSize::Text("32MiB".into()),
            audit_keep: 5,
        }
    }
}

/// A byte count written either as an integer or as text with a unit ("512KiB", "100MB").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    /// The size in bytes, or a message saying what is wrong with the text.
    pub fn to_bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Text(text) => parse_size(text),
        }
    }
}

/// Parses "1048576", "512KiB", "100 MiB", "2GB" (binary and decimal units, case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try \"100MiB\" or a byte count)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("{text:?} has an unknown unit {other:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

#[derive(Serialize)]
struct OverrideLayer<'a> {
    proxy: &'a ProxyOverrides,
    serve: &'a ServeOverrides,
}

/// Merges every layer. `file` is the `--config` path: when given it must exist; when not,
/// `rawrxd.toml` in the working directory is read if present.
pub fn load(file: Option<&Path>, overrides: &ProxyOverrides) -> Result<RawConfig, ConfigError> {
    load_all(file, overrides, &ServeOverrides::default())
}

/// [`load`] with command-line values for `[serve]` too (`rawrxd serve`, `rawrxd up`).
pub fn load_all(
    file: Option<&Path>,
    overrides: &ProxyOverrides,
    serve: &ServeOverrides,
) -> Result<RawConfig, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    match file {
        Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_path_buf())),
        Some(path) => figment = figment.merge(Toml::file_exact(path)),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
            figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
        }
        None => {}
    }
    let env = Env::prefixed("RAWRXD_").filter_map(|key| {
        let key = key.as_str().to_ascii_lowercase();
        SECTIONS.iter().find_map(|section| {
            let rest = key.strip_prefix(section)?.strip_prefix('_')?;
            Some(format!("{section}.{rest}").into())
        })
    });
    figment = figment
        .merge(env)
        .merge(Serialized::defaults(OverrideLayer {
            proxy: overrides,
            serve,
        }));
    figment
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

/// Parses the text of a config file on its own (no other layers), as `rawrxd.toml` would be
/// read; used by `rules check`-style validation and by the fuzz target.
pub fn from_toml_str(text: &str) -> Result<RawConfig, ConfigError> {
    Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

/// The upstream's base URL, split into what the request path needs.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamUrl {
    /// As the user wrote it, without a trailing slash: for logs and health.
    pub text: String,
    pub authority: http::uri::Authority,
    /// Path prefix joined in front of every request path ("" for none).
    pub path_prefix: String,
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("upstream {text:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "upstream {text:?}: scheme {other:?} is not supported (use http://)"
                ))
            }
            None => {
                return Err(format!(
                    "upstream {text:?} needs a scheme, e.g. http://{text}"
                ))
            }
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream {text:?} has no host"))?;
        if uri.query().is_some() {
            return Err(format!("upstream {text:?} must not have a query string"));
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            text: text.trim_end_matches('/').to_string(),
            authority,
            path_prefix,
        })
    }
}

/// The validated proxy configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub upstream: UpstreamUrl,
    pub rules_dir: PathBuf,
    pub db_path: PathBuf,
    pub log_dir: PathBuf,
    pub max_body: u64,
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub admin_token: Option<String>,
    pub audit_max_size: u64,
    pub audit_keep: usize,
}

impl RawProxy {
    /// Checks every field and reports all problems together.
    pub fn validate(&self) -> Result<ProxyConfig, ConfigError> {
        let mut errors = Vec::new();
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                errors.push(format!(
                    "proxy.listen: {:?} is not an address like 127.0.0.1:11435",
                    self.listen
                ))
            })
            .ok();
        let upstream = UpstreamUrl::parse(&self.upstream)
            .map_err(|e| errors.push(format!("proxy.upstream: {e}")))
            .ok();
        let max_body = self
            .max_body
            .to_bytes()
            .map_err(|e| errors.push(format!("proxy.max_body: {e}")))
            .ok();
        let audit_max_size = match self.audit_max_size.to_bytes() {
            Ok(0) => {
                errors.push("proxy.audit_max_size must be more than 0".into());
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(format!("proxy.audit_max_size: {e}"));
                None
            }
        };
        let mut duration = |field: &str, text: &str| {
            humantime::parse_duration(text)
                .map_err(|e| errors.push(format!("proxy.{field}: {text:?}: {e}")))
                .ok()
        };
        let header_timeout = duration("header_timeout", &self.header_timeout);
        let connect_timeout = duration("connect_timeout", &self.connect_timeout);
        let shutdown_grace = duration("shutdown_grace", &self.shutdown_grace);
        if self.max_connections == 0 {
            errors.push("proxy.max_connections must be at least 1".into());
        }
        let admin_token = self.admin_token.clone().filter(|t| !t.is_empty());
        if let Some(addr) = listen {
            if !addr.ip().is_loopback() && admin_token.is_none() {
                errors.push(format!(
                    "proxy.listen: {addr} is not a loopback address; set proxy.admin_token \
                     (or --admin-token) before exposing the proxy to the network"
                ));
            }
        }
        match (
            listen,
            upstream,
            max_body,
            header_timeout,
            connect_timeout,
            shutdown_grace,
            audit_max_size,
        ) {
            (
                Some(listen),
                Some(upstream),
                Some(max_body),
                Some(header_timeout),
                Some(connect_timeout),
                Some(shutdown_grace),
                Some(audit_max_size),
            ) if errors.is_empty() => Ok(ProxyConfig {
                listen,
                upstream,
                rules_dir: self.rules.clone(),
                db_path: self.db.clone(),
                log_dir: self.log_dir.clone(),
                max_body,
                header_timeout,
                connect_timeout,
                max_connections: self.max_connections,
                shutdown_grace,
                admin_token,
                audit_max_size,
                audit_keep: self.audit_keep,
            }),
            _ => Err(ConfigError::Invalid(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1 kb"), Ok(1000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn defaults_validate_to_the_contract() {
        let config = RawProxy::default().validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:11435");
        assert_eq!(config.upstream.text, "http://127.0.0.1:11434");
        assert_eq!(config.max_body, 100 << 20);
        assert_eq!(config.rules_dir, PathBuf::from("rules"));
        assert_eq!(config.db_path, PathBuf::from("rawrxd.db"));
        assert_eq!(config.log_dir, PathBuf::from("logs"));
    }

    #[test]
    fn validation_reports_every_error_at_once() {
        let raw = RawProxy {
            listen: "nowhere".into(),
            upstream: "https://example.com".into(),
            header_timeout: "soon".into(),
            max_body: ByteSize::Text("lots".into()),
            ..RawProxy::default()
        };
        let ConfigError::Invalid(errors) = raw.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("proxy.listen")));
        assert!(errors.iter().any(|e| e.starts_with("proxy.upstream")));
        assert!(errors.iter().any(|e| e.starts_with("proxy.header_timeout")));
        assert!(errors.iter().any(|e| e.starts_with("proxy.max_body")));
    }

    #[test]
    fn non_loopback_listen_needs_a_token() {
        let raw = RawProxy {
            listen: "0.0.0.0:11435".into(),
            ..RawProxy::default()
        };
        assert!(raw.validate().is_err());
        let raw = RawProxy {
            admin_token: Some("s3cret".into()),
            ..raw
        };
        assert!(raw.validate().is_ok());
    }

    #[test]
    fn upstream_path_prefix_is_kept() {
        let url = UpstreamUrl::parse("http://localhost:8080/ollama/").unwrap();
        assert_eq!(url.authority.as_str(), "localhost:8080");
        assert_eq!(url.path_prefix, "/ollama");
        assert_eq!(url.text, "http://localhost:8080/ollama");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn layers_apply_in_order_and_unknown_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rawrxd.toml",
                "[proxy]\nlisten = \"127.0.0.1:2000\"\nupstream = \"http://127.0.0.1:3000\"\nmax_body = 1024\n",
            )?;
            jail.set_env("RAWRXD_PROXY_UPSTREAM", "http://127.0.0.1:4000");
            jail.set_env("RAWRXD_UNRELATED", "ignored");
            let overrides = ProxyOverrides {
                max_body: Some("2KiB".into()),
                ..Default::default()
            };
            let config = load(None, &overrides).unwrap().proxy.validate().unwrap();
            assert_eq!(config.listen.port(), 2000, "file beats defaults");
            assert_eq!(
                config.upstream.text, "http://127.0.0.1:4000",
                "env beats file"
            );
            assert_eq!(config.max_body, 2048, "flags beat everything");

            jail.create_file("typo.toml", "[proxy]\nlisten_addr = \"127.0.0.1:1\"\n")?;
            let err = load(Some(Path::new("typo.toml")), &ProxyOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen_addr"), "{err}");

            jail.set_env("RAWRXD_PROXY_LISTN", "127.0.0.1:1");
            let err = load(None, &ProxyOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn explicit_missing_config_file_is_an_error() {
        let err = load(
            Some(Path::new("/nonexistent/rawrxd.toml")),
            &ProxyOverrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile(_)));
    }
}
