//! A CNI network of the test's own: a uniquely named bridge and subnet, IPAM state in
//! the sandbox dir, and the bridge removed on drop, so tests never touch the host's
//! own networks.

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::Sandbox;

static N: AtomicU32 = AtomicU32::new(0);

/// The test network written into a sandbox's CNI config dir.
pub struct TestNetwork {
    pub name: String,
    pub bridge: String,
    /// `10.X.Y.0/24`.
    pub subnet: String,
    pub gateway: String,
    pub ipam_dir: PathBuf,
}

impl TestNetwork {
    /// Writes `10-<name>.conflist` (bridge + host-local + portmap, plus `extra`
    /// plugins appended to the chain) into the sandbox's CNI conf dir.
    pub fn install(sb: &Sandbox, extra_plugins: &[&str]) -> TestNetwork {
        Self::install_with(sb, true, extra_plugins)
    }

    /// As [`TestNetwork::install`], optionally without portmap.
    pub fn install_with(sb: &Sandbox, portmap: bool, extra_plugins: &[&str]) -> TestNetwork {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let (b, c) = (100 + pid % 100, (pid / 100 + n * 7) % 250 + 1);
        let name = format!("crust-e2e-{pid}-{n}");
        let bridge = format!("cre{:x}{n}", pid % 0xffff);
        let ipam_dir = sb.path().join("ipam");
        let subnet = format!("10.{b}.{c}.0/24");
        let gateway = format!("10.{b}.{c}.1");
        let mut plugins = vec![format!(
            r#"{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"{subnet}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
            ipam_dir.display()
        )];
        if portmap {
            plugins.push(r#"{"type":"portmap","capabilities":{"portMappings":true}}"#.to_string());
        }
        plugins.extend(extra_plugins.iter().map(|p| p.to_string()));
        let conflist = format!(
            r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{}]}}"#,
            plugins.join(",")
        );
        fs::write(
            sb.cni_conf_dir().join(format!("10-{name}.conflist")),
            conflist,
        )
        .expect("write conflist");
        TestNetwork {
            name,
            bridge,
            subnet,
            gateway,
            ipam_dir,
        }
    }

    /// veth interfaces still attached to the test bridge.
    pub fn attached_veths(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    l.split(": ")
                        .nth(1)
                        .map(|n| n.split('@').next().unwrap_or(n).to_string())
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Addresses host-local still has allocated.
    pub fn allocated_ips(&self) -> Vec<String> {
        let dir = self.ipam_dir.join(&self.name);
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// iptables rules (any table) that mention this network.
    pub fn iptables_rules(&self) -> Vec<String> {
        let out = Command::new("iptables-save")
            .output()
            .expect("iptables-save");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&self.name))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
