//! Per-step timings for benchmarks: with `CRUST_SPAN_TIMINGS=/path` in crustd's
//! environment, every closed span of the `crust::step` target (the steps of
//! RunPodSandbox, StopPodSandbox, RemovePodSandbox and the CNI plugins they run) and
//! every RPC span is appended to that file as one tab-separated line:
//! `<rpc> <step> <microseconds> <pod id>` (the RPC's own line has step `rpc`). `bench-cri --breakdown` reads it. Unset (the
//! default), this layer is not installed and the step spans, at debug level under their
//! own target, are disabled callsites: they cost one cached interest check each.
//!
//! Wall time from creation to close, not busy time: a step that awaits a child process
//! is measured with the wait, which is what the client sees.

use std::{
    fs::File,
    io::{LineWriter, Write},
    path::Path,
    sync::Mutex,
    time::Instant,
};

use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// The environment variable naming the timings file.
pub const ENV: &str = "CRUST_SPAN_TIMINGS";
/// The target of step spans (`tracing::debug_span!(target: STEP_TARGET, ...)`).
pub const STEP_TARGET: &str = "crust::step";

/// Appends span timings to a file.
pub struct SpanTimings {
    out: Mutex<LineWriter<File>>,
}

impl SpanTimings {
    pub fn open(path: &Path) -> std::io::Result<SpanTimings> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(SpanTimings {
            out: Mutex::new(LineWriter::new(file)),
        })
    }
}

/// Kept in the span's extensions from creation to close.
struct Timing {
    start: Instant,
    label: String,
    pod_id: String,
    /// On the outermost span: its steps that closed, `(label, microseconds)`, written
    /// with it so that every line carries the pod id the RPC learnt last.
    steps: Vec<(String, u128)>,
}

/// Picks the fields a label is made of: `rpc` (the RPC span's name), `detail` (a
/// step's qualifier: the plugin and command) and the object it is about: `pod_id`,
/// or `container_id` for a container RPC that names no pod.
#[derive(Default)]
struct Fields {
    rpc: Option<String>,
    detail: Option<String>,
    pod_id: Option<String>,
    container_id: Option<String>,
}

impl Fields {
    fn object_id(self) -> Option<String> {
        self.pod_id.or(self.container_id)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "rpc" => self.rpc = Some(value.to_string()),
            "detail" => self.detail = Some(value.to_string()),
            "pod_id" => self.pod_id = Some(value.to_string()),
            "container_id" => self.container_id = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, format!("{value:?}").trim_matches('"'));
    }
}

impl<S> Layer<S> for SpanTimings
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let name = attrs.metadata().name();
        let label = match (fields.rpc.take(), fields.detail.take()) {
            (Some(rpc), _) => rpc,
            (None, Some(detail)) => format!("{name}:{detail}"),
            (None, None) => name.to_string(),
        };
        span.extensions_mut().insert(Timing {
            start: Instant::now(),
            label,
            pod_id: fields.object_id().unwrap_or_default(),
            steps: Vec::new(),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let (Some(pod_id), Some(timing)) = (
            fields.object_id(),
            span.extensions_mut().get_mut::<Timing>(),
        ) {
            timing.pod_id = pod_id;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some((label, micros)) = span
            .extensions()
            .get::<Timing>()
            .map(|t| (t.label.clone(), t.start.elapsed().as_micros()))
        else {
            return;
        };
        // A step goes to the outermost span this layer times (its RPC).
        if let Some(root) = span
            .scope()
            .skip(1)
            .filter(|s| s.extensions().get::<Timing>().is_some())
            .last()
        {
            if let Some(t) = root.extensions_mut().get_mut::<Timing>() {
                t.steps.push((label, micros));
            }
            return;
        }
        let mut ext = span.extensions_mut();
        let Some(timing) = ext.get_mut::<Timing>() else {
            return;
        };
        let pod_id = if timing.pod_id.is_empty() {
            "-"
        } else {
            timing.pod_id.as_str()
        };
        let mut lines = format!("{label}\trpc\t{micros}\t{pod_id}\n");
        for (step, us) in &timing.steps {
            lines.push_str(&format!("{label}\t{step}\t{us}\t{pod_id}\n"));
        }
        let mut out = self.out.lock().expect("timings file poisoned");
        // Best effort: a full disk must not fail an RPC over a benchmark aid.
        let _ = out.write_all(lines.as_bytes());
    }
}
