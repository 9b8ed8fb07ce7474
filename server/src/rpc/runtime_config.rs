//! `RuntimeConfig`: the cgroup driver, so kubelet can check it matches its own
//! (`--cgroup-driver` is ignored by kubelet when the runtime reports one).

use crust_proto::runtime::v1::{
    self as cri, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};
use crust_runtime::cgroup::CgroupDriver;

use crate::{daemon::Daemon, error::ApiError};

pub async fn runtime_config(
    daemon: &Daemon,
    _req: RuntimeConfigRequest,
) -> Result<RuntimeConfigResponse, ApiError> {
    let driver = match daemon.config.cgroup.driver {
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
    };
    Ok(RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver.into(),
        }),
    })
}
