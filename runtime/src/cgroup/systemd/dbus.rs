//! The few `org.freedesktop.systemd1.Manager` calls the driver makes, over zbus.
//!
//! The system bus when there is one; else systemd's own private socket
//! (`/run/systemd/private`, root only, peer-to-peer: no bus daemon, no Hello), as
//! runc and go-systemd fall back to on nodes without dbus-daemon.

use std::path::Path;

use zbus::{Connection, zvariant::Value};

use super::properties::Prop;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// What a failed call means to the driver.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// `org.freedesktop.systemd1.UnitExists`.
    #[error("unit exists")]
    UnitExists,
    /// `org.freedesktop.systemd1.NoSuchUnit`: not loaded (a transient unit that
    /// stopped is unloaded at once).
    #[error("no such unit")]
    NoSuchUnit,
    #[error(transparent)]
    Dbus(#[from] zbus::Error),
}

impl BusError {
    fn classify(e: zbus::Error) -> BusError {
        if let zbus::Error::MethodError(name, _, _) = &e {
            match name.as_str() {
                "org.freedesktop.systemd1.UnitExists" => return BusError::UnitExists,
                "org.freedesktop.systemd1.NoSuchUnit" => return BusError::NoSuchUnit,
                _ => {}
            }
        }
        BusError::Dbus(e)
    }
}

/// A connection to systemd's manager object.
#[derive(Debug, Clone)]
pub struct Bus {
    conn: Connection,
}

impl Bus {
    /// Connects to the system bus, else to `private_socket`. The error names both
    /// failures.
    pub async fn connect(private_socket: &Path) -> Result<Bus, String> {
        let system = match Connection::system().await {
            Ok(conn) => return Ok(Bus { conn }),
            Err(e) => e,
        };
        let stream = tokio::net::UnixStream::connect(private_socket)
            .await
            .map_err(|e| format!("system bus: {system}; {}: {e}", private_socket.display()))?;
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|e| format!("system bus: {system}; {}: {e}", private_socket.display()))?;
        Ok(Bus { conn })
    }

    async fn call<B>(&self, method: &'static str, body: &B) -> Result<zbus::Message, BusError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(Some(DEST), PATH, Some(MANAGER), method, body)
            .await
            .map_err(BusError::classify)
    }

    /// `StartTransientUnit(name, "replace", properties, [])`: returns once the start
    /// job is queued, not done (the caller waits for what it needs: the cgroup).
    pub async fn start_transient_unit(
        &self,
        name: &str,
        props: &[(&'static str, Prop)],
    ) -> Result<(), BusError> {
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        self.call("StartTransientUnit", &(name, "replace", encode(props), aux))
            .await
            .map(drop)
    }

    /// `SetUnitProperties(name, runtime, properties)`: `runtime` changes last until
    /// the unit is gone (or the next boot), as a transient unit's do anyway.
    pub async fn set_unit_properties(
        &self,
        name: &str,
        props: &[(&'static str, Prop)],
    ) -> Result<(), BusError> {
        self.call("SetUnitProperties", &(name, true, encode(props)))
            .await
            .map(drop)
    }

    /// `StopUnit(name, "replace")`.
    pub async fn stop_unit(&self, name: &str) -> Result<(), BusError> {
        self.call("StopUnit", &(name, "replace")).await.map(drop)
    }

    /// `ResetFailedUnit(name)`: a failed transient unit stays loaded (and its name
    /// taken) until this.
    pub async fn reset_failed_unit(&self, name: &str) -> Result<(), BusError> {
        self.call("ResetFailedUnit", &(name,)).await.map(drop)
    }

    /// Whether `name` is loaded (`GetUnit` answers NoSuchUnit otherwise).
    pub async fn unit_loaded(&self, name: &str) -> Result<bool, BusError> {
        match self.call("GetUnit", &(name,)).await {
            Ok(_) => Ok(true),
            Err(BusError::NoSuchUnit) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `a(sv)` from the pure properties, in systemd's declared types.
fn encode(props: &[(&'static str, Prop)]) -> Vec<(&'static str, Value<'static>)> {
    props
        .iter()
        .map(|(name, prop)| {
            let value = match prop {
                Prop::U64(v) => Value::U64(*v),
                Prop::Bool(v) => Value::Bool(*v),
                Prop::Str(v) => Value::from(v.clone()),
                Prop::Bytes(v) => Value::from(v.clone()),
                Prop::Pids(v) => Value::from(v.clone()),
            };
            (*name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_carry_systemds_signatures() {
        let props = [
            ("MemoryMax", Prop::U64(1)),
            ("Delegate", Prop::Bool(true)),
            ("Slice", Prop::Str("a.slice".into())),
            ("AllowedCPUs", Prop::Bytes(vec![3])),
            ("PIDs", Prop::Pids(vec![1])),
        ];
        let sigs: Vec<String> = encode(&props)
            .iter()
            .map(|(_, v)| v.value_signature().to_string())
            .collect();
        assert_eq!(sigs, ["t", "b", "s", "ay", "au"]);
    }
}
