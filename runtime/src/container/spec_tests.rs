//! Tests of [`generate_spec`] as a whole and of the process rules in `spec.rs`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

use super::{
    CapabilitiesSpec, ContainerSpec, DeviceSpec, HostContext, ImageConfigView, NsMode, PodContext,
    SecurityContextSpec, SecurityProfile, SpecError, SpecInput, generate_spec,
    spec::{OOM_CLAMPED_ANNOTATION, process_args, process_cwd, process_env, stop_signal},
    spec_devices::tests::FakeDevices,
};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn pod() -> PodContext {
    PodContext {
        sandbox_id: "pod1".into(),
        net_ns: Some("/run/crust/ns/pod1/net".into()),
        ipc_ns: Some("/run/crust/ns/pod1/ipc".into()),
        uts_ns: Some("/run/crust/ns/pod1/uts".into()),
        pid_ns: Some("/run/crust/ns/pod1/pid".into()),
        hostname: "web-0".into(),
        hosts_file: Some("/run/crust/pods/pod1/hosts".into()),
        hostname_file: Some("/run/crust/pods/pod1/hostname".into()),
        resolv_conf: Some("/run/crust/pods/pod1/resolv.conf".into()),
        shm_dir: Some("/run/crust/pods/pod1/shm".into()),
        sysctls: vec![("net.ipv4.ping_group_range".into(), "0 2147483647".into())],
        cgroup_path: "/kubepods/podabc/ctr1".into(),
        host_network: false,
        privileged: false,
        userns: None,
    }
}

fn input(container: ContainerSpec) -> SpecInput {
    SpecInput {
        container,
        image: ImageConfigView {
            entrypoint: Some(s(&["/docker-entrypoint.sh"])),
            cmd: s(&["nginx", "-g", "daemon off;"]),
            env: s(&["PATH=/opt/bin:/usr/bin", "NGINX_VERSION=1.27"]),
            ..Default::default()
        },
        pod: pod(),
        host: HostContext {
            min_oom_score_adj: -999,
            ..Default::default()
        },
        rootfs: "/var/lib/crust/containers/c1/rootfs".into(),
        etc_passwd: Some(
            "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/bin/false\n"
                .into(),
        ),
        etc_group: Some("root:x:0:\nnginx:x:101:\n".into()),
        volumes_root: "/var/lib/crust/containers/c1/volumes".into(),
        ..Default::default()
    }
}

fn generate(i: &SpecInput) -> Spec {
    generate_spec(i, &FakeDevices).unwrap_or_else(|e| panic!("generate_spec: {e}"))
}

fn ns_of(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    let linux = spec.linux().as_ref().unwrap();
    linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

#[test]
fn command_table() {
    let image = |ep: Option<&[&str]>, cmd: &[&str]| ImageConfigView {
        entrypoint: ep.map(s),
        cmd: s(cmd),
        ..Default::default()
    };
    let ctr = |command: &[&str], args: &[&str]| ContainerSpec {
        command: s(command),
        args: s(args),
        ..Default::default()
    };
    type Case = (
        &'static str,
        ContainerSpec,
        ImageConfigView,
        Result<Vec<String>, ()>,
    );
    let cases: Vec<Case> = vec![
        (
            "image only",
            ctr(&[], &[]),
            image(Some(&["/ep"]), &["a", "b"]),
            Ok(s(&["/ep", "a", "b"])),
        ),
        (
            "args replace Cmd",
            ctr(&[], &["x"]),
            image(Some(&["/ep"]), &["a"]),
            Ok(s(&["/ep", "x"])),
        ),
        (
            "command drops Cmd",
            ctr(&["/bin/sh"], &[]),
            image(Some(&["/ep"]), &["a"]),
            Ok(s(&["/bin/sh"])),
        ),
        (
            "command and args",
            ctr(&["/bin/sh"], &["-c", "true"]),
            image(Some(&["/ep"]), &["a"]),
            Ok(s(&["/bin/sh", "-c", "true"])),
        ),
        (
            "no entrypoint",
            ctr(&[], &[]),
            image(None, &["/bin/app"]),
            Ok(s(&["/bin/app"])),
        ),
        (
            "entrypoint [\"\"] is none",
            ctr(&[], &[]),
            image(Some(&[""]), &["/bin/app"]),
            Ok(s(&["/bin/app"])),
        ),
        (
            "args without anything else",
            ctr(&[], &["/bin/x"]),
            image(None, &[]),
            Ok(s(&["/bin/x"])),
        ),
        ("nothing to run", ctr(&[], &[]), image(None, &[]), Err(())),
        (
            "only an empty entrypoint",
            ctr(&[], &[]),
            image(Some(&[""]), &[]),
            Err(()),
        ),
    ];
    for (name, c, img, want) in cases {
        let got = process_args(&c, &img);
        match (&got, &want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
            (Err(e), Err(())) => assert!(e.to_string().contains("config.command"), "{name}: {e}"),
            _ => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn env_table() {
    let img = |env: &[&str]| ImageConfigView {
        env: s(env),
        ..Default::default()
    };
    let ctr = |envs: &[(&str, &str)]| ContainerSpec {
        envs: envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let default_path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let cases: Vec<(&str, ContainerSpec, ImageConfigView, Vec<String>)> = vec![
        (
            "defaults",
            ctr(&[]),
            img(&[]),
            s(&[default_path, "HOSTNAME=web-0", "HOME=/root"]),
        ),
        (
            "image PATH replaces default in place",
            ctr(&[]),
            img(&["PATH=/x", "A=1"]),
            s(&["PATH=/x", "HOSTNAME=web-0", "A=1", "HOME=/root"]),
        ),
        (
            "CRI wins over image",
            ctr(&[("A", "2")]),
            img(&["A=1", "B=1"]),
            s(&[default_path, "HOSTNAME=web-0", "A=2", "B=1", "HOME=/root"]),
        ),
        (
            "CRI HOME kept",
            ctr(&[("HOME", "/h")]),
            img(&[]),
            s(&[default_path, "HOSTNAME=web-0", "HOME=/h"]),
        ),
        (
            "values with =",
            ctr(&[("Q", "a=b")]),
            img(&[]),
            s(&[default_path, "HOSTNAME=web-0", "Q=a=b", "HOME=/root"]),
        ),
        (
            "CRI may override HOSTNAME",
            ctr(&[("HOSTNAME", "h")]),
            img(&[]),
            s(&[default_path, "HOSTNAME=h", "HOME=/root"]),
        ),
    ];
    for (name, c, image, want) in cases {
        assert_eq!(
            process_env(&c, &image, &pod(), "/root").unwrap(),
            want,
            "{name}"
        );
    }
    let err = process_env(&ctr(&[("A", "1"), ("", "x")]), &img(&[]), &pod(), "/").unwrap_err();
    assert!(err.to_string().contains("config.envs[1].key"), "{err}");
    let no_hostname = PodContext {
        hostname: String::new(),
        ..pod()
    };
    let env = process_env(&ctr(&[]), &img(&[]), &no_hostname, "/").unwrap();
    assert!(!env.iter().any(|e| e.starts_with("HOSTNAME=")), "{env:?}");
}

#[test]
fn working_dir_table() {
    let c = |w: &str| ContainerSpec {
        working_dir: w.into(),
        ..Default::default()
    };
    let i = |w: &str| ImageConfigView {
        working_dir: w.into(),
        ..Default::default()
    };
    assert_eq!(
        process_cwd(&c("/work"), &i("/img")).unwrap(),
        Path::new("/work")
    );
    assert_eq!(process_cwd(&c(""), &i("/img")).unwrap(), Path::new("/img"));
    assert_eq!(process_cwd(&c(""), &i("")).unwrap(), Path::new("/"));
    assert!(
        process_cwd(&c("rel"), &i(""))
            .unwrap_err()
            .to_string()
            .contains("config.working_dir")
    );
    assert!(
        process_cwd(&c(""), &i("rel"))
            .unwrap_err()
            .to_string()
            .contains("image.config.WorkingDir")
    );
}

#[test]
fn stop_signal_table() {
    let c = |sig: Option<&str>| ContainerSpec {
        stop_signal: sig.map(str::to_string),
        ..Default::default()
    };
    let i = |sig: &str| ImageConfigView {
        stop_signal: sig.into(),
        ..Default::default()
    };
    assert_eq!(stop_signal(&c(Some("SIGINT")), &i("SIGQUIT")), "SIGINT");
    assert_eq!(stop_signal(&c(None), &i("SIGQUIT")), "SIGQUIT");
    assert_eq!(stop_signal(&c(None), &i("")), "SIGTERM");
}

#[test]
fn namespace_table() {
    use LinuxNamespaceType::*;
    let pin = |n: &str| Some(PathBuf::from(format!("/run/crust/ns/pod1/{n}")));
    let with_pid = |mode: NsMode| ContainerSpec {
        command: s(&["/x"]),
        security: SecurityContextSpec {
            pid_mode: mode,
            target_id: "t1".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let base = [
        (Mount, None),
        (Network, pin("net")),
        (Ipc, pin("ipc")),
        (Uts, pin("uts")),
    ];
    let with = |extra: Vec<(LinuxNamespaceType, Option<PathBuf>)>| {
        base.iter().cloned().chain(extra).collect::<Vec<_>>()
    };
    let cases = vec![
        (
            "pid CONTAINER: new pid ns",
            with_pid(NsMode::Container),
            None,
            with(vec![(Pid, None), (Cgroup, None)]),
        ),
        (
            "pid POD: the pod's pin",
            with_pid(NsMode::Pod),
            None,
            with(vec![(Pid, pin("pid")), (Cgroup, None)]),
        ),
        (
            "pid TARGET: the caller's path",
            with_pid(NsMode::Target),
            Some(PathBuf::from("/proc/42/ns/pid")),
            with(vec![(Pid, Some("/proc/42/ns/pid".into())), (Cgroup, None)]),
        ),
        (
            "pid NODE: no pid ns",
            with_pid(NsMode::Node),
            None,
            with(vec![(Cgroup, None)]),
        ),
    ];
    for (name, c, target, want) in cases {
        let mut i = input(c);
        i.target_pid_ns = target;
        assert_eq!(ns_of(&generate(&i)), want, "{name}");
    }

    // Host network and IPC: nothing to join; cgroup v1: no cgroup namespace.
    let mut i = input(with_pid(NsMode::Container));
    i.pod.host_network = true;
    i.pod.ipc_ns = None;
    i.host.cgroup_v2 = false;
    assert_eq!(
        ns_of(&generate(&i)),
        vec![(Mount, None), (Uts, pin("uts")), (Pid, None)]
    );

    let mut i = input(with_pid(NsMode::Target));
    let err = generate_spec(&i, &FakeDevices).unwrap_err();
    assert!(
        err.to_string().contains("namespace_options.target_id") && err.to_string().contains("t1"),
        "{err}"
    );
    i.container.security.pid_mode = NsMode::Pod;
    i.pod.pid_ns = None;
    let err = generate_spec(&i, &FakeDevices).unwrap_err();
    assert!(err.to_string().contains("namespace_options.pid"), "{err}");
}

#[test]
fn unprivileged_defaults() {
    let mut i = input(ContainerSpec::default());
    // Docker's 14 (on cgroup v2 without a device filter MKNOD leaves the set, see
    // `mknod_is_left_out_on_cgroup_v2_without_a_filter`).
    i.host.cgroup_v2 = false;
    let spec = generate(&i);
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &s(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"])
    );
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false));
    assert_eq!(p.rlimits(), &None, "no rlimits by default");
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
    assert_eq!(caps.effective(), caps.permitted());
    assert!(caps.ambient().as_ref().unwrap().is_empty());
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux.seccomp().is_none(),
        "Unconfined is the domain default"
    );
    assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 11);
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string())
    );
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/podabc/ctr1"))
    );
    assert_eq!(
        linux.sysctl().as_ref().unwrap()["net.ipv4.ping_group_range"],
        "0 2147483647"
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert!(!rules[0].allow(), "deny all first");
    assert!(
        !rules
            .iter()
            .any(|r| r.allow() && r.major().is_none() && r.typ().is_none()),
        "no allow-all"
    );
    assert_eq!(linux.devices().as_ref().unwrap().len(), 6);
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    assert_eq!(spec.hostname(), &None);
    let json = serde_json::to_string(&spec).unwrap();
    assert!(
        !json.contains("youki") && !json.contains("TERM=xterm"),
        "no oci-spec defaults leak: {json}"
    );
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec, "round-trips as config.json");
}

#[test]
fn security_context_applied() {
    let c = ContainerSpec {
        tty: true,
        security: SecurityContextSpec {
            run_as_username: "nginx".into(),
            readonly_rootfs: true,
            no_new_privs: true,
            seccomp: SecurityProfile::RuntimeDefault,
            capabilities: Some(CapabilitiesSpec {
                add: s(&["SYS_ADMIN"]),
                drop: s(&["NET_RAW"]),
                add_ambient: vec![],
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let spec = generate(&input(c));
    let p = spec.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (101, 101));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[101]);
    assert!(
        p.env()
            .as_ref()
            .unwrap()
            .contains(&"HOME=/var/cache/nginx".to_string())
    );
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
    let bounding = p
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap();
    assert!(bounding.contains(&Capability::SysAdmin) && !bounding.contains(&Capability::NetRaw));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let seccomp = spec
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .clone()
        .expect("RuntimeDefault");
    // SYS_ADMIN in the bounding set lifts the mount ban, as in containerd.
    assert!(
        seccomp
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|r| r.names().contains(&"mount".to_string()))
    );
}

#[test]
fn privileged_container() {
    let c = ContainerSpec {
        devices: vec![DeviceSpec {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "r".into(),
        }],
        security: SecurityContextSpec {
            privileged: true,
            seccomp: SecurityProfile::RuntimeDefault,
            masked_paths: s(&["/proc/kcore"]),
            capabilities: Some(CapabilitiesSpec {
                drop: s(&["ALL"]),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut i = input(c);
    let err = generate_spec(&i, &FakeDevices).unwrap_err();
    assert!(
        err.to_string().contains("security_context.privileged"),
        "{err}"
    );
    i.pod.privileged = true;
    let spec = generate(&i);
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .len(),
        41,
        "all caps"
    );
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none(), "no seccomp");
    assert!(
        linux.masked_paths().as_ref().unwrap().is_empty()
            && linux.readonly_paths().as_ref().unwrap().is_empty()
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    let last = rules.last().unwrap();
    assert!(
        last.allow() && last.typ().is_none() && last.major().is_none(),
        "all devices allowed"
    );
    let devs: Vec<_> = linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.path().clone())
        .collect();
    assert!(
        devs.contains(&PathBuf::from("/dev/sda")),
        "host devices: {devs:?}"
    );
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
    assert!(
        !ns_of(&spec)
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::Cgroup),
        "no cgroupns when privileged"
    );
    assert_eq!(p.apparmor_profile(), &None);

    i.container.security.apparmor = SecurityProfile::Localhost("my-profile".into());
    let err = generate_spec(&i, &FakeDevices).unwrap_err();
    assert!(
        matches!(err, SpecError::Unsupported { .. }),
        "privileged does not hide a missing AppArmor: {err}"
    );
    i.host.host_has_apparmor = true;
    let spec = generate(&i);
    assert_eq!(
        spec.process().as_ref().unwrap().apparmor_profile(),
        &None,
        "privileged runs unconfined"
    );
}

#[test]
fn devices_and_resources_reach_the_spec() {
    let c = ContainerSpec {
        devices: vec![DeviceSpec {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rw".into(),
        }],
        resources: super::ResourcesSpec {
            cpu_shares: 256,
            memory_limit_in_bytes: 1 << 30,
            ..Default::default()
        },
        ..Default::default()
    };
    let spec = generate(&input(c));
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .any(|d| d.path() == Path::new("/dev/fuse") && d.major() == 10)
    );
    let res = linux.resources().as_ref().unwrap();
    assert!(
        res.devices()
            .as_ref()
            .unwrap()
            .iter()
            .any(|r| r.allow() && r.major() == Some(10) && r.minor() == Some(229))
    );
    assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(256));
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(1 << 30));
}

#[test]
fn oom_clamp_is_annotated() {
    let c = |adj: i64| ContainerSpec {
        resources: super::ResourcesSpec {
            oom_score_adj: adj,
            ..Default::default()
        },
        ..Default::default()
    };
    let spec = generate(&input(c(-1000)));
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(-999));
    assert_eq!(
        spec.annotations().as_ref().unwrap()[OOM_CLAMPED_ANNOTATION],
        "-1000"
    );
    let spec = generate(&input(c(1000)));
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(1000));
    assert!(
        !spec
            .annotations()
            .as_ref()
            .unwrap()
            .contains_key(OOM_CLAMPED_ANNOTATION)
    );
    assert_eq!(
        spec.annotations().as_ref().unwrap()["io.kubernetes.cri.sandbox-id"],
        "pod1"
    );
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(&str, ContainerSpec, &str)> = vec![
        (
            "group without user",
            ContainerSpec {
                security: SecurityContextSpec {
                    run_as_group: Some(1),
                    ..Default::default()
                },
                ..Default::default()
            },
            "config.linux.security_context.run_as_group",
        ),
        (
            "unknown user",
            ContainerSpec {
                security: SecurityContextSpec {
                    run_as_username: "ghost".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            "\"ghost\"",
        ),
        (
            "relative mount",
            ContainerSpec {
                mounts: vec![super::MountSpec {
                    container_path: "data".into(),
                    host_path: "/d".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "config.mounts[0].container_path",
        ),
        (
            "apparmor localhost without apparmor",
            ContainerSpec {
                security: SecurityContextSpec {
                    apparmor: SecurityProfile::Localhost("p".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "not supported on this host",
        ),
        (
            "oom out of range",
            ContainerSpec {
                resources: super::ResourcesSpec {
                    oom_score_adj: 5000,
                    ..Default::default()
                },
                ..Default::default()
            },
            "config.linux.resources.oom_score_adj",
        ),
    ];
    for (name, c, want) in cases {
        let err = generate_spec(&input(c), &FakeDevices).unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    let err = generate_spec(&input(ContainerSpec::default()), &FakeDevices).map(|_| ());
    assert!(err.is_ok());
    let mut i = input(ContainerSpec::default());
    i.image = ImageConfigView::default();
    assert!(matches!(
        generate_spec(&i, &FakeDevices),
        Err(SpecError::InvalidField { .. })
    ));
}

/// The host probe reads the LSM switches under the given sysfs root.
#[test]
fn host_context_detects_lsms_and_capabilities_under_its_roots() {
    let sys = tempfile::tempdir().unwrap();
    let host = HostContext::detect(None, sys.path(), sys.path(), -500);
    assert!(
        !host.host_has_apparmor && !host.host_has_selinux,
        "{host:?}"
    );
    assert!(
        !host.cgroup_v2 && !host.swap_available && !host.hugetlb_available,
        "no cgroup manager: nothing can be limited: {host:?}"
    );
    assert_eq!(host.min_oom_score_adj, -500);
    assert_eq!(host.capabilities_mask, None, "no status file");

    let apparmor = sys.path().join("module/apparmor/parameters");
    std::fs::create_dir_all(&apparmor).unwrap();
    std::fs::write(apparmor.join("enabled"), "N\n").unwrap();
    assert!(
        !HostContext::detect(None, sys.path(), sys.path(), 0).host_has_apparmor,
        "N: disabled"
    );
    std::fs::write(apparmor.join("enabled"), "Y\n").unwrap();
    std::fs::create_dir_all(sys.path().join("fs/selinux")).unwrap();
    std::fs::write(sys.path().join("fs/selinux/enforce"), "0").unwrap();
    std::fs::create_dir_all(sys.path().join("self")).unwrap();
    std::fs::write(
        sys.path().join("self/status"),
        "Name:\tcrustd\nCapEff:\t000001fffeffffff\n",
    )
    .unwrap();
    let host = HostContext::detect(None, sys.path(), sys.path(), 0);
    assert!(host.host_has_apparmor && host.host_has_selinux, "{host:?}");
    assert_eq!(host.capabilities_mask, Some(0x000001fffeffffff));
}

/// `unified` holds cgroup v2 files: refused on a v1/hybrid host, naming the field.
#[test]
fn unified_needs_cgroup_v2() {
    let mut c = ContainerSpec {
        command: s(&["/bin/true"]),
        ..Default::default()
    };
    c.security.pid_mode = NsMode::Container;
    c.resources.unified = [("memory.high".to_string(), "1000000".to_string())].into();
    let mut i = input(c);
    i.host.cgroup_v2 = false;
    let err = generate_spec(&i, &FakeDevices).unwrap_err();
    assert!(
        err.to_string().contains("config.linux.resources.unified"),
        "{err}"
    );
    i.host.cgroup_v2 = true;
    generate(&i);
}

/// On cgroup v2 CAP_MKNOD stays in the default set where the eBPF device filter is
/// loaded (as on v1, where the device cgroup stops what a node could open); without
/// the filter it leaves the set (kept when asked for by name and for privileged
/// containers).
#[test]
fn mknod_is_left_out_on_cgroup_v2_without_a_filter() {
    use oci_spec::runtime::Capability;
    for (v2, filter, add, privileged, want) in [
        (false, true, vec![], false, true),
        (true, true, vec![], false, true),
        (true, false, vec![], false, false),
        (true, false, vec!["MKNOD".to_string()], false, true),
        (true, false, vec!["CAP_MKNOD".to_string()], false, true),
        (true, false, vec![], true, true),
    ] {
        let mut c = ContainerSpec {
            command: s(&["/bin/true"]),
            ..Default::default()
        };
        c.security.pid_mode = NsMode::Container;
        c.security.privileged = privileged;
        if !add.is_empty() {
            c.security.capabilities = Some(CapabilitiesSpec {
                add: add.clone(),
                ..Default::default()
            });
        }
        let mut i = input(c);
        i.host.cgroup_v2 = v2;
        i.host.device_filter = filter;
        i.pod.privileged = privileged;
        let spec = generate(&i);
        let bounding = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert_eq!(
            bounding.contains(&Capability::Mknod),
            want,
            "v2 {v2}, filter {filter}, add {add:?}, privileged {privileged}"
        );
    }
}
