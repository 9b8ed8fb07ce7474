//! Prometheus metrics: every RPC is counted and timed, errors counted by gRPC code.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::net::TcpListener;
use tonic::Code;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    rpc: String,
    code: String,
}

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

/// The daemon's metric registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily,
}

fn rpc_histogram() -> Histogram {
    // 50 µs .. ~13 s: from a cached Status up to a slow pod start.
    Histogram::new(exponential_buckets(0.00005, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("crust");
        let requests = Family::<RpcLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(rpc_histogram);
        registry.register(
            "rpc_requests",
            "CRI RPCs handled, by method",
            requests.clone(),
        );
        registry.register(
            "rpc_errors",
            "CRI RPCs that failed, by method and gRPC code",
            errors.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "CRI RPC latency, by method",
            duration.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            duration,
        }
    }

    /// Records one finished RPC.
    pub fn observe_rpc(&self, rpc: &str, code: Code, elapsed: Duration) {
        let labels = RpcLabels {
            rpc: rpc.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if code != Code::Ok {
            self.errors
                .get_or_create(&ErrorLabels {
                    rpc: rpc.to_string(),
                    code: code_name(code),
                })
                .inc();
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// gRPC code names as the gRPC spec spells them (`NOT_FOUND`), which is what
/// dashboards built for other runtimes expect.
fn code_name(code: Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_by_code_and_times_every_rpc() {
        let m = Metrics::new();
        m.observe_rpc("Version", Code::Ok, Duration::from_millis(1));
        m.observe_rpc("Version", Code::Ok, Duration::from_millis(2));
        m.observe_rpc("RunPodSandbox", Code::NotFound, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains(r#"crust_rpc_requests_total{rpc="Version"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"crust_rpc_requests_total{rpc="RunPodSandbox"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"crust_rpc_errors_total{rpc="RunPodSandbox",code="NOT_FOUND"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"crust_rpc_errors_total{rpc="Version""#),
            "successes are not errors: {text}"
        );
        assert!(
            text.contains(r#"crust_rpc_duration_seconds_count{rpc="Version"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn code_names_follow_the_grpc_spec() {
        for (code, name) in [
            (Code::NotFound, "NOT_FOUND"),
            (Code::Unimplemented, "UNIMPLEMENTED"),
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Code::Ok, "OK"),
        ] {
            assert_eq!(code_name(code), name);
        }
    }
}
