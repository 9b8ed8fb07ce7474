//! The pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, shared by its
//! containers.

use super::DnsConfig;

/// `/etc/hosts` for a pod with its own network namespace. The pod's IP line is added
/// when networking assigns one.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// `/etc/resolv.conf` from the pod's DNS config (kubelet computes it from the pod's
/// dnsPolicy), in resolv.conf(5) syntax.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// Checks the DNS config cannot inject extra resolv.conf lines.
pub fn validate_dns(dns: &DnsConfig) -> Result<(), String> {
    for value in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(format!("{value:?} is empty or contains whitespace"));
        }
    }
    for server in &dns.servers {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("server {server:?} is not an IP address"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lines() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.96.0.10\nnameserver fd00::a\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        assert!(validate_dns(&dns).is_ok());
        let empty = DnsConfig::default();
        assert_eq!(resolv_conf(&empty), "");
    }

    #[test]
    fn dns_injection_is_refused() {
        for bad in [
            DnsConfig {
                servers: vec!["1.1.1.1\nnameserver 6.6.6.6".into()],
                ..Default::default()
            },
            DnsConfig {
                searches: vec!["a b".into()],
                ..Default::default()
            },
            DnsConfig {
                servers: vec!["dns.example".into()],
                ..Default::default()
            },
        ] {
            assert!(validate_dns(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_names_the_pod() {
        assert!(hosts("web-0").ends_with("127.0.1.1\tweb-0\n"));
    }
}
