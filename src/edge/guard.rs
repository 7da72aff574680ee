//! Who may talk to rawrxd, checked first on both ports (the proxy's [`crate::proxy::route`] and
//! `rawrxd serve`'s [`crate::serve::http`]), before any handler runs:
//!
//! * **`Host`** must name this machine — a loopback name, an IP address, the machine's own
//!   host name or an `allowed_hosts` entry — so a page on a domain that re-binds its DNS to
//!   127.0.0.1 (DNS rebinding) is refused: its requests still carry the attacker's name.
//! * **`Origin`**, when present, must be in `allowed_origins` (loopback pages and local app /
//!   editor webview schemes by default, as Ollama allows). Browsers mark every cross-site
//!   request with it, including the "simple" ones they send without asking first; CLIs, SDKs
//!   and IDE extensions send none and are unaffected.
//! * **CORS**: preflights are answered only for allowed origins, and only allowed origins get
//!   `Access-Control-Allow-Origin`.
//! * **Bearer tokens** ([`Keys`]): an admin token for endpoints that change state and optional
//!   API keys for everything else, compared in constant time on their SHA-256 digests (so
//!   neither the content nor the length of a token leaks through timing).
//!
//! Plus [`is_json`], which the servers use to require `Content-Type: application/json` on
//! state-changing endpoints: a browser cannot send that type cross-site without a preflight.
//!
//! Plain values over `http` types; this module uses nothing else of the crate, so `config`
//! (which validates the lists) and both servers can use it. SECURITY.md has the threat model.

use std::fmt;
use std::net::IpAddr;

use http::{header, HeaderMap, HeaderValue, Method, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Origins allowed on every port without configuration (the set Ollama allows): pages served
/// from loopback on any port, and the schemes of local apps and editor webviews.
pub const DEFAULT_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://[::1]:*",
    "https://[::1]:*",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

/// Headers a browser may send on an allowed cross-origin request when its preflight does not
/// list them (it always does; this is the answer to a preflight without
/// `Access-Control-Request-Headers`).
const DEFAULT_ALLOW_HEADERS: &str = "authorization, content-type, accept, user-agent";
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// Why a request was refused before it reached a handler (both servers answer 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Host {host:?} is not allowed (protection against DNS rebinding); if you reach rawrxd \
         by that name, add it to {section}.allowed_hosts"
    )]
    Host { host: String, section: &'static str },
    #[error(
        "origin {origin:?} is not allowed to use this server; to let that page in, add it to \
         {section}.allowed_origins"
    )]
    Origin {
        origin: String,
        section: &'static str,
    },
}

/// A request that passed [`Access::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The request's `Origin`, when it had an allowed one: echoed in
    /// `Access-Control-Allow-Origin`.
    pub origin: Option<HeaderValue>,
    /// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`): answer
    /// it with [`Access::preflight_headers`] and nothing else.
    pub preflight: bool,
}

impl Admitted {
    /// Adds the CORS headers an allowed origin gets to a response (replacing any an upstream
    /// set, so the browser sees one consistent answer).
    pub fn decorate(&self, headers: &mut HeaderMap) {
        let Some(origin) = &self.origin else { return };
        let stale: Vec<header::HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in stale {
            headers.remove(name);
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The `Host` and `Origin` policy of one server, built from its config section.
#[derive(Debug, Clone)]
pub struct Access {
    section: &'static str,
    origins: Vec<OriginPattern>,
    hosts: Vec<NamePattern>,
    /// This machine's host name (lowercase), allowed like `localhost`.
    machine: Option<String>,
}

impl Access {
    /// The defaults plus `extra_origins` and `extra_hosts` from the config section `section`
    /// (`"proxy"`, `"serve"`); every invalid entry is reported, each naming its key.
    pub fn new(
        section: &'static str,
        extra_origins: &[String],
        extra_hosts: &[String],
    ) -> Result<Access, Vec<String>> {
        let mut errors = Vec::new();
        let mut origins: Vec<OriginPattern> = DEFAULT_ORIGINS
            .iter()
            .filter_map(|text| OriginPattern::parse(text).ok())
            .collect();
        for text in extra_origins {
            match OriginPattern::parse(text) {
                Ok(pattern) => origins.push(pattern),
                Err(why) => errors.push(format!("{section}.allowed_origins: {text:?} {why}")),
            }
        }
        let mut hosts = Vec::new();
        for text in extra_hosts {
            match NamePattern::parse(text) {
                Ok(pattern) => hosts.push(pattern),
                Err(why) => errors.push(format!("{section}.allowed_hosts: {text:?} {why}")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Access {
            section,
            origins,
            hosts,
            machine: machine_name(),
        })
    }

    /// Adds another server's origins (`rawrxd up`: serve accepts what its proxy lets through).
    pub fn allow_origins_of(&mut self, other: &Access) {
        for pattern in &other.origins {
            if !self.origins.contains(pattern) {
                self.origins.push(pattern.clone());
            }
        }
    }

    /// Checks `Host` (or the HTTP/2 authority) and `Origin`.
    pub fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Admitted, Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()));
        if let Some(host) = host {
            if !self.host_allowed(&host) {
                return Err(Refusal::Host {
                    host,
                    section: self.section,
                });
            }
        }
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(Admitted {
                origin: None,
                preflight: false,
            });
        };
        let text = value.to_str().unwrap_or("");
        let allowed = Origin::parse(text)
            .is_some_and(|origin| self.origins.iter().any(|pattern| pattern.matches(&origin)))
            || self.origins.contains(&OriginPattern::Any);
        if !allowed {
            return Err(Refusal::Origin {
                origin: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                section: self.section,
            });
        }
        Ok(Admitted {
            origin: Some(value.clone()),
            preflight: method == Method::OPTIONS
                && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD),
        })
    }

    /// The headers of the `204` answer to an allowed preflight.
    pub fn preflight_headers(admitted: &Admitted, request: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        admitted.decorate(&mut headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        let asked = request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOW_HEADERS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        headers
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return true;
        }
        // An IP address cannot be a rebinding name: the browser sends the name the page used,
        // and a page that used an address talks to that address.
        if name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        {
            return true;
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || self.machine.as_deref() == Some(name.as_str())
            || self.hosts.iter().any(|pattern| pattern.matches(&name))
    }
}

/// `host:port`, `[v6]:port`, `host` → the host part.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// This machine's host name, from the kernel (Linux) or `/etc/hostname`.
fn machine_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// A parsed `Origin` header: `scheme://host[:port]`.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        if !valid_scheme(scheme) || rest.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        Some(Origin {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

fn valid_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// `host`, `host:8080`, `[::1]:8080` → host and port (`None` for a malformed port).
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if text.starts_with('[') {
        let end = text.find(']')?;
        let (host, rest) = text.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// One `allowed_origins` entry: `*`, `scheme://*`, `scheme://host`, `scheme://host:port`,
/// `scheme://host:*`, `scheme://*.domain[:port|:*]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    /// `*`: every origin (turns the browser defence off).
    Any,
    Origin {
        scheme: String,
        host: Option<NamePattern>,
        port: PortPattern,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    /// No port written: the scheme's default (an `Origin` leaves default ports out).
    Default,
    Any,
    Exact(u16),
}

impl OriginPattern {
    fn parse(text: &str) -> Result<OriginPattern, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("is not an origin like http://localhost:3000 (scheme://host[:port])")?;
        if !valid_scheme(scheme) {
            return Err(format!("has an invalid scheme {scheme:?}"));
        }
        if rest.contains(['/', '?', '#', '@', ' ']) {
            return Err("must be only scheme://host[:port], without a path".into());
        }
        let scheme = scheme.to_ascii_lowercase();
        if rest == "*" {
            return Ok(OriginPattern::Origin {
                scheme,
                host: None,
                port: PortPattern::Any,
            });
        }
        let (host, port) = match rest.strip_suffix(":*") {
            Some(host) => (host, PortPattern::Any),
            None => match split_host_port(rest) {
                Some((host, Some(port))) => (host, PortPattern::Exact(port)),
                Some((host, None)) => (host, PortPattern::Default),
                None => return Err("has an invalid port".into()),
            },
        };
        let host = NamePattern::parse(host)?;
        Ok(OriginPattern::Origin {
            scheme,
            host: Some(host),
            port,
        })
    }

    fn matches(&self, origin: &Origin) -> bool {
        let OriginPattern::Origin { scheme, host, port } = self else {
            return true;
        };
        if *scheme != origin.scheme {
            return false;
        }
        let Some(host) = host else { return true };
        let port_ok = match port {
            PortPattern::Any => true,
            PortPattern::Default => origin.port.is_none() || origin.port == default_port(scheme),
            PortPattern::Exact(port) => {
                origin.port == Some(*port)
                    || (origin.port.is_none() && default_port(scheme) == Some(*port))
            }
        };
        port_ok && host.matches(&origin.host)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A host name (`example.com`, `[::1]`), a wildcard domain (`*.example.com`) or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Any,
    Exact(String),
    /// `*.example.com` → `.example.com`: any name below it.
    Below(String),
}

impl NamePattern {
    fn parse(text: &str) -> Result<NamePattern, String> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if text == "*" {
            return Ok(NamePattern::Any);
        }
        let (wild, name) = match text.strip_prefix("*.") {
            Some(name) => (true, name.to_string()),
            None => (false, text.clone()),
        };
        let bracketed = name.starts_with('[') && name.ends_with(']');
        let valid = !name.is_empty()
            && (bracketed
                || name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
        if !valid || (wild && bracketed) {
            return Err("is not a host name (e.g. my-box.lan or *.example.com; no port)".into());
        }
        Ok(match wild {
            true => NamePattern::Below(format!(".{name}")),
            false => NamePattern::Exact(name),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(exact) => exact == name,
            NamePattern::Below(suffix) => name.ends_with(suffix.as_str()),
        }
    }
}

/// What a request without the admin token is told, on both ports.
pub const ADMIN_TOKEN_NEEDED: &str =
    "missing or wrong admin token (send Authorization: Bearer <token>)";
/// What a request without an API key is told, on both ports.
pub const API_KEY_NEEDED: &str = "missing or wrong API key (send Authorization: Bearer <key>)";
/// What a state-changing request that is not JSON is told, on both ports.
pub const JSON_ONLY: &str = "this endpoint changes state and takes only Content-Type: \
     application/json (curl: -H 'Content-Type: application/json')";

/// The Ollama API's model management paths (download, create, copy, delete, push, blob
/// upload) and serve's live weight patches (`/rawrxd/models/{name}/patch|revert`): on both ports they need the admin token when one is set, like rawrxd's own
/// state-changing endpoints.
pub fn is_model_management(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/api/pull" | "/api/create" | "/api/copy" | "/api/delete" | "/api/push"
    ) || path.starts_with("/api/blobs/")
        || path.starts_with("/rawrxd/models/")
}

/// True when the request's `Content-Type` is JSON (`application/json`, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// A token kept only as its SHA-256 digest; never printed.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(token: &str) -> Secret {
        Secret(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant time in the content and the length of both tokens: the digests are compared.
    pub fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The bearer token of a request (`Authorization: Bearer <token>`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A server's tokens: the admin token for endpoints that change state, and API keys that,
/// when any are set, every other request must carry (the admin token is accepted too).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub admin: Option<Secret>,
    pub api: Vec<Secret>,
}

impl Keys {
    /// Empty strings mean "not set".
    pub fn new(admin: Option<&str>, api: &[String]) -> Keys {
        Keys {
            admin: admin.filter(|t| !t.is_empty()).map(Secret::new),
            api: api
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| Secret::new(k))
                .collect(),
        }
    }

    /// May this request change state? True when no admin token is set (and then, when API
    /// keys are, it needs one of those: a server with keys is never open for writes).
    pub fn admin_ok(&self, headers: &HeaderMap) -> bool {
        match &self.admin {
            Some(admin) => bearer(headers).is_some_and(|given| admin.matches(given)),
            None => self.api_ok(headers),
        }
    }

    /// May this request use the API? True when no API key is set.
    pub fn api_ok(&self, headers: &HeaderMap) -> bool {
        if self.api.is_empty() {
            return true;
        }
        let Some(given) = bearer(headers) else {
            return false;
        };
        // Every key is compared, so timing does not tell which (or how many) keys exist.
        let found = self
            .api
            .iter()
            .chain(&self.admin)
            .fold(false, |found, key| key.matches(given) | found);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(origins: &[&str], hosts: &[&str]) -> Access {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Access::new("proxy", &owned(origins), &owned(hosts)).unwrap()
    }

    fn request(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn check(
        access: &Access,
        host: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Admitted, Refusal> {
        access.check(
            &Method::POST,
            &Uri::from_static("/api/chat"),
            &request(host, origin),
        )
    }

    #[test]
    fn default_origins_are_loopback_pages_and_local_apps() {
        let a = access(&[], &[]);
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://localhost:8443",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
            "http://0.0.0.0:8000",
            "app://obsidian.md",
            "file://",
            "tauri://localhost",
            "vscode-webview://1a2b3c",
            "vscode-file://vscode-app",
            "HTTP://LOCALHOST:3000",
        ] {
            assert!(check(&a, Some("localhost:11435"), Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "https://evil.example:443",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "http://evil.localhost.example:3000",
            "null",
            "",
            "http://localhost:3000/path",
            "http://user@localhost",
            "chrome-extension://abcdef",
        ] {
            let refused = check(&a, Some("localhost:11435"), Some(bad)).unwrap_err();
            assert!(matches!(refused, Refusal::Origin { .. }), "{bad}");
            assert!(refused.to_string().contains("proxy.allowed_origins"));
        }
    }

    #[test]
    fn configured_origins_extend_the_defaults() {
        let a = access(
            &[
                "https://app.example.com",
                "https://*.corp.example",
                "http://dev.lan:*",
                "chrome-extension://abcdef",
            ],
            &[],
        );
        let ok = |origin| check(&a, None, Some(origin)).is_ok();
        assert!(ok("https://app.example.com"));
        assert!(
            ok("https://app.example.com:443"),
            "default port written out"
        );
        assert!(!ok("https://app.example.com:8443"));
        assert!(!ok("http://app.example.com"), "scheme must match");
        assert!(ok("https://a.b.corp.example"));
        assert!(!ok("https://corp.example.evil"));
        assert!(!ok("https://xcorp.example"));
        assert!(ok("http://dev.lan:9999"));
        assert!(ok("chrome-extension://abcdef"));
        assert!(!ok("chrome-extension://other"));
        assert!(ok("http://localhost:3000"), "defaults stay");
        let any = access(&["*"], &[]);
        assert!(check(&any, None, Some("http://evil.example")).is_ok());
        assert!(check(&any, None, Some("null")).is_ok());
    }

    #[test]
    fn invalid_entries_are_all_reported() {
        let errors = Access::new(
            "serve",
            &[
                "localhost:3000".into(),
                "http://x/path".into(),
                "1nv@lid://x".into(),
            ],
            &["evil.example:80".into(), "*.[::1]".into(), "ok.lan".into()],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("serve.allowed_origins: \"localhost:3000\""));
        assert!(errors[3].starts_with("serve.allowed_hosts: \"evil.example:80\""));
    }

    #[test]
    fn host_must_name_this_machine() {
        let a = access(&[], &["my-box.lan", "*.corp.example"]);
        for ok in [
            "localhost",
            "localhost:11435",
            "LOCALHOST:11435",
            "app.localhost:3000",
            "127.0.0.1:11435",
            "[::1]:11434",
            "192.168.1.20:11435",
            "my-box.lan:11435",
            "gpu.corp.example",
            "localhost.",
        ] {
            assert!(check(&a, Some(ok), None).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:11435",
            "localhost.evil.example",
            "127.0.0.1.nip.io:11435",
            "corp.example",
        ] {
            let refused = check(&a, Some(bad), None).unwrap_err();
            assert!(matches!(refused, Refusal::Host { .. }), "{bad}");
            assert!(
                refused.to_string().contains("proxy.allowed_hosts"),
                "{refused}"
            );
        }
        // No Host at all (HTTP/1.0 tools): nothing to check; browsers always send one.
        assert!(check(&a, None, None).is_ok());
        // HTTP/2: the authority stands in for Host.
        let uri = Uri::from_static("http://evil.example/api/tags");
        assert!(a.check(&Method::GET, &uri, &HeaderMap::new()).is_err());
        let any = access(&[], &["*"]);
        assert!(check(&any, Some("evil.example"), None).is_ok());
    }

    #[test]
    fn preflights_and_cors_headers_only_for_allowed_origins() {
        let a = access(&[], &[]);
        let mut headers = request(Some("localhost:11435"), Some("http://localhost:3000"));
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
        let admitted = a
            .check(
                &Method::OPTIONS,
                &Uri::from_static("/rawrxd/rules"),
                &headers,
            )
            .unwrap();
        assert!(admitted.preflight);
        let answer = Access::preflight_headers(&admitted, &headers);
        assert_eq!(
            answer[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(
            answer[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, authorization"
        );

        let mut response = HeaderMap::new();
        response.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        admitted.decorate(&mut response);
        assert_eq!(
            response
                .get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .iter()
                .count(),
            1
        );
        assert_eq!(
            response[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );

        // No Origin: no CORS headers at all.
        let plain = check(&a, Some("localhost"), None).unwrap();
        let mut response = HeaderMap::new();
        plain.decorate(&mut response);
        assert!(response.is_empty());

        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(a
            .check(
                &Method::OPTIONS,
                &Uri::from_static("/rawrxd/rules"),
                &headers
            )
            .is_err());
    }

    #[test]
    fn json_content_type() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!with("text/plain; application/json"));
        assert!(!is_json(&HeaderMap::new()));
    }

    fn bearer_headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn tokens_and_keys() {
        let open = Keys::new(None, &[]);
        assert!(open.admin_ok(&HeaderMap::new()));
        assert!(open.api_ok(&HeaderMap::new()));

        let keys = Keys::new(Some("admin-s3cret"), &["k1".into(), "k2".into()]);
        assert!(keys.admin_ok(&bearer_headers("admin-s3cret")));
        assert!(
            !keys.admin_ok(&bearer_headers("k1")),
            "an API key is not the admin token"
        );
        assert!(!keys.admin_ok(&bearer_headers("admin-s3cre")));
        assert!(!keys.admin_ok(&bearer_headers("admin-s3cretX")));
        assert!(!keys.admin_ok(&HeaderMap::new()));
        assert!(keys.api_ok(&bearer_headers("k1")));
        assert!(keys.api_ok(&bearer_headers("k2")));
        assert!(
            keys.api_ok(&bearer_headers("admin-s3cret")),
            "admin may use the API"
        );
        assert!(!keys.api_ok(&bearer_headers("k3")));
        assert!(!keys.api_ok(&HeaderMap::new()));

        // API keys but no admin token: writes need a key too.
        let keys_only = Keys::new(None, &["k1".into()]);
        assert!(!keys_only.admin_ok(&HeaderMap::new()));
        assert!(keys_only.admin_ok(&bearer_headers("k1")));

        // Empty strings are "not set".
        let empty = Keys::new(Some(""), &["".into()]);
        assert!(empty.admin.is_none() && empty.api.is_empty());

        let mut lower = HeaderMap::new();
        lower.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  k1 "),
        );
        assert!(keys.api_ok(&lower));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert!(!keys.api_ok(&basic));
        assert_eq!(format!("{:?}", Secret::new("admin-s3cret")), "Secret(…)");
    }
}
