//! The container's OCI hooks (only CDI devices bring any) in the runtime spec: an `oci`
//! handler's runtime runs them itself, the built-in launcher runs them from the same
//! spec (`monitor::hooks`), so both launchers see one definition.

use oci_spec::runtime::{Hook, Hooks};

use super::{HookSpec, HookStage};

/// `spec.hooks` for `hooks`, in their order per stage; `None` when there are none (an
/// empty `hooks` object would still make runc 1.1 look for them).
pub fn oci_hooks(hooks: &[HookSpec]) -> Option<Hooks> {
    if hooks.is_empty() {
        return None;
    }
    let of = |stage: HookStage| -> Option<Vec<Hook>> {
        let list: Vec<Hook> = hooks
            .iter()
            .filter(|h| h.stage == stage)
            .map(|h| {
                let mut hook = Hook::default();
                hook.set_path(h.path.clone().into());
                hook.set_args((!h.args.is_empty()).then(|| h.args.clone()));
                hook.set_env((!h.env.is_empty()).then(|| h.env.clone()));
                hook.set_timeout(h.timeout);
                hook
            })
            .collect();
        (!list.is_empty()).then_some(list)
    };
    let mut out = Hooks::default();
    #[allow(deprecated)]
    out.set_prestart(of(HookStage::Prestart));
    out.set_create_runtime(of(HookStage::CreateRuntime));
    out.set_create_container(of(HookStage::CreateContainer));
    out.set_start_container(of(HookStage::StartContainer));
    out.set_poststart(of(HookStage::Poststart));
    out.set_poststop(of(HookStage::Poststop));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(stage: HookStage, path: &str) -> HookSpec {
        HookSpec {
            stage,
            path: path.into(),
            args: vec![path.into(), "a".into()],
            env: vec!["K=v".into()],
            timeout: Some(3),
        }
    }

    #[test]
    fn hooks_land_in_their_stage_in_order() {
        assert!(oci_hooks(&[]).is_none(), "no hooks: no hooks object");
        let h = oci_hooks(&[
            hook(HookStage::CreateContainer, "/a"),
            hook(HookStage::Poststop, "/b"),
            hook(HookStage::CreateContainer, "/c"),
        ])
        .unwrap();
        let cc: Vec<_> = h
            .create_container()
            .clone()
            .unwrap()
            .iter()
            .map(|h| h.path().display().to_string())
            .collect();
        assert_eq!(cc, ["/a", "/c"]);
        let stop = &h.poststop().clone().unwrap()[0];
        assert_eq!(stop.args().clone().unwrap(), ["/b", "a"]);
        assert_eq!(stop.env().clone().unwrap(), ["K=v"]);
        assert_eq!(stop.timeout(), Some(3));
        assert!(h.create_runtime().is_none(), "an empty stage is left out");
        assert!(h.start_container().is_none());
    }
}
