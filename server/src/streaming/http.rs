//! The HTTP side: `/exec/<token>`, `/attach/<token>`, `/portforward/<token>`, each
//! upgraded to WebSocket (`Upgrade: websocket`) or SPDY/3.1 (`Upgrade: SPDY/3.1`).

use std::{convert::Infallible, sync::Arc};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};

use super::{
    Pending,
    portforward::{connect, pod_netns},
    remotecommand::{PORTFORWARD_PROTOCOL, SPDY_PROTOCOLS, negotiate},
    ws,
};
use crate::daemon::Daemon;

type Body = Full<Bytes>;

/// Serves streaming requests on `listener` until the task is dropped. Each connection
/// runs in its own task, so sessions never wait on each other or on the gRPC server.
pub async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "streaming accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let daemon = daemon.clone();
                async move { Ok::<_, Infallible>(route(req, daemon)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%error, "streaming connection ended with an error");
            }
        });
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.into() + "\n")))
        .expect("static response parts are valid")
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

fn upgrade_kind(headers: &HeaderMap) -> Option<String> {
    header_values(headers, "upgrade")
        .next()
        .map(|v| v.to_ascii_lowercase())
}

fn route(mut req: Request<hyper::body::Incoming>, daemon: Arc<Daemon>) -> Response<Body> {
    let Some(streaming) = daemon.streaming.get().cloned() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "streaming is not ready");
    };
    let path = req.uri().path().trim_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "no such streaming endpoint");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return plain(StatusCode::NOT_FOUND, "no such streaming endpoint");
    }
    let pending = match streaming.tokens.redeem(token) {
        Ok(p) if p.path() == kind => p,
        Ok(_) => return plain(StatusCode::NOT_FOUND, "token is for another endpoint"),
        Err(e) => return plain(StatusCode::NOT_FOUND, e.to_string()),
    };
    let span = tracing::info_span!(
        "stream",
        kind,
        container_id = tracing::field::Empty,
        pod_id = tracing::field::Empty
    );
    match &pending {
        Pending::Exec { container_id, .. } | Pending::Attach { container_id, .. } => {
            span.record("container_id", container_id.as_str());
        }
        Pending::PortForward { pod_id, .. } => {
            span.record("pod_id", pod_id.as_str());
        }
    }
    let headers = req.headers().clone();
    let upgrade = upgrade_kind(&headers);
    match upgrade.as_deref() {
        Some("websocket") => {
            let offered: Vec<&str> = header_values(&headers, "sec-websocket-protocol").collect();
            let ours: &[&str] = match pending {
                Pending::PortForward { .. } => &ws::PORTFORWARD_PROTOCOLS,
                _ => &ws::STDIO_PROTOCOLS,
            };
            // No subprotocol offered: wsstream's "" default, binary framing.
            let protocol = if offered.is_empty() {
                String::new()
            } else {
                match negotiate(offered.into_iter(), ours) {
                    Some(p) => p,
                    None => {
                        return plain(
                            StatusCode::FORBIDDEN,
                            format!("requested protocol(s) are not supported; supported: {ours:?}"),
                        );
                    }
                }
            };
            let Some(key) = headers.get("sec-websocket-key") else {
                return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is required");
            };
            let accept = derive_accept_key(key.as_bytes());
            let query_ports = ports_from_query(req.uri().query());
            let upgrading = hyper::upgrade::on(&mut req);
            let idle = streaming.idle_timeout;
            let proto = protocol.clone();
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let upgraded = match upgrading.await {
                        Ok(u) => u,
                        Err(error) => {
                            tracing::info!(%error, "websocket upgrade failed");
                            return;
                        }
                    };
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    serve_ws(socket, &proto, pending, query_ports, daemon, idle).await;
                },
                span,
            ));
            let mut resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header("sec-websocket-accept", accept);
            if !protocol.is_empty() {
                resp = resp.header("sec-websocket-protocol", protocol);
            }
            resp.body(Full::new(Bytes::new()))
                .expect("upgrade response is valid")
        }
        Some("spdy/3.1") => {
            let ours: &[&str] = match pending {
                Pending::PortForward { .. } => &[PORTFORWARD_PROTOCOL],
                _ => &SPDY_PROTOCOLS,
            };
            let offered: Vec<&str> = header_values(&headers, "x-stream-protocol-version").collect();
            if offered.is_empty() {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "unable to upgrade: X-Stream-Protocol-Version is required",
                );
            }
            let Some(protocol) = negotiate(offered.iter().copied(), ours) else {
                let mut resp = plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {ours:?}"
                    ),
                );
                for p in ours {
                    resp.headers_mut().append(
                        "x-accepted-stream-protocol-versions",
                        HeaderValue::from_static(p),
                    );
                }
                return resp;
            };
            let upgrading = hyper::upgrade::on(&mut req);
            let proto = protocol.clone();
            let timeouts = (streaming.idle_timeout, streaming.stream_creation_timeout);
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let upgraded = match upgrading.await {
                        Ok(u) => u,
                        Err(error) => {
                            tracing::info!(%error, "SPDY upgrade failed");
                            return;
                        }
                    };
                    super::spdy::serve(TokioIo::new(upgraded), &proto, pending, daemon, timeouts)
                        .await;
                },
                span,
            ));
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "SPDY/3.1")
                .header("x-stream-protocol-version", protocol)
                .body(Full::new(Bytes::new()))
                .expect("upgrade response is valid")
        }
        _ => plain(
            StatusCode::BAD_REQUEST,
            "upgrade to SPDY/3.1 or websocket is required",
        ),
    }
}

/// `?port=80&port=81,82` (kubelet's `NewV4Options`); invalid entries are dropped.
fn ports_from_query(query: Option<&str>) -> Vec<u16> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .collect()
}

/// Starts the process side of an exec or attach.
pub(super) async fn open_stdio(
    daemon: &Daemon,
    pending: &Pending,
) -> Result<crust_runtime::container::StdioSession, String> {
    match pending {
        Pending::Exec {
            container_id,
            cmd,
            streams,
        } => daemon
            .sandboxes
            .exec_session(container_id, cmd, *streams)
            .await
            .map_err(|e| e.to_string()),
        Pending::Attach {
            container_id,
            streams,
        } => daemon
            .sandboxes
            .attach(container_id, *streams)
            .await
            .map_err(|e| e.to_string()),
        Pending::PortForward { .. } => Err("not a stdio session".into()),
    }
}

async fn serve_ws(
    socket: ws::Socket,
    protocol: &str,
    pending: Pending,
    query_ports: Vec<u16>,
    daemon: Arc<Daemon>,
    idle: std::time::Duration,
) {
    match &pending {
        Pending::PortForward { pod_id, ports } => {
            let ports = if query_ports.is_empty() {
                ports.clone()
            } else {
                query_ports
            };
            let netns = pod_netns(&daemon.sandboxes, pod_id);
            ws::serve_portforward(socket, protocol, ports, move |port| {
                let netns = netns.clone();
                async move { connect(netns?, port).await }
            })
            .await;
        }
        Pending::Exec { streams, .. } | Pending::Attach { streams, .. } => {
            let attach = matches!(pending, Pending::Attach { .. });
            let session = open_stdio(&daemon, &pending).await;
            ws::serve_stdio(socket, protocol, *streams, session, idle, attach).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(
            ports_from_query(Some("port=80&port=81,82&x=1")),
            vec![80, 81, 82]
        );
        assert_eq!(ports_from_query(Some("port=0&port=x")), Vec::<u16>::new());
        assert_eq!(ports_from_query(None), Vec::<u16>::new());
    }
}
