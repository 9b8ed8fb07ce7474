//! Table tests of the CRI input bounds (convert_limits): one case per refused field,
//! each checking the field named, the message and its length.

use crust_proto::runtime::v1 as cri;

use crate::{convert_limits::*, error::ApiError};

fn pod() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "p".into(),
            uid: "u".into(),
            namespace: "n".into(),
            attempt: 0,
        }),
        log_directory: "/var/log/pods/n_p_u".into(),
        ..Default::default()
    }
}

fn container() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        command: vec!["sh".into()],
        log_path: "c/0.log".into(),
        ..Default::default()
    }
}

/// The field and a part of the message expected, or `None` for "accepted".
type Want = Option<(&'static str, &'static str)>;

fn check(name: &str, got: Result<(), ApiError>, want: Want) {
    match (got, want) {
        (Ok(()), None) => {}
        (Err(e), Some((field, text))) => {
            let msg = e.to_string();
            assert!(
                matches!(&e, ApiError::InvalidArgument { field: f, .. } if *f == field),
                "{name}: {msg} should name {field}"
            );
            assert!(msg.contains(text), "{name}: {msg:?} lacks {text:?}");
            assert!(msg.len() < 400, "{name}: message of {} bytes", msg.len());
        }
        (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn pod_config_table() {
    let big = "a".repeat(1 << 20);
    type Edit = Box<dyn Fn(&mut cri::PodSandboxConfig)>;
    let port =
        |p: cri::PortMapping| -> Edit { Box::new(move |c| c.port_mappings = vec![p.clone()]) };
    let ok_port = cri::PortMapping {
        protocol: 0,
        container_port: 80,
        host_port: 8080,
        host_ip: String::new(),
    };
    let ann = |k: &str, v: &str| -> Edit {
        let (k, v) = (k.to_string(), v.to_string());
        Box::new(move |c| {
            c.annotations.insert(k.clone(), v.clone());
        })
    };
    let sc = |f: fn(&mut cri::LinuxSandboxSecurityContext)| -> Edit {
        Box::new(move |c| {
            let mut s = cri::LinuxSandboxSecurityContext::default();
            f(&mut s);
            c.linux = Some(cri::LinuxPodSandboxConfig {
                security_context: Some(s),
                ..Default::default()
            });
        })
    };
    let b = big.clone();
    let cases: Vec<(&str, Edit, Want)> = vec![
        ("defaults pass", Box::new(|_| {}), None),
        (
            "1 MiB name",
            Box::new(move |c| c.metadata.as_mut().unwrap().name = b.clone()),
            Some(("config.metadata.name", "1048576 bytes, more than 253")),
        ),
        (
            "namespace over a DNS label",
            Box::new(|c| c.metadata.as_mut().unwrap().namespace = "n".repeat(64)),
            Some(("config.metadata.namespace", "more than 63")),
        ),
        (
            "CNI_ARGS separator in uid",
            Box::new(|c| c.metadata.as_mut().unwrap().uid = "u;K8S_POD_NAME=x".into()),
            Some(("config.metadata.uid", "';'")),
        ),
        (
            "NUL in name",
            Box::new(|c| c.metadata.as_mut().unwrap().name = "a\0b".into()),
            Some(("config.metadata.name", "control character")),
        ),
        (
            "no name",
            Box::new(|c| c.metadata.as_mut().unwrap().name.clear()),
            Some(("config.metadata.name", "is required")),
        ),
        (
            "no namespace",
            Box::new(|c| c.metadata.as_mut().unwrap().namespace.clear()),
            Some(("config.metadata.namespace", "is required")),
        ),
        (
            "no uid",
            Box::new(|c| c.metadata.as_mut().unwrap().uid.clear()),
            Some(("config.metadata.uid", "is required")),
        ),
        (
            "long hostname",
            Box::new(|c| c.hostname = "h".repeat(65)),
            Some(("config.hostname", "more than 64")),
        ),
        (
            "relative log directory",
            Box::new(|c| c.log_directory = "logs/p".into()),
            Some(("config.log_directory", "not an absolute path")),
        ),
        (
            "dot-dot log directory",
            Box::new(|c| c.log_directory = "/var/log/../../etc".into()),
            Some(("config.log_directory", "\"..\"")),
        ),
        ("good port", port(ok_port.clone()), None),
        (
            "host port 70000",
            port(cri::PortMapping {
                host_port: 70000,
                ..ok_port.clone()
            }),
            Some(("config.port_mappings", "host_port 70000")),
        ),
        (
            "negative host port",
            port(cri::PortMapping {
                host_port: -5,
                ..ok_port.clone()
            }),
            Some(("config.port_mappings", "host_port -5")),
        ),
        (
            "negative container port",
            port(cri::PortMapping {
                container_port: -1,
                ..ok_port.clone()
            }),
            Some(("config.port_mappings", "container_port -1")),
        ),
        (
            "protocol 99",
            port(cri::PortMapping {
                protocol: 99,
                ..ok_port.clone()
            }),
            Some(("config.port_mappings", "protocol: unknown value 99")),
        ),
        (
            "host ip not an ip",
            port(cri::PortMapping {
                host_ip: "not-an-ip".into(),
                ..ok_port.clone()
            }),
            Some(("config.port_mappings", "\"not-an-ip\" is not an IP")),
        ),
        (
            "good bandwidth",
            ann("kubernetes.io/ingress-bandwidth", "10M"),
            None,
        ),
        (
            "bad bandwidth",
            ann("kubernetes.io/ingress-bandwidth", "lots"),
            Some(("config.annotations", "kubernetes.io/ingress-bandwidth")),
        ),
        (
            "annotations over 256 KiB",
            ann("big", &"v".repeat(MAP_TOTAL_MAX)),
            Some(("config.annotations", "bytes in all")),
        ),
        (
            "annotations at the API limit plus kubelet's own",
            Box::new(|c| {
                c.annotations
                    .insert("user".into(), "v".repeat(ANNOTATIONS_API_MAX - 4));
                c.annotations
                    .insert("io.kubernetes.container.hash".into(), "x".repeat(2048));
                c.labels
                    .insert("io.kubernetes.pod.name".into(), "p".repeat(253));
            }),
            None,
        ),
        (
            "labels and annotations together over the bound",
            Box::new(|c| {
                c.annotations
                    .insert("a".into(), "v".repeat(MAP_TOTAL_MAX / 2));
                for i in 0..60 {
                    c.labels.insert(format!("l{i}"), "v".repeat(4000));
                }
            }),
            Some(("config.annotations", "labels (")),
        ),
        (
            "label key too long",
            Box::new(|c| {
                c.labels.insert("k".repeat(400), "v".into());
            }),
            Some(("config.labels", "key")),
        ),
        (
            "namespace mode 9",
            sc(|s| {
                s.namespace_options = Some(cri::NamespaceOption {
                    network: 9,
                    ..Default::default()
                })
            }),
            Some((
                "config.linux.security_context.namespace_options",
                "unknown value 9",
            )),
        ),
        (
            "seccomp type 9",
            sc(|s| {
                s.seccomp = Some(cri::SecurityProfile {
                    profile_type: 9,
                    localhost_ref: String::new(),
                })
            }),
            Some(("config.linux.security_context.seccomp", "unknown value 9")),
        ),
        (
            "negative overhead",
            Box::new(|c| {
                c.linux = Some(cri::LinuxPodSandboxConfig {
                    overhead: Some(cri::LinuxContainerResources {
                        memory_limit_in_bytes: -1,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
            Some(("config.linux.overhead", "memory_limit_in_bytes is -1")),
        ),
    ];
    for (name, edit, want) in cases {
        let mut c = pod();
        edit(&mut c);
        check(name, pod_config(&c), want);
    }
}

#[test]
fn container_config_table() {
    type Edit = Box<dyn Fn(&mut cri::ContainerConfig)>;
    let res = |r: cri::LinuxContainerResources| -> Edit {
        Box::new(move |c| {
            c.linux = Some(cri::LinuxContainerConfig {
                resources: Some(r.clone()),
                ..Default::default()
            })
        })
    };
    let cases: Vec<(&str, Edit, Want)> = vec![
        ("defaults pass", Box::new(|_| {}), None),
        (
            "long name",
            Box::new(|c| c.metadata.as_mut().unwrap().name = "c".repeat(300)),
            Some(("config.metadata.name", "more than 253")),
        ),
        (
            "no name",
            Box::new(|c| c.metadata.as_mut().unwrap().name.clear()),
            Some(("config.metadata.name", "is required")),
        ),
        (
            "NUL in an arg",
            Box::new(|c| c.args = vec!["a".into(), "b\0c".into()]),
            Some(("config.args", "[1] \"b\\0c\" contains a NUL byte")),
        ),
        (
            "an arg over MAX_ARG_STRLEN",
            Box::new(|c| c.args = vec!["a".repeat(ARG_MAX + 1)]),
            Some(("config.args", "more than 131072")),
        ),
        (
            "argv and env over 2 MiB",
            Box::new(|c| {
                c.envs = (0..20)
                    .map(|i| cri::KeyValue {
                        key: format!("K{i}"),
                        value: "v".repeat(ARG_MAX - 10),
                    })
                    .collect()
            }),
            Some(("config.envs", "in all")),
        ),
        (
            "env key with =",
            Box::new(|c| {
                c.envs = vec![cri::KeyValue {
                    key: "A=B".into(),
                    value: String::new(),
                }]
            }),
            Some(("config.envs", "contains '='")),
        ),
        (
            "absolute log path",
            Box::new(|c| c.log_path = "/etc/cron.d/x".into()),
            Some(("config.log_path", "is absolute")),
        ),
        (
            "dot-dot log path",
            Box::new(|c| c.log_path = "c/../../../x.log".into()),
            Some(("config.log_path", "leaves the pod's log_directory")),
        ),
        (
            "propagation 9",
            Box::new(|c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/m".into(),
                    host_path: "/tmp".into(),
                    propagation: 9,
                    ..Default::default()
                }]
            }),
            Some(("config.mounts.propagation", "unknown value 9")),
        ),
        (
            "stop signal 999",
            Box::new(|c| c.stop_signal = 999),
            Some(("config.stop_signal", "unknown value 999")),
        ),
        (
            "negative cpu shares",
            res(cri::LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            }),
            Some(("config.linux.resources", "cpu_shares is -2")),
        ),
        (
            "cpu quota -1 is unlimited",
            res(cri::LinuxContainerResources {
                cpu_quota: -1,
                ..Default::default()
            }),
            None,
        ),
        (
            "cpu quota below -1",
            res(cri::LinuxContainerResources {
                cpu_quota: -2,
                ..Default::default()
            }),
            Some(("config.linux.resources", "cpu_quota is -2")),
        ),
        (
            "oom_score_adj out of range",
            res(cri::LinuxContainerResources {
                oom_score_adj: 1001,
                ..Default::default()
            }),
            Some(("config.linux.resources", "oom_score_adj is 1001")),
        ),
        (
            "labels and annotations together over the bound",
            Box::new(|c| {
                c.annotations
                    .insert("a".into(), "v".repeat(MAP_TOTAL_MAX - 100));
                c.labels.insert("l".into(), "v".repeat(200));
            }),
            Some(("config.annotations", "bytes in all")),
        ),
        (
            "image name over 4096",
            Box::new(|c| {
                c.image = Some(cri::ImageSpec {
                    image: format!("registry.example/{}", "a".repeat(IMAGE_NAME_MAX)),
                    ..Default::default()
                })
            }),
            Some(("config.image.image", "more than 4096")),
        ),
    ];
    for (name, edit, want) in cases {
        let mut c = container();
        edit(&mut c);
        check(name, container_config(&c), want);
    }
}

#[test]
fn exec_commands() {
    check("plain", exec_cmd(&["ls".into(), "-l".into()]), None);
    check("empty", exec_cmd(&[]), Some(("cmd", "is required")));
    check(
        "NUL",
        exec_cmd(&["echo".into(), "a\0".into()]),
        Some(("cmd", "NUL")),
    );
}
