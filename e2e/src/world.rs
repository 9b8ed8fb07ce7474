//! The world most container tests start from: a loopback registry holding one test
//! image, a crustd with a CNI network of its own that has pulled it, and CRI helpers to
//! run pods and containers in it.

use std::{collections::HashMap, path::PathBuf};

use crust_proto::runtime::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ExecSyncResponse,
    ImageSpec, KeyValue, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RunPodSandboxRequest,
    StartContainerRequest,
};

use crate::{
    Crustd, Sandbox, SpawnOptions,
    cni::TestNetwork,
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    registry::Registry,
};

pub struct World {
    pub registry: Registry,
    /// The pulled image's reference.
    pub image: String,
    pub d: Crustd,
    /// Pods' log directories go below this.
    pub logs: PathBuf,
    pub net: TestNetwork,
    pub sb: Sandbox,
}

/// The pod options tests vary.
#[derive(Debug, Clone)]
pub struct PodOptions {
    pub name: String,
    /// The Kubernetes namespace in the pod's metadata.
    pub namespace: String,
    /// The RuntimeClass handler; empty for the default.
    pub handler: String,
    /// The pod's PID namespace mode (POD: shared by its containers).
    pub pid: NamespaceMode,
    pub host_network: bool,
    /// `LinuxSandboxSecurityContext.privileged`: the pod may run privileged containers.
    pub privileged: bool,
    /// Pod sysctls (`LinuxPodSandboxConfig.sysctls`).
    pub sysctls: Vec<(String, String)>,
    /// `namespace_options.userns_options` (KEP-127); `None`: not sent.
    pub userns: Option<crust_proto::runtime::v1::UserNamespace>,
}

impl PodOptions {
    /// A pod named `name` with CRI's defaults (the zero values): default handler, one
    /// PID namespace shared by its containers (POD), its own network.
    pub fn named(name: &str) -> PodOptions {
        PodOptions {
            name: name.into(),
            namespace: "e2e".into(),
            handler: String::new(),
            pid: NamespaceMode::Pod,
            host_network: false,
            privileged: false,
            sysctls: Vec::new(),
            userns: None,
        }
    }
    /// Sends `userns_options` for the pod.
    pub fn userns(mut self, userns: crust_proto::runtime::v1::UserNamespace) -> PodOptions {
        self.userns = Some(userns);
        self
    }

    pub fn privileged(mut self) -> PodOptions {
        self.privileged = true;
        self
    }
    pub fn sysctls(mut self, sysctls: &[(&str, &str)]) -> PodOptions {
        self.sysctls = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
    pub fn namespace(mut self, namespace: &str) -> PodOptions {
        self.namespace = namespace.into();
        self
    }
    pub fn handler(mut self, handler: &str) -> PodOptions {
        self.handler = handler.into();
        self
    }
    pub fn pid(mut self, pid: NamespaceMode) -> PodOptions {
        self.pid = pid;
        self
    }
    pub fn host_network(mut self) -> PodOptions {
        self.host_network = true;
        self
    }
}

impl World {
    /// Pushes `image` as `<repo>:v1` to a fresh registry, starts crustd with
    /// `extra_config` and a test network, and pulls the image.
    pub async fn start(image: &Image, repo: &str, extra_config: &str) -> World {
        Self::start_with(image, repo, extra_config, &SpawnOptions::default()).await
    }

    /// As [`World::start`], crustd started in the environment `options` sets up.
    pub async fn start_with(
        image: &Image,
        repo: &str,
        extra_config: &str,
        options: &SpawnOptions,
    ) -> World {
        let registry = Registry::start().await.expect("start the registry");
        registry
            .push_image(repo, &["v1"], image)
            .await
            .expect("push the test image");
        let reference = format!("{}/{repo}:v1", registry.host());
        let sb = Sandbox::new().expect("make a sandbox");
        sb.write_config(extra_config).expect("write the config");
        let net = TestNetwork::install(&sb, &[]);
        let mut d = sb.start_with(options).expect("start crustd");
        d.wait_ready().await.expect("crustd gets ready");
        d.image()
            .await
            .expect("connect")
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .expect("pull the test image");
        let logs = sb.path().join("logs");
        World {
            registry,
            image: reference,
            d,
            logs,
            net,
            sb,
        }
    }

    /// Runs a pod; its logs go to `<logs>/<name>`. Returns its id.
    pub async fn run_pod(&self, o: &PodOptions) -> String {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: o.name.clone(),
                uid: format!("uid-{}", o.name),
                namespace: o.namespace.clone(),
                attempt: 0,
            }),
            hostname: o.name.clone(),
            log_directory: self.logs.join(&o.name).display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                sysctls: o.sysctls.iter().cloned().collect(),
                security_context: Some(LinuxSandboxSecurityContext {
                    privileged: o.privileged,
                    namespace_options: Some(NamespaceOption {
                        pid: o.pid.into(),
                        network: if o.host_network {
                            NamespaceMode::Node.into()
                        } else {
                            NamespaceMode::Pod.into()
                        },
                        userns_options: o.userns.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.d
            .runtime()
            .await
            .expect("connect")
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: o.handler.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {}: {e}", o.name))
            .into_inner()
            .pod_sandbox_id
    }

    /// A container config running `command` from the test image, with env `WHO=crust`,
    /// label `name=<name>` and log file `<name>.log`.
    pub fn config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![KeyValue {
                key: "WHO".into(),
                value: "crust".into(),
            }],
            log_path: format!("{name}.log"),
            labels: HashMap::from([("name".into(), name.into())]),
            ..Default::default()
        }
    }

    pub async fn create(
        &self,
        pod: &str,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        };
        Ok(self
            .d
            .runtime()
            .await
            .expect("connect")
            .create_container(req)
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        self.d
            .runtime()
            .await
            .expect("connect")
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// StopContainer with a grace of `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        self.d
            .runtime()
            .await
            .expect("connect")
            .stop_container(crust_proto::runtime::v1::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    }

    /// Container `id`'s verbose `ContainerStatus` info (`info["info"]`: pid, cgroup,
    /// mounts, the OCI spec...), parsed.
    pub async fn verbose_info(&self, id: &str) -> serde_json::Value {
        let info = self
            .d
            .runtime()
            .await
            .expect("connect")
            .container_status(crust_proto::runtime::v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
            .info;
        serde_json::from_str(&info["info"]).expect("verbose info is JSON")
    }

    /// Creates and starts a container; panics on failure.
    pub async fn run(&self, pod: &str, config: ContainerConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = self
            .create(pod, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"));
        self.start_container(&id)
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    /// ExecSync `cmd` in container `id` with `timeout` seconds (0: none); the call's
    /// own error, such as DeadlineExceeded, is returned for the test to check.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        Ok(self
            .d
            .runtime()
            .await
            .expect("connect")
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await?
            .into_inner())
    }

    /// ExecSync `cmd` in container `id` (10 s timeout): (exit code, stdout, stderr).
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> (i32, String, String) {
        let r = self
            .exec_sync(id, cmd, 10)
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}"));
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }
}

/// A one-layer busybox image: `applets` as hard links to `/bin/busybox`, the usual
/// empty top-level directories, `/etc/passwd` and `/etc/group` with `root` and
/// `app` (1000:1000), `Cmd ["sh"]` and `PATH=/bin`. `extra` adds files to the layer.
pub fn busybox_image(applets: &[&str], extra: impl FnOnce(&mut LayerBuilder)) -> Image {
    let mut layer = LayerBuilder::new();
    layer.busybox(applets).expect("busybox-static is installed");
    for dir in ["etc", "proc", "sys", "dev", "tmp"] {
        layer.dir(dir, 0o755);
    }
    layer
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644);
    extra(&mut layer);
    Image::build(
        vec![layer.finish(Compression::Gzip)],
        host_arch(),
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
    )
}
