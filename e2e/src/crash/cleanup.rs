//! Removing everything through the CRI, and what may not be left on the host.
use std::{
    fs,
    time::{Duration, Instant},
};

use crust_proto::runtime::v1::{
    ImageSpec, ListImagesRequest, RemoveContainerRequest, RemoveImageRequest,
};

use super::*;

impl Injector {
    /// Removes every container, pod and image through the CRI, then looks for what
    /// is left on the host.
    pub(super) async fn cleanup(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        for c in self.containers().await {
            if let Err(e) = self
                .rt()
                .await
                .remove_container(RemoveContainerRequest {
                    container_id: c.id.clone(),
                })
                .await
            {
                v.push(format!("cleanup: RemoveContainer {}: {e}", c.id));
            }
        }
        for p in self.pods().await {
            if let Err(e) = self.remove_pod(&p.id).await {
                v.push(format!("cleanup: RemovePodSandbox {}: {e}", p.id));
            }
        }
        let images = self
            .im()
            .await
            .list_images(ListImagesRequest { filter: None })
            .await
            .map(|r| r.into_inner().images)
            .unwrap_or_default();
        for i in images {
            if let Err(e) = self
                .im()
                .await
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image: i.id.clone(),
                        ..Default::default()
                    }),
                })
                .await
            {
                v.push(format!("cleanup: RemoveImage {}: {e}", i.id));
            }
        }
        if !self.pods().await.is_empty() || !self.containers().await.is_empty() {
            v.push("cleanup: pods or containers still listed after removal".into());
        }
        v.extend(self.leaks("after cleanup", true).await);
        // Best effort, so one trial's leak does not count again in the next.
        if !v.is_empty() {
            self.scrub();
        }
        v
    }

    /// Everything left on the host that only pods and containers make (and, with
    /// `images`, images), polled for a few seconds: killed processes leave
    /// asynchronously.
    pub(super) async fn leaks(&self, when: &str, images: bool) -> Vec<String> {
        let mut found = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            found.clear();
            let sb = &self.w.sb;
            found.extend(sb.mounts().iter().map(|m| format!("mount {}", m.display())));
            found.extend(
                entries(&sb.state().join("ns"))
                    .iter()
                    .map(|p| format!("netns pin dir {}", p.display())),
            );
            found.extend(
                self.w
                    .net
                    .attached_veths()
                    .iter()
                    .map(|v| format!("veth {v}")),
            );
            found.extend(
                self.w
                    .net
                    .allocated_ips()
                    .iter()
                    .map(|ip| format!("IPAM lease {ip}")),
            );
            found.extend(
                sb.cgroups()
                    .iter()
                    .filter(|c| c.to_string_lossy().contains("/pods/"))
                    .map(|c| format!("cgroup {}", c.display())),
            );
            found.extend(
                entries(&sb.state().join("pods"))
                    .iter()
                    .map(|p| format!("pod dir {}", p.display())),
            );
            found.extend(
                entries(&sb.root().join("containers"))
                    .iter()
                    .map(|p| format!("container dir {}", p.display())),
            );
            for dir in ["image/layers", "image/tmp"].iter().filter(|_| images) {
                found.extend(
                    entries(&sb.root().join(dir))
                        .iter()
                        .map(|p| format!("image store {}", p.display())),
                );
            }
            found.extend(
                self.processes()
                    .iter()
                    .map(|(pid, cmd)| format!("process {pid} ({cmd})")),
            );
            if found.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found
            .into_iter()
            .map(|f| format!("leak {when}: {f}"))
            .collect()
    }

    /// Processes of this world other than crustd: in its cgroups, or naming its
    /// directory on their command line or as their working directory.
    pub(super) fn processes(&self) -> Vec<(i32, String)> {
        let me = std::process::id() as i32;
        let crustd = self.w.d.pid().as_raw();
        let dir = self.w.sb.path().display().to_string();
        let prefix = self.w.sb.cgroup_prefix();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me || pid == crustd {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let cwd = fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            let in_cgroup = cgroup.lines().any(|l| {
                l.split(':')
                    .nth(2)
                    .is_some_and(|p| p.starts_with(&format!("{prefix}/")))
            });
            if in_cgroup || cmd.contains(&dir) || cwd.starts_with(&dir) {
                found.push((pid, cmd.trim().to_string()));
            }
        }
        found
    }

    /// Undoes leftovers by hand (what Sandbox's drop does) so trials stay independent.
    pub(super) fn scrub(&self) {
        for (pid, _) in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut mounts = self.w.sb.mounts();
        mounts.reverse();
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
