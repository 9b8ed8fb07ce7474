//! The configurable output bounds: `[runtime] max_log_line_size` splits long lines into
//! partial (`P`) CRI log records, and `exec_sync_output_limit` cuts ExecSync output
//! per stream and says so on stderr.

use crust_e2e::world::{PodOptions, World, busybox_image};

/// (stream, tag, text) of every CRI log record.
fn records(path: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let _ts = p.next().unwrap();
            (
                p.next().unwrap().to_string(),
                p.next().unwrap().to_string(),
                p.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn long_log_lines_split_and_exec_output_is_cut_at_the_configured_sizes() {
    let image = busybox_image(&["sh", "head", "tr", "echo", "sleep"], |_| {});
    let w = World::start(
        &image,
        "test/limits",
        "[runtime]\nmax_log_line_size = 100\nexec_sync_output_limit = 1000\n",
    )
    .await;
    let pod = w.run_pod(&PodOptions::named("limits")).await;
    let id = w
        .run(
            &pod,
            w.config(
                "talker",
                &[
                    "sh",
                    "-c",
                    "head -c 250 /dev/zero | tr '\\0' a; echo; echo short; exec sleep 3600",
                ],
            ),
        )
        .await;

    let log = w.logs.join("limits").join("talker.log");
    let mut got = Vec::new();
    for _ in 0..500 {
        got = records(&log);
        if got.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let shape: Vec<(&str, &str, usize)> = got
        .iter()
        .map(|(s, t, text)| (s.as_str(), t.as_str(), text.len()))
        .collect();
    assert_eq!(
        shape,
        [
            ("stdout", "P", 100),
            ("stdout", "P", 100),
            ("stdout", "F", 50),
            ("stdout", "F", 5)
        ],
        "a 250-byte line becomes 100 + 100 + 50 with max_log_line_size = 100: {got:?}"
    );
    assert!(got[..3].iter().all(|(_, _, t)| t.chars().all(|c| c == 'a')));

    let (code, out, err) = w
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "head -c 5000 /dev/zero | tr '\\0' b; echo done >&2",
            ],
        )
        .await;
    assert_eq!(code, 0);
    assert_eq!(out.len(), 1000, "stdout is cut at exec_sync_output_limit");
    assert!(out.chars().all(|c| c == 'b'));
    assert!(
        err.starts_with("done\n") && err.contains("truncated at 1000 bytes per stream"),
        "stderr keeps its own output and notes the cut: {err:?}"
    );
    let (_, small, err) = w.exec(&id, &["echo", "fits"]).await;
    assert_eq!(
        (small.as_str(), err.as_str()),
        ("fits\n", ""),
        "no note when nothing was cut"
    );
}

#[tokio::test]
async fn out_of_range_output_limits_are_config_errors() {
    let sb = crust_e2e::Sandbox::new().unwrap();
    for (extra, key) in [
        (
            "[runtime]\nmax_log_line_size = 10\n",
            "runtime.max_log_line_size",
        ),
        (
            "[runtime]\nexec_sync_output_limit = 9000000\n",
            "runtime.exec_sync_output_limit",
        ),
    ] {
        sb.write_config(extra).unwrap();
        let mut d = sb.start().unwrap();
        let status = d
            .wait_exit(std::time::Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(2), "{key}: a config error exits 2");
        assert!(d.logs().contains(key), "{key} named: {}", d.logs());
    }
}

/// `[runtime] pids_limit` becomes every container's `pids.max`, and a fork bomb stops
/// there.
#[tokio::test]
async fn pids_limit_caps_every_container() {
    let image = busybox_image(&["sh", "sleep"], |_| {});
    let w = World::start(&image, "test/pids", "[runtime]\npids_limit = 20\n").await;
    let pod = w.run_pod(&PodOptions::named("pids")).await;
    let id = w.run(&pod, w.config("capped", &["sleep", "3600"])).await;
    let details = w.verbose_info(&id).await;
    let cgroup = details["cgroup"].as_str().unwrap().trim_start_matches('/');
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/{cgroup}/pids.max"))
        .expect("the v1 pids controller");
    assert_eq!(max.trim(), "20");
    let (_, _, err) = w
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 30 ]; do sleep 60 & i=$((i+1)); done",
            ],
        )
        .await;
    assert!(
        err.contains("fork"),
        "the 21st process cannot be forked: {err:?}"
    );
}
