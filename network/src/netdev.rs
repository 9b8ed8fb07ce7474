//! Interface counters of a pod's network namespace, for PodSandboxStats and
//! ListPodSandboxMetrics.
//!
//! `/proc/<pid>/net/dev` shows the namespace of a process, and `setns` changes only
//! the calling thread: so a short-lived OS thread of our own joins the pod's namespace
//! (its pin file) and reads `/proc/thread-self/net/dev`, which follows the thread, not
//! the process. The thread ends right after, so no other work ever runs in the pod's
//! namespace. This needs no process in the pod (a pod without containers has counters
//! too) and no netlink socket.

use std::{fs, io, path::Path};

use crate::NetworkError;

/// The cumulative counters of one interface, as `/proc/net/dev` has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: rx(8 fields) tx(8 fields)`
/// per interface (net/core/net-procfs.c, `dev_seq_printf_stats`). Lines that do not
/// have that shape are skipped rather than failing the whole read.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            // rx: bytes packets errs drop fifo frame compressed multicast;
            // tx: bytes packets errs drop fifo colls carrier compressed.
            if fields.len() < 16 {
                return None;
            }
            Some(InterfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: fields[0],
                rx_packets: fields[1],
                rx_errors: fields[2],
                rx_dropped: fields[3],
                tx_bytes: fields[8],
                tx_packets: fields[9],
                tx_errors: fields[10],
                tx_dropped: fields[11],
            })
        })
        .collect()
}

/// The interfaces of the network namespace pinned at `netns`, read from
/// `<proc_root>/thread-self/net/dev` by a thread that joins it. Blocking (a thread
/// spawn and join, well under a millisecond); call it off the async runtime's
/// workers when that matters.
pub fn interface_counters(
    netns: &Path,
    proc_root: &Path,
) -> Result<Vec<InterfaceCounters>, NetworkError> {
    let err = |op: &'static str| {
        let netns = netns.to_path_buf();
        move |source: io::Error| NetworkError::NetDev { op, netns, source }
    };
    let (open_err, join_err, read_err) = (err("open"), err("join"), err("read net/dev in"));
    let (pin, file) = (netns.to_path_buf(), proc_root.join("thread-self/net/dev"));
    let reader = std::thread::Builder::new()
        .name("netns-stats".into())
        .spawn(move || -> Result<String, NetworkError> {
            let ns = fs::File::open(&pin).map_err(open_err)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| join_err(e.into()))?;
            fs::read_to_string(&file).map_err(read_err)
        })
        .map_err(err("start a thread to read"))?;
    let text = reader
        .join()
        .map_err(|_| err("read (the thread panicked)")(io::Error::other("panic")))??;
    Ok(parse_net_dev(&text))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1400      14    0    0    0     0          0         0     1400      14    0    0    0     0       0          0
  eth0: 9876543    1234    5    6    0     0          0         7  1234567     987    8    9    0     0       0          0
";

    #[test]
    fn net_dev_parses_every_interface() {
        let ifs = parse_net_dev(SAMPLE);
        assert_eq!(ifs.len(), 2, "lo and eth0: {ifs:?}");
        assert_eq!(ifs[0].name, "lo");
        assert_eq!(
            ifs[1],
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 9876543,
                rx_packets: 1234,
                rx_errors: 5,
                rx_dropped: 6,
                tx_bytes: 1234567,
                tx_packets: 987,
                tx_errors: 8,
                tx_dropped: 9,
            }
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for (text, why) in [
            ("", "empty"),
            ("eth0: 1 2 3\n", "too few fields"),
            (
                "eth0: 1 2 3 4 5 6 7 8 x 10 11 12 13 14 15 16\n",
                "not a number",
            ),
            ("just a header line\n", "no colon"),
        ] {
            assert_eq!(parse_net_dev(text), vec![], "{why}");
        }
    }

    #[test]
    fn a_missing_pin_is_an_error_naming_it() {
        let err =
            interface_counters(Path::new("/nonexistent/ns/net"), Path::new("/proc")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns/net"), "{err}");
    }

    /// Our own namespace, through its `/proc/self/ns/net` link: the same interfaces as
    /// `/proc/self/net/dev` (as root only: joining a namespace needs CAP_SYS_ADMIN).
    #[test]
    fn own_namespace_reads_like_proc_net_dev() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: setns needs root");
            return;
        }
        let ifs = interface_counters(Path::new("/proc/self/ns/net"), Path::new("/proc"))
            .expect("read our own namespace");
        let names = |v: &[InterfaceCounters]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        let direct = parse_net_dev(&fs::read_to_string("/proc/self/net/dev").unwrap());
        assert_eq!(names(&ifs), names(&direct));
        assert!(ifs.iter().any(|i| i.name == "lo"), "{ifs:?}");
    }

    /// A fresh namespace of the test's own (`unshare --net`), up with a little traffic
    /// on its `lo`: the thread reads that namespace, not ours.
    #[test]
    fn another_namespace_is_read_from_inside() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: namespaces need root");
            return;
        }
        let mut child = std::process::Command::new("unshare")
            .args(["--net", "sh", "-c"])
            .arg("ip link set lo up && busybox ping -c 3 -i 0.2 -s 500 127.0.0.1 >/dev/null; sleep 60")
            .spawn()
            .expect("unshare (util-linux)");
        let pin = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
        let mut seen = None;
        // Until the pings (busybox-static) have gone out: 3 requests and 3 replies on lo.
        let ours = fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..200 {
            // Until unshare has made the namespace: before that, the child's link is
            // still ours.
            if fs::read_link(&pin).is_ok_and(|ns| ns == ours) {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let ifs = interface_counters(&pin, Path::new("/proc")).expect("read the namespace");
            if ifs.iter().any(|i| i.name == "lo" && i.tx_packets >= 6) {
                seen = Some(ifs);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Only the process we started, by its PID.
        let _ = child.kill();
        let _ = child.wait();
        let ifs = seen.expect("the pings show on the namespace's lo");
        assert_eq!(
            ifs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["lo"],
            "a fresh namespace has only lo"
        );
        assert!(ifs[0].tx_bytes >= 3 * 500, "{ifs:?}");
    }
}
