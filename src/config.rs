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
//!
//! May use: `edge` (to validate the access policy). Used by `proxy`, `serve`, `app`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::edge::guard::{Access, Keys};

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
    /// Bearer token for model management (pull, create, copy, delete, push, blobs); required
    /// to listen off loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// When set, every API request needs `Authorization: Bearer <one of these>`.
    pub api_keys: StringList,
    /// Browser origins allowed besides loopback pages and local app schemes.
    pub allowed_origins: StringList,
    /// Host names (besides localhost, IP addresses and this machine's name) clients may use.
    pub allowed_hosts: StringList,
    /// Model management limits (`serve::validate` checks them): directories `/api/create`
    /// and `/api/pull` may read server-side files from; whether pulls may reach loopback and
    /// private networks, and the hosts/addresses/networks they may reach regardless; the
    /// largest model a pull or blob upload may store; free space kept in the models
    /// directory.
    pub import_dirs: Vec<PathBuf>,
    pub pull_allow_private: bool,
    pub pull_allowed_hosts: StringList,
    pub max_model_size: ByteSize,
    pub min_free_space: ByteSize,
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
            admin_token: None,
            api_keys: StringList::default(),
            allowed_origins: StringList::default(),
            allowed_hosts: StringList::default(),
            import_dirs: Vec::new(),
            pull_allow_private: false,
            pull_allowed_hosts: StringList::default(),
            max_model_size: ByteSize::Text("64GiB".into()),
            min_free_space: ByteSize::Text("1GiB".into()),
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
    pub admin_token: Option<String>,
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
    /// When set, every forwarded request needs `Authorization: Bearer <one of these>`.
    pub api_keys: StringList,
    /// Browser origins allowed besides loopback pages and local app schemes.
    pub allowed_origins: StringList,
    /// Host names (besides localhost, IP addresses and this machine's name) clients may use.
    pub allowed_hosts: StringList,
    /// How long rows of the `corrections` table are kept ("90d"; "0" or "off": no age limit).
    pub audit_retention: Age,
    /// Most rows kept in the `corrections` table, the newest (0: no row limit).
    pub audit_max_rows: u64,
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
            api_keys: StringList::default(),
            allowed_origins: StringList::default(),
            allowed_hosts: StringList::default(),
            audit_retention: Age::Text("90d".into()),
            audit_max_rows: 1_000_000,
        }
    }
}

/// An age written as text ("90d", "12h"), or "0"/"off" (also the number 0) for no limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Age {
    Number(u64),
    Text(String),
}

impl Age {
    /// The age, `None` when switched off, or a message saying what is wrong with the text.
    pub fn to_duration(&self) -> Result<Option<Duration>, String> {
        let text = match self {
            Age::Number(0) => return Ok(None),
            Age::Number(n) => {
                return Err(format!(
                    "{n} has no unit; write an age such as \"30d\" (or \"off\")"
                ))
            }
            Age::Text(text) => text.trim(),
        };
        if matches!(text.to_ascii_lowercase().as_str(), "0" | "off" | "none") {
            return Ok(None);
        }
        match humantime::parse_duration(text) {
            Ok(age) if age.is_zero() => Ok(None),
            Ok(age) => Ok(Some(age)),
            Err(e) => Err(format!(
                "{text:?}: {e} (write an age such as \"30d\", or \"off\")"
            )),
        }
    }
}

/// A list of strings: a TOML array, or (from an environment variable such as
/// `RAWRXD_PROXY_ALLOWED_ORIGINS`) one comma-separated string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    Items(Vec<String>),
    Text(String),
}

impl Default for StringList {
    fn default() -> Self {
        StringList::Items(Vec::new())
    }
}

impl StringList {
    /// The entries, trimmed, empty ones dropped.
    pub fn items(&self) -> Vec<String> {
        let all: Vec<&str> = match self {
            StringList::Items(items) => items.iter().map(String::as_str).collect(),
            StringList::Text(text) => text.split(',').collect(),
        };
        all.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
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
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
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
    /// The admin token and API keys (see [`crate::edge::guard::Keys`]).
    pub keys: Keys,
    /// The `Host` and `Origin` policy (see [`crate::edge::guard::Access`]).
    pub access: Access,
    pub audit_max_size: u64,
    pub audit_keep: usize,
    /// Corrections older than this are pruned (`None`: kept whatever their age).
    pub audit_retention: Option<Duration>,
    /// Only the newest this many corrections are kept (`None`: no row limit).
    pub audit_max_rows: Option<u64>,
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
        let audit_retention = self
            .audit_retention
            .to_duration()
            .map_err(|e| errors.push(format!("proxy.audit_retention: {e}")))
            .unwrap_or_default();
        let audit_max_rows = match self.audit_max_rows {
            0 => None,
            n if i64::try_from(n).is_err() => {
                errors.push(format!("proxy.audit_max_rows: {n} is too large"));
                None
            }
            n => Some(n),
        };
        if self.max_connections == 0 {
            errors.push("proxy.max_connections must be at least 1".into());
        }
        let admin_token = self.admin_token.clone().filter(|t| !t.is_empty());
        let keys = Keys::new(admin_token.as_deref(), &self.api_keys.items());
        let access = Access::new(
            "proxy",
            &self.allowed_origins.items(),
            &self.allowed_hosts.items(),
        )
        .map_err(|e| errors.extend(e))
        .ok();
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
            access,
        ) {
            (
                Some(listen),
                Some(upstream),
                Some(max_body),
                Some(header_timeout),
                Some(connect_timeout),
                Some(shutdown_grace),
                Some(audit_max_size),
                Some(access),
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
                keys,
                access,
                audit_max_size,
                audit_keep: self.audit_keep,
                audit_retention,
                audit_max_rows,
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
    fn audit_retention_takes_an_age_or_off_and_rows_zero_means_no_limit() {
        let config = RawProxy::default().validate().unwrap();
        assert_eq!(
            config.audit_retention,
            Some(Duration::from_secs(90 * 24 * 3600))
        );
        assert_eq!(config.audit_max_rows, Some(1_000_000));
        for off in [
            Age::Number(0),
            Age::Text("0".into()),
            Age::Text("off".into()),
            Age::Text("0s".into()),
        ] {
            let raw = RawProxy {
                audit_retention: off.clone(),
                audit_max_rows: 0,
                ..RawProxy::default()
            };
            let config = raw.validate().unwrap();
            assert_eq!(config.audit_retention, None, "{off:?}");
            assert_eq!(config.audit_max_rows, None);
        }
        let raw = RawProxy {
            audit_retention: Age::Text("30 days".into()),
            ..RawProxy::default()
        };
        assert_eq!(
            raw.validate().unwrap().audit_retention,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        let raw = RawProxy {
            audit_retention: Age::Number(30),
            audit_max_rows: u64::MAX,
            max_connections: 0,
            ..RawProxy::default()
        };
        let ConfigError::Invalid(errors) = raw.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.starts_with("proxy.audit_retention: 30 has no unit")));
        assert!(errors.iter().any(|e| e.starts_with("proxy.audit_max_rows")));
        let raw = RawProxy {
            audit_retention: Age::Text("a while".into()),
            ..RawProxy::default()
        };
        let err = raw.validate().unwrap_err().to_string();
        assert!(err.contains("proxy.audit_retention: \"a while\""), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn audit_retention_comes_from_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rawrxd.toml",
                "[proxy]\naudit_retention = \"7d\"\naudit_max_rows = 500\n",
            )?;
            let config = load(None, &ProxyOverrides::default())
                .unwrap()
                .proxy
                .validate()
                .unwrap();
            assert_eq!(
                config.audit_retention,
                Some(Duration::from_secs(7 * 86_400))
            );
            assert_eq!(config.audit_max_rows, Some(500));
            // The environment's "0" arrives as a number.
            jail.set_env("RAWRXD_PROXY_AUDIT_RETENTION", "0");
            jail.set_env("RAWRXD_PROXY_AUDIT_MAX_ROWS", "0");
            let config = load(None, &ProxyOverrides::default())
                .unwrap()
                .proxy
                .validate()
                .unwrap();
            assert_eq!(config.audit_retention, None);
            assert_eq!(config.audit_max_rows, None);
            jail.set_env("RAWRXD_PROXY_AUDIT_RETENTION", "12h");
            let config = load(None, &ProxyOverrides::default())
                .unwrap()
                .proxy
                .validate()
                .unwrap();
            assert_eq!(config.audit_retention, Some(Duration::from_secs(12 * 3600)));
            Ok(())
        });
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
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn lists_come_from_arrays_or_comma_separated_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rawrxd.toml",
                "[proxy]\nallowed_hosts = [\"gpu.lan\"]\n[serve]\napi_keys = [\"a\", \"b\"]\n",
            )?;
            jail.set_env(
                "RAWRXD_PROXY_ALLOWED_ORIGINS",
                "https://app.example.com, http://dev.lan:*",
            );
            let raw = load(None, &ProxyOverrides::default()).unwrap();
            assert_eq!(
                raw.proxy.allowed_origins.items(),
                vec!["https://app.example.com", "http://dev.lan:*"]
            );
            assert_eq!(raw.proxy.allowed_hosts.items(), vec!["gpu.lan"]);
            assert_eq!(raw.serve.api_keys.items(), vec!["a", "b"]);
            assert!(raw.proxy.validate().is_ok());

            jail.set_env("RAWRXD_PROXY_ALLOWED_ORIGINS", "localhost:3000");
            jail.set_env("RAWRXD_PROXY_ALLOWED_HOSTS", "bad host");
            let raw = load(None, &ProxyOverrides::default()).unwrap();
            let ConfigError::Invalid(errors) = raw.proxy.validate().unwrap_err() else {
                panic!("expected Invalid");
            };
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(errors[0].starts_with("proxy.allowed_origins"), "{errors:?}");
            assert!(errors[1].starts_with("proxy.allowed_hosts"), "{errors:?}");
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
