//! Where the gateway may download from: a URL's host must be one its plugin declares
//! (`fetch-hosts`; the caller adds the host of the channel the task runs on, which the
//! operator configured and the plugin talks to anyway) and the operator allows
//! (`fetch_allow_hosts`), over https, and every address
//! it connects to must be public, unless the operator names the host in
//! `fetch_allow_private_hosts` (then http is allowed too: local mocks, a private CDN).
//!
//! Invariants (tests below):
//! - a connection goes only to an address checked here: names are resolved by
//!   `GuardedResolver`, which drops non-public addresses, so a name that resolves (or
//!   rebinds) to a private address gets no connection; IP literals are checked before the
//!   request is made (the connector does not resolve them);
//! - a pattern is a host name or `*.` and a domain (`*` alone: the operator's "whatever the
//!   plugin declares"); nothing else loads.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The operator's rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Host patterns the operator allows; `*` allows what plugins declare.
    pub allow_hosts: Vec<String>,
    /// Hosts (names or IP literals, exactly) allowed to be private, and over http.
    pub private_hosts: Vec<String>,
}

/// Why a URL is refused (for the operator's log and the task's message).
pub type Refusal = String;

/// Checks a host pattern as a plugin or operator writes it.
pub fn check_pattern(p: &str, star_alone: bool) -> Result<(), String> {
    let name = p.strip_prefix("*.").unwrap_or(p);
    if p == "*" && star_alone {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("'{p}' is not a host name or '*.' and a domain"))
    }
}

fn matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        _ if pattern == "*" => true,
        Some(domain) => host.strip_suffix(domain).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == host,
    }
}

impl Rules {
    fn private_ok(&self, host: &str) -> bool {
        self.private_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Checks an absolute URL a plugin (declaring `plugin_hosts`) asks the gateway to download.
    pub fn check(&self, url: &str, plugin_hosts: &[String]) -> Result<http::Uri, Refusal> {
        let (uri, host) = self.vet(url, "the output's URL")?;
        if !plugin_hosts.iter().any(|p| p != "*" && matches(p, &host)) {
            return Err(format!(
                "the plugin does not declare the host '{host}' in its fetch-hosts (nor is it the channel's)"
            ));
        }
        if !self.allow_hosts.iter().any(|p| matches(p, &host)) {
            return Err(format!("the operator does not allow the host '{host}' (fetch_allow_hosts)"));
        }
        Ok(uri)
    }

    /// Checks a consumer's callback URL against the operator's `webhook_allow_hosts`.
    pub fn check_callback(&self, url: &str, allowed: &[String]) -> Result<http::Uri, Refusal> {
        let (uri, host) = self.vet(url, "the callback URL")?;
        if !allowed.iter().any(|p| matches(p, &host)) {
            return Err(format!("the operator does not allow callbacks to '{host}' (webhook_allow_hosts)"));
        }
        Ok(uri)
    }

    /// What every URL the gateway reaches must be: absolute, https (http only to a named
    /// private host), no credentials, not a private address unless named. Messages name the
    /// host at most: a consumer sees them, and a vendor URL (signed, downloadable) must not
    /// reach a consumer the archive did not serve.
    fn vet(&self, url: &str, what: &str) -> Result<(http::Uri, String), Refusal> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{what} is not a URL"))?;
        let host = uri.host().ok_or_else(|| format!("{what} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let private_ok = self.private_ok(&host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            if !private_ok && !is_public(ip) {
                return Err(format!(
                    "'{host}' is not a public address (fetch_allow_private_hosts names the private hosts allowed)"
                ));
            }
        }
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if private_ok => {}
            _ => return Err(format!("{what} on '{host}' is not https")),
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("{what} on '{host}' carries credentials"));
        }
        Ok((uri, host))
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local,
/// shared, documentation, multicast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments, Teredo
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
                || s[0] == 0x5f00 // segment routing
                || (s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0) // IPv4-translated
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: reaches IPv4 addresses unchecked
                || (s[0] == 0x2002) // 6to4: likewise
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || ip.is_unspecified()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || a >= 240) // reserved
}

/// A name that resolves to no address the rules allow (a refusal, not a network failure).
#[derive(Debug)]
pub struct NotPublic(pub String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' resolves to no public address (fetch_allow_private_hosts names the private hosts allowed)",
            self.0
        )
    }
}

impl std::error::Error for NotPublic {}

/// Whether a connection failed because the resolver refused every address.
pub fn refused(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(n) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<NotPublic>()) {
            return Some(n.to_string());
        }
        next = e.source();
    }
    None
}

/// A resolver for hyper's connector that keeps only addresses the rules allow.
#[derive(Clone)]
pub struct GuardedResolver {
    rules: Arc<Rules>,
}

impl GuardedResolver {
    pub fn new(rules: Arc<Rules>) -> Self {
        GuardedResolver { rules }
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let rules = Arc::clone(&self.rules);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let private_ok = rules.private_ok(&host);
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = all.into_iter().filter(|a| private_ok || is_public(a.ip())).collect();
            if kept.is_empty() {
                return Err(std::io::Error::other(NotPublic(host)));
            }
            Ok(kept.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], private: &[&str]) -> Rules {
        Rules {
            allow_hosts: allow.iter().map(|s| s.to_string()).collect(),
            private_hosts: private.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn declared(hosts: &[&str]) -> Vec<String> {
        hosts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_url_needs_https_a_declared_and_allowed_host_and_a_public_address() {
        let r = rules(&["*"], &[]);
        let cdn = declared(&["*.kling-cdn.com", "files.example.org"]);
        assert!(r.check("https://v1.kling-cdn.com/a.mp4?sig=x", &cdn).is_ok());
        assert!(r.check("https://FILES.example.org/a", &cdn).is_ok());
        for (url, why) in [
            ("http://v1.kling-cdn.com/a.mp4", "https"),
            ("https://kling-cdn.com/a.mp4", "declare"),
            ("https://evil-kling-cdn.com/a.mp4", "declare"),
            ("https://v1.kling-cdn.com.evil.net/a", "declare"),
            ("https://user:pw@v1.kling-cdn.com/a", "credentials"),
            ("ftp://files.example.org/a", "https"),
            ("/v1/files/1", "host"),
        ] {
            let e = r.check(url, &cdn).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        // The operator narrows what plugins declare; '*' from a plugin allows nothing.
        let narrow = rules(&["files.example.org"], &[]);
        assert!(narrow.check("https://v1.kling-cdn.com/a", &cdn).unwrap_err().contains("operator"));
        assert!(r.check("https://anything.com/a", &declared(&["*"])).is_err());
        // Private addresses only when the operator names the host; then http too.
        let local = declared(&["127.0.0.1", "10.0.0.5"]);
        assert!(r.check("https://10.0.0.5/a", &local).unwrap_err().contains("public"));
        assert!(r.check("http://127.0.0.1:9/a", &local).unwrap_err().contains("fetch_allow_private_hosts"));
        // A refusal never repeats the URL (its signature would let a consumer download it).
        let e = r.check("http://v1.kling-cdn.com/a.mp4?sig=secret", &cdn).unwrap_err();
        assert!(e.contains("v1.kling-cdn.com") && !e.contains("secret"), "{e}");
        let named = rules(&["*"], &["127.0.0.1"]);
        assert!(named.check("http://127.0.0.1:9/a", &local).is_ok());
        // Callbacks: only to hosts the operator lists, by the same address rules.
        let hooks = declared(&["*.example.com", "127.0.0.1"]);
        assert!(r.check_callback("https://app.example.com/hook", &hooks).is_ok());
        assert!(r.check_callback("https://evil.net/hook", &hooks).unwrap_err().contains("webhook_allow_hosts"));
        assert!(r.check_callback("http://app.example.com/hook", &hooks).unwrap_err().contains("https"));
        assert!(r.check_callback("http://127.0.0.1:9/hook", &hooks).unwrap_err().contains("public"));
        assert!(named.check_callback("http://127.0.0.1:9/hook", &hooks).is_ok());
        assert!(named.check("https://10.0.0.5/a", &local).is_err());
    }

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
            "::127.0.0.1",
            "fec0::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "100::1",
            "5f00::1",
            "::ffff:0:a00:1",
            "192.88.99.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn patterns_are_host_names_or_wildcard_domains() {
        for ok in ["cdn.example.com", "*.example.com", "localhost", "127.0.0.1"] {
            assert!(check_pattern(ok, false).is_ok(), "{ok}");
        }
        assert!(check_pattern("*", true).is_ok());
        for bad in ["*", "*.", "https://x.com", "x.com/a", "x.com:443", "a..b", "*.*.com", ""] {
            assert!(check_pattern(bad, false).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_get_no_address() {
        use tower_service::Service;
        let name = |s: &str| s.parse::<hyper_util::client::legacy::connect::dns::Name>().unwrap();
        let mut strict = GuardedResolver::new(Arc::new(rules(&["*"], &[])));
        let e = strict.call(name("localhost")).await.unwrap_err();
        assert!(refused(&e).is_some_and(|m| m.contains("localhost")), "{e}");
        let mut named = GuardedResolver::new(Arc::new(rules(&["*"], &["localhost"])));
        assert!(named.call(name("localhost")).await.unwrap().next().is_some());
    }
}
