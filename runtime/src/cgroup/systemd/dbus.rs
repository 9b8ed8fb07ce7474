//! The few `org.freedesktop.systemd1.Manager` calls the driver makes, over the `dbus`
//! crate (libdbus, built in: no system library needed at run time).
//!
//! The system bus when there is one; else systemd's own private socket
//! (`/run/systemd/private`, root only, peer-to-peer: no bus daemon, no Hello), as
//! go-systemd falls back to on nodes without dbus-daemon. Not zbus: over the private
//! socket systemd signs its replies with its well-known name as sender, which zbus 5
//! refuses by panicking in its connection thread (zbus#1497), so every call hung.
//!
//! libdbus calls block: each runs on tokio's blocking pool, one at a time per
//! connection (a blocking connection's reply dispatch is not meant for several
//! threads waiting at once).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use dbus::{
    arg::{AppendAll, RefArg, Variant},
    blocking::Connection,
    channel::Channel,
};

use super::properties::Prop;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// One call's wait for systemd's answer. Under TCG emulation systemd answers in a few
/// hundred milliseconds at worst.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a call keeps trying while systemd is away (a re-exec under emulation
/// takes a few seconds; on hardware well under one).
const RETRY_FOR: Duration = Duration::from_secs(30);

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
    #[error("{0}")]
    Dbus(String),
}

impl BusError {
    fn classify(e: &dbus::Error) -> BusError {
        match e.name() {
            Some("org.freedesktop.systemd1.UnitExists") => BusError::UnitExists,
            Some("org.freedesktop.systemd1.NoSuchUnit") => BusError::NoSuchUnit,
            _ => BusError::Dbus(describe(e)),
        }
    }
}

fn describe(e: &dbus::Error) -> String {
    format!(
        "{} ({})",
        e.message().unwrap_or("no message"),
        e.name().unwrap_or("no error name")
    )
}

/// A connection to systemd's manager object, made again when it breaks.
///
/// systemd closes its private socket's connections when it re-executes
/// (`systemctl daemon-reexec`, a package upgrade) and drops its bus name for the
/// moment it takes; dbus-daemon restarting closes the bus connection. Neither stops
/// the units crust started, so a call that meets a closed connection or a missing
/// systemd reconnects and tries again for a while ([`RETRY_FOR`]) instead of failing
/// every pod from then on (a connection made once and kept would).
#[derive(Clone)]
pub struct Bus {
    private_socket: PathBuf,
    conn: Arc<Mutex<Option<Connection>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("private_socket", &self.private_socket)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to the system bus, else to `private_socket`. The error names both
    /// failures.
    pub async fn connect(private_socket: &Path) -> Result<Bus, String> {
        let socket = private_socket.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open(&socket))
            .await
            .map_err(|e| format!("connect: {e}"))??;
        Ok(Bus {
            private_socket: private_socket.to_path_buf(),
            conn: Arc::new(Mutex::new(Some(conn))),
        })
    }

    /// Calls `method` with the arguments `args` makes (on the blocking thread, once per
    /// try: libdbus values are neither `Send` nor reusable), reading no reply values.
    async fn call<F, A>(&self, method: &'static str, args: F) -> Result<(), BusError>
    where
        F: Fn() -> A + Send + 'static,
        A: AppendAll,
    {
        let bus = self.clone();
        tokio::task::spawn_blocking(move || bus.call_blocking(method, &args))
            .await
            .map_err(|e| BusError::Dbus(format!("{method}: {e}")))?
    }

    fn call_blocking<A: AppendAll>(
        &self,
        method: &'static str,
        args: &dyn Fn() -> A,
    ) -> Result<(), BusError> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(20);
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let outcome = match guard.as_ref() {
                Some(conn) => {
                    let reply: Result<(), dbus::Error> = conn
                        .with_proxy(DEST, PATH, CALL_TIMEOUT)
                        .method_call(MANAGER, method, args());
                    match reply {
                        Ok(()) => return Ok(()),
                        Err(e) => Some((e, !conn.channel().is_connected())),
                    }
                }
                None => None,
            };
            let retry = match &outcome {
                // No connection: the last reconnect failed.
                None => true,
                Some((_, true)) => true,
                Some((e, false)) => away(e),
            };
            let error = || match &outcome {
                Some((e, _)) => BusError::classify(e),
                None => BusError::Dbus("not connected to systemd".into()),
            };
            if !retry || std::time::Instant::now() + pause > deadline {
                return Err(error());
            }
            tracing::info!(method, error = %error(), "systemd away; retrying");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
            if matches!(outcome, None | Some((_, true))) {
                *guard = match open(&self.private_socket) {
                    Ok(conn) => {
                        tracing::info!("reconnected to systemd");
                        Some(conn)
                    }
                    Err(reason) => {
                        tracing::debug!(%reason, "reconnect to systemd");
                        None
                    }
                };
            }
        }
    }

    /// `StartTransientUnit(name, "replace", properties, [])`: returns once the start
    /// job is queued, not done (the caller waits for what it needs: the cgroup).
    pub async fn start_transient_unit(
        &self,
        name: &str,
        props: &[(&'static str, Prop)],
    ) -> Result<(), BusError> {
        let (name, props) = (name.to_string(), props.to_vec());
        self.call("StartTransientUnit", move || {
            let aux: Vec<(String, Vec<Property>)> = Vec::new();
            (name.clone(), "replace", encode(&props), aux)
        })
        .await
    }

    /// `SetUnitProperties(name, runtime, properties)`: `runtime` changes last until
    /// the unit is gone (or the next boot), as a transient unit's do anyway.
    pub async fn set_unit_properties(
        &self,
        name: &str,
        props: &[(&'static str, Prop)],
    ) -> Result<(), BusError> {
        let (name, props) = (name.to_string(), props.to_vec());
        self.call("SetUnitProperties", move || {
            (name.clone(), true, encode(&props))
        })
        .await
    }

    /// `StopUnit(name, "replace")`.
    pub async fn stop_unit(&self, name: &str) -> Result<(), BusError> {
        let name = name.to_string();
        self.call("StopUnit", move || (name.clone(), "replace"))
            .await
    }

    /// `ResetFailedUnit(name)`: a failed transient unit stays loaded (and its name
    /// taken) until this.
    pub async fn reset_failed_unit(&self, name: &str) -> Result<(), BusError> {
        let name = name.to_string();
        self.call("ResetFailedUnit", move || (name.clone(),)).await
    }

    /// Whether `name` is loaded (`GetUnit` answers NoSuchUnit otherwise).
    pub async fn unit_loaded(&self, name: &str) -> Result<bool, BusError> {
        let name = name.to_string();
        match self.call("GetUnit", move || (name.clone(),)).await {
            Ok(()) => Ok(true),
            Err(BusError::NoSuchUnit) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The system bus, else systemd's private socket (peer to peer: no Hello).
fn open(private_socket: &Path) -> Result<Connection, String> {
    let system = match Connection::new_system() {
        Ok(conn) => return Ok(conn),
        Err(e) => describe(&e),
    };
    let address = format!("unix:path={}", private_socket.display());
    Channel::open_private(&address)
        .map(Connection::from)
        .map_err(|e| {
            format!(
                "system bus: {system}; {}: {}",
                private_socket.display(),
                describe(&e)
            )
        })
}

/// Whether error `e` from a connection that is still up means systemd is away for the
/// moment (re-executing: its bus name is gone) rather than an answer.
fn away(e: &dbus::Error) -> bool {
    matches!(
        e.name(),
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Disconnected"
        )
    )
}

/// One `(sv)` of a unit's properties.
type Property = (&'static str, Variant<Box<dyn RefArg>>);

/// `a(sv)` from the pure properties, in systemd's declared types.
fn encode(props: &[(&'static str, Prop)]) -> Vec<Property> {
    props
        .iter()
        .map(|(name, prop)| {
            let value: Box<dyn RefArg> = match prop {
                Prop::U64(v) => Box::new(*v),
                Prop::Bool(v) => Box::new(*v),
                Prop::Str(v) => Box::new(v.clone()),
                Prop::Bytes(v) => Box::new(v.clone()),
                Prop::Pids(v) => Box::new(v.clone()),
            };
            (*name, Variant(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_systemd_is_retried() {
        let cases = [
            ("org.freedesktop.DBus.Error.ServiceUnknown", true, "re-exec"),
            ("org.freedesktop.DBus.Error.NoReply", true, "no reply"),
            (
                "org.freedesktop.systemd1.NoSuchUnit",
                false,
                "a real answer",
            ),
            (
                "org.freedesktop.DBus.Error.InvalidArgs",
                false,
                "a bad call",
            ),
        ];
        for (name, want, what) in cases {
            let e = dbus::Error::new_custom(name, what);
            assert_eq!(away(&e), want, "{what}");
        }
    }

    #[test]
    fn answers_are_classified_by_name() {
        let e = |name| dbus::Error::new_custom(name, "m");
        assert!(matches!(
            BusError::classify(&e("org.freedesktop.systemd1.UnitExists")),
            BusError::UnitExists
        ));
        assert!(matches!(
            BusError::classify(&e("org.freedesktop.systemd1.NoSuchUnit")),
            BusError::NoSuchUnit
        ));
        let other = BusError::classify(&e("org.freedesktop.DBus.Error.AccessDenied"));
        assert_eq!(
            other.to_string(),
            "m (org.freedesktop.DBus.Error.AccessDenied)"
        );
    }

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
            .map(|(_, v)| v.0.signature().to_string())
            .collect();
        assert_eq!(sigs, ["t", "b", "s", "ay", "au"]);
    }
}
