//! The network a newcomer's first pod gets: `crustd cni install-default` writes this
//! conflist when the config directory has none, so pods have an IP and hostPorts work.

/// Bridge `crust0` with host-local IPAM on 10.88.0.0/16, masquerade for egress,
/// portmap for hostPorts. (The pod's `lo` is brought up by the monitor.)
pub const DEFAULT_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "crust",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "crust0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
"#;

/// File name it is installed under.
pub const DEFAULT_CONFLIST_NAME: &str = "10-crust.conflist";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_conflist_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEFAULT_CONFLIST_NAME), DEFAULT_CONFLIST).unwrap();
        let bins = vec![std::path::PathBuf::from("/usr/lib/cni")];
        let net = crate::default_network(dir.path(), &bins)
            .expect("valid with Debian's plugins installed");
        assert_eq!(net.name, "crust");
        assert_eq!(net.plugins, vec!["bridge", "portmap"]);
    }
}
