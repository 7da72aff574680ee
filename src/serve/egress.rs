//! Where `/api/pull` may download from: every address a pull would connect to is classified
//! (loopback, private, link-local, metadata, …) and refused unless it is public or the
//! configuration allows it (`serve.pull_allow_private`, `serve.pull_allowed_hosts`).
//!
//! The check sits where the connection is made, so nothing can slip between check and
//! connect: host names go through [`GuardedResolver`], a `reqwest` DNS resolver that hands
//! the connector only the resolved addresses the policy allows (a name that resolves to an
//! allowed and a refused address is connected to the allowed one only; one that resolves only
//! to refused addresses fails with the [`Refused`] reason). URLs whose host is an IP literal
//! skip DNS in the connector, so [`Puller::check_url`] checks them before each request. The
//! download code follows redirects by hand and checks every hop the same way; the client
//! ignores `HTTP(S)_PROXY`, since a proxy would resolve names where the policy cannot see.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What kind of address an IP is, as far as pulling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and IPv6 site-local.
    Private,
    /// Carrier-grade NAT, 100.64/10.
    Shared,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    Multicast,
    Broadcast,
    Documentation,
    /// Reserved, benchmarking, protocol-assignment and non-global IPv6 ranges.
    Reserved,
    /// Cloud instance metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200).
    Metadata,
}

impl Class {
    fn describe(self) -> &'static str {
        match self {
            Class::Public => "public address",
            Class::Loopback => "loopback address",
            Class::Private => "private address",
            Class::Shared => "carrier-grade NAT address",
            Class::LinkLocal => "link-local address",
            Class::UniqueLocal => "unique-local address",
            Class::Unspecified => "unspecified address",
            Class::Multicast => "multicast address",
            Class::Broadcast => "broadcast address",
            Class::Documentation => "documentation address",
            Class::Reserved => "reserved address",
            Class::Metadata => "cloud metadata address",
        }
    }

    /// Addresses of this machine and its networks: allowed by `serve.pull_allow_private`.
    fn is_local_network(self) -> bool {
        matches!(
            self,
            Class::Loopback
                | Class::Private
                | Class::Shared
                | Class::LinkLocal
                | Class::UniqueLocal
        )
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    const TABLE: &[([u8; 4], u32, Class)] = &[
        ([169, 254, 169, 254], 32, Class::Metadata),
        ([100, 100, 100, 200], 32, Class::Metadata),
        ([255, 255, 255, 255], 32, Class::Broadcast),
        ([0, 0, 0, 0], 8, Class::Unspecified),
        ([127, 0, 0, 0], 8, Class::Loopback),
        ([10, 0, 0, 0], 8, Class::Private),
        ([172, 16, 0, 0], 12, Class::Private),
        ([192, 168, 0, 0], 16, Class::Private),
        ([100, 64, 0, 0], 10, Class::Shared),
        ([169, 254, 0, 0], 16, Class::LinkLocal),
        ([192, 0, 2, 0], 24, Class::Documentation),
        ([198, 51, 100, 0], 24, Class::Documentation),
        ([203, 0, 113, 0], 24, Class::Documentation),
        ([192, 0, 0, 0], 24, Class::Reserved),
        ([198, 18, 0, 0], 15, Class::Reserved),
        ([224, 0, 0, 0], 4, Class::Multicast),
        ([240, 0, 0, 0], 4, Class::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map_or(Class::Public, |(_, _, class)| *class)
}

/// The IPv4 address an IPv6 address carries, for the forms that reach it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`,
/// `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if in_v6(ip, [0; 8], 96) && u128::from(ip) > 1 {
        return Some(low);
    }
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
    {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip.is_unspecified() {
        return Class::Unspecified;
    }
    if ip.is_loopback() {
        return Class::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    const TABLE: &[([u16; 8], u32, Class)] = &[
        ([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128, Class::Metadata),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Class::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Class::Private),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Class::UniqueLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Class::Multicast),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Class::Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Class::Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Class::Reserved),
        ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, Class::Reserved),
        // Global unicast is 2000::/3; everything else is not routable on the internet.
        ([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, Class::Public),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v6(ip, *net, *len))
        .map_or(Class::Reserved, |(_, _, class)| *class)
}

/// The class of `ip` (IPv6 forms that carry an IPv4 address are judged by that address).
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Why a pull may not connect somewhere; the message says how to allow it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.message())]
pub struct Refused {
    host: String,
    ip: IpAddr,
    class: Class,
}

impl Refused {
    fn message(&self) -> String {
        let target = if self.host == self.ip.to_string() {
            self.host.clone()
        } else {
            format!("{} ({})", self.host, self.ip)
        };
        let how = if self.class.is_local_network() {
            "allow it with serve.pull_allow_private = true, or list the host in \
             serve.pull_allowed_hosts"
        } else {
            "only listing the host in serve.pull_allowed_hosts allows it"
        };
        format!(
            "pull from {target} refused: {}; {how}",
            self.class.describe()
        )
    }
}

/// Which addresses pulls may reach (`serve.pull_allow_private`, `serve.pull_allowed_hosts`).
#[derive(Debug, Clone, Default)]
pub struct PullPolicy {
    allow_private: bool,
    /// Host names allowed whatever they resolve to (lowercase, no trailing dot).
    names: Vec<String>,
    /// Addresses and networks allowed whatever their class.
    nets: Vec<ipnet::IpNet>,
}

fn normal_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl PullPolicy {
    /// Builds the policy; every entry of `allowed_hosts` that is not a host name, an IP
    /// address or a CIDR network is reported.
    pub fn new(allow_private: bool, allowed_hosts: &[String]) -> Result<Self, Vec<String>> {
        let mut policy = PullPolicy {
            allow_private,
            ..PullPolicy::default()
        };
        let mut errors = Vec::new();
        for entry in allowed_hosts {
            let text = normal_host(entry.trim());
            if let Ok(net) = text.parse::<ipnet::IpNet>() {
                policy.nets.push(net);
            } else if let Ok(ip) = text.parse::<IpAddr>() {
                policy.nets.push(ipnet::IpNet::from(ip));
            } else if !text.is_empty()
                && text.len() <= 253
                && text.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            {
                policy.names.push(text);
            } else {
                errors.push(format!(
                    "serve.pull_allowed_hosts: {entry:?} is not a host name, an IP address or \
                     a CIDR network"
                ));
            }
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(errors)
        }
    }

    /// Whether a pull may connect to `ip`, which `host` (a URL's host) resolved to.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        let canonical = ip.to_canonical();
        let host = normal_host(host);
        if self.names.contains(&host)
            || self
                .nets
                .iter()
                .any(|n| n.contains(&ip) || n.contains(&canonical))
        {
            return Ok(());
        }
        match classify(ip) {
            Class::Public => Ok(()),
            class if self.allow_private && class.is_local_network() => Ok(()),
            class => Err(Refused { host, ip, class }),
        }
    }
}

/// The DNS resolver of the pull client: resolves with the system resolver and keeps only the
/// addresses the policy allows, so the connection goes to an address that was checked.
struct GuardedResolver {
    policy: Arc<PullPolicy>,
}

/// A name that resolved to no address at all.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no address")]
struct NoAddress(String);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allowed = allowed_addrs(&policy, &host).await?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Resolves `host` and keeps the addresses `policy` allows; none allowed is an error (the
/// first refusal, or [`NoAddress`]).
async fn allowed_addrs(
    policy: &PullPolicy,
    host: &str,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    let mut refused = None;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| match policy.check(host, addr.ip()) {
            Ok(()) => true,
            Err(e) => {
                refused.get_or_insert(e);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), refused) {
        (false, _) => Ok(allowed),
        (true, Some(refused)) => Err(Box::new(refused)),
        (true, None) => Err(Box::new(NoAddress(host.to_string()))),
    }
}

/// The pull policy and the HTTP client that enforces it (built on first use).
pub struct Puller {
    policy: Arc<PullPolicy>,
    client: OnceLock<reqwest::Client>,
}

impl Puller {
    pub fn new(policy: PullPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            client: OnceLock::new(),
        }
    }

    /// The client: the guarded resolver, no proxy, no automatic redirects (the caller
    /// follows them, checking each hop with [`Puller::check_url`]).
    pub fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("rawrxd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy.clone(),
            }))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Checks what can be checked of `url` before connecting: its scheme, and its host when
    /// that is an IP literal (the connector does not resolve those, so the resolver never
    /// sees them).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "pull from {url} refused: only http and https URLs can be pulled"
            ));
        }
        let host = url.host_str().ok_or_else(|| format!("{url} has no host"))?;
        match normal_host(host).parse::<IpAddr>() {
            Ok(ip) => self
                .policy
                .check(&ip.to_string(), ip)
                .map_err(|e| e.to_string()),
            // A name: the resolver checks what it resolves to.
            Err(_) => Ok(()),
        }
    }

    /// Checks `url` before a pull starts, resolving its host name the way the connection
    /// will, so a refused host is answered before the response begins. A name that cannot
    /// be resolved now is left to the download (which reports and retries).
    pub async fn precheck(&self, url: &reqwest::Url) -> Result<(), String> {
        self.check_url(url)?;
        let host = url.host_str().map(normal_host).unwrap_or_default();
        if host.parse::<IpAddr>().is_err() {
            if let Err(e) = allowed_addrs(&self.policy, &host).await {
                if let Some(refused) = e.downcast_ref::<Refused>() {
                    return Err(refused.to_string());
                }
            }
        }
        Ok(())
    }
}

/// The policy's refusal inside a client error (the resolver's error travels as the source
/// of reqwest's and hyper's errors).
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.to_string());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn class(text: &str) -> Class {
        classify(text.parse().unwrap())
    }

    #[test]
    fn addresses_are_classified() {
        for (ip, expected) in [
            ("8.8.8.8", Class::Public),
            ("1.1.1.1", Class::Public),
            ("127.0.0.1", Class::Loopback),
            ("127.255.0.9", Class::Loopback),
            ("10.0.0.5", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.31.255.255", Class::Private),
            ("172.32.0.1", Class::Public),
            ("192.168.1.1", Class::Private),
            ("100.64.0.1", Class::Shared),
            ("100.127.255.255", Class::Shared),
            ("100.128.0.1", Class::Public),
            ("169.254.1.1", Class::LinkLocal),
            ("169.254.169.254", Class::Metadata),
            ("100.100.100.200", Class::Metadata),
            ("0.0.0.0", Class::Unspecified),
            ("0.1.2.3", Class::Unspecified),
            ("224.0.0.1", Class::Multicast),
            ("239.255.255.250", Class::Multicast),
            ("255.255.255.255", Class::Broadcast),
            ("192.0.2.1", Class::Documentation),
            ("198.51.100.7", Class::Documentation),
            ("203.0.113.9", Class::Documentation),
            ("240.0.0.1", Class::Reserved),
            ("198.18.0.1", Class::Reserved),
            ("::", Class::Unspecified),
            ("::1", Class::Loopback),
            ("fe80::1", Class::LinkLocal),
            ("fc00::1", Class::UniqueLocal),
            ("fd12:3456::1", Class::UniqueLocal),
            ("fd00:ec2::254", Class::Metadata),
            ("ff02::1", Class::Multicast),
            ("2001:db8::1", Class::Documentation),
            ("2606:4700:4700::1111", Class::Public),
            ("2001:4860:4860::8888", Class::Public),
            ("100::1", Class::Reserved),
            ("4000::1", Class::Reserved),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_by_the_ipv4_address() {
        for (ip, expected) in [
            ("::ffff:127.0.0.1", Class::Loopback),
            ("::ffff:7f00:1", Class::Loopback),
            ("::ffff:10.1.2.3", Class::Private),
            ("::ffff:169.254.169.254", Class::Metadata),
            ("::ffff:192.168.0.1", Class::Private),
            ("::ffff:0.0.0.0", Class::Unspecified),
            ("::ffff:8.8.8.8", Class::Public),
            ("::127.0.0.1", Class::Loopback),
            ("64:ff9b::10.0.0.1", Class::Private),
            ("64:ff9b::a9fe:a9fe", Class::Metadata),
            ("64:ff9b:1::7f00:1", Class::Loopback),
            ("2002:7f00:1::1", Class::Loopback),
            ("2002:0808:0808::1", Class::Public),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn the_policy_allows_what_the_config_says() {
        let default = PullPolicy::new(false, &[]).unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(default.check("example.com", ip("93.184.215.14")).is_ok());
        let refused = default.check("10.0.0.5", ip("10.0.0.5")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "pull from 10.0.0.5 refused: private address; allow it with \
             serve.pull_allow_private = true, or list the host in serve.pull_allowed_hosts"
        );
        let named = default.check("Mirror.LAN.", ip("192.168.1.9")).unwrap_err();
        assert!(
            named
                .to_string()
                .starts_with("pull from mirror.lan (192.168.1.9) refused"),
            "{named}"
        );
        assert!(default
            .check("::ffff:127.0.0.1", ip("::ffff:127.0.0.1"))
            .is_err());

        let private = PullPolicy::new(true, &[]).unwrap();
        assert!(private.check("x", ip("127.0.0.1")).is_ok());
        assert!(private.check("x", ip("fd12::1")).is_ok());
        assert!(private.check("x", ip("100.64.1.1")).is_ok());
        let metadata = private.check("x", ip("169.254.169.254")).unwrap_err();
        assert!(
            metadata
                .to_string()
                .contains("cloud metadata address; only listing"),
            "{metadata}"
        );
        assert!(private.check("x", ip("fd00:ec2::254")).is_err());
        assert!(private.check("x", ip("224.0.0.1")).is_err());
        assert!(private.check("x", ip("0.0.0.0")).is_err());

        let listed = PullPolicy::new(
            false,
            &[
                "127.0.0.1".into(),
                "Mirror.Lan".into(),
                "10.1.0.0/16".into(),
                "[::1]".into(),
            ],
        )
        .unwrap();
        assert!(listed.check("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(
            listed.check("x", ip("::ffff:127.0.0.1")).is_ok(),
            "mapped form"
        );
        assert!(listed.check("127.0.0.2", ip("127.0.0.2")).is_err());
        assert!(listed.check("mirror.lan", ip("10.9.9.9")).is_ok());
        assert!(listed.check("other.lan", ip("10.9.9.9")).is_err());
        assert!(listed.check("other.lan", ip("10.1.200.3")).is_ok());
        assert!(listed.check("::1", ip("::1")).is_ok());

        let errors = PullPolicy::new(false, &["a b".into(), "10.0.0.0/99".into()]).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses_and_urls_are_checked() {
        let policy = Arc::new(PullPolicy::new(false, &[]).unwrap());
        let e = allowed_addrs(&policy, "localhost").await.unwrap_err();
        let message = refusal(e.as_ref()).unwrap();
        assert!(message.starts_with("pull from localhost (") && message.contains("loopback"));
        let open = PullPolicy::new(false, &["localhost".into()]).unwrap();
        assert!(!allowed_addrs(&open, "localhost").await.unwrap().is_empty());

        let puller = Puller::new(PullPolicy::new(false, &[]).unwrap());
        let url = |t: &str| reqwest::Url::parse(t).unwrap();
        assert!(puller.check_url(&url("https://example.com/x")).is_ok());
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://0x7f.1/x",
            "http://2130706433/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/",
            "ftp://example.com/x",
        ] {
            assert!(puller.check_url(&url(bad)).is_err(), "{bad}");
        }
        assert!(puller.precheck(&url("http://localhost:1/x")).await.is_err());
        // Through the client: the resolver's refusal comes back inside reqwest's error.
        let error = puller
            .client()
            .unwrap()
            .get("http://localhost:1/x")
            .send()
            .await
            .unwrap_err();
        let message = refusal(&error).unwrap();
        assert!(message.starts_with("pull from localhost ("), "{message}");
    }
}
