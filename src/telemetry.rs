//! OpenTelemetry traces, exported over OTLP when the standard variables ask
//! for it (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the original's `OTEL_ENABLED`).
//!
//! One span per request ([`RequestTrace`], made by the edge middleware on
//! the OpenTelemetry SDK directly: the hot path) and one per job
//! ([`job_span`]); beneath them, ordinary `tracing` spans at `info` level for
//! the store calls (`#[instrument]` on every store method), audio storage,
//! decoding, transcription and verification. The log takes events only, so
//! spans never reach it; without an exporter no layer wants them and they
//! are not made, and the process's most verbose level stays the log's, so
//! other crates' debug output costs nothing more.
//! Their names are route templates, table and step names; their attributes
//! hold the method, status, request id, job kind and attempt — never a path,
//! a patient id, a recording id or text.
//!
//! Sampling (`OTEL_TRACES_SAMPLER`) is decided where a trace would start
//! here, before its root span is made: a request or job not kept makes no
//! span at all, so a tenth of requests traced costs about a tenth.
//!
//! A trace continues across the queue: a job stores the `traceparent` of the
//! request that queued it ([`traceparent`]) and the worker's span for it is
//! that request's child, so a dictation's upload (whose context the web app
//! sends in a W3C `traceparent` header) and its transcription are one trace.

use std::collections::HashMap;

use axum::http::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::ConfigError;

/// The service name when `OTEL_SERVICE_NAME` does not give one.
const SERVICE_NAME: &str = "clinscribe";

/// How traces leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP over gRPC (port 4317 by convention): the original's, and the default.
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, `/v1/traces`).
    HttpProtobuf,
}

/// Which traces are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`),
/// decided where a trace would start here: a request, or a job queued
/// without one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// The share of new traces kept (0 to 1).
    pub ratio: f64,
    /// Whether a caller's `traceparent` decides instead (its sampled flag).
    pub parent_based: bool,
}

impl Sampler {
    /// The SDK's default: every trace, a caller's decision honoured.
    pub const DEFAULT: Self = Self {
        ratio: 1.0,
        parent_based: true,
    };

    /// Whether a trace starting here with this (W3C) parent is kept.
    fn keeps(self, parent: Option<&str>) -> bool {
        match parent.filter(|_| self.parent_based).and_then(sampled_flag) {
            Some(sampled) => sampled,
            None => self.ratio >= 1.0 || (self.ratio > 0.0 && fastrand::f64() < self.ratio),
        }
    }
}

/// The sampled flag of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn sampled_flag(traceparent: &str) -> Option<bool> {
    let flags = traceparent.trim().rsplit('-').next()?;
    Some(u8::from_str_radix(flags, 16).ok()? & 1 == 1)
}

/// Whether and how to export traces, from the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The protocol.
    pub transport: Transport,
    /// Which traces are kept.
    pub sampler: Sampler,
}

impl TraceSettings {
    /// Reads the process's environment; `None` when traces are off.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Traces are on when an OTLP endpoint is named, or `OTEL_ENABLED` is
    /// true (the original's switch; the SDK's default endpoint then applies);
    /// off when `OTEL_ENABLED` is false, `OTEL_SDK_DISABLED` is true or
    /// `OTEL_TRACES_EXPORTER` is `none`. The protocol is
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`;
    /// unset, gRPC, as the original exported.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let flag = |name: &'static str| -> Result<Option<bool>, ConfigError> {
            set(name)
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(ConfigError::new(name, &v, "expected true or false")),
                })
                .transpose()
        };
        let enabled = flag("OTEL_ENABLED")?;
        let disabled = flag("OTEL_SDK_DISABLED")? == Some(true)
            || enabled == Some(false)
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        if disabled || !(endpoint || enabled == Some(true)) {
            return Ok(None);
        }
        if let Some(exporter) = set("OTEL_TRACES_EXPORTER")
            && exporter.trim() != "otlp"
        {
            return Err(ConfigError::new(
                "OTEL_TRACES_EXPORTER",
                &exporter,
                "clinscribe exports traces over OTLP only: expected otlp or none",
            ));
        }
        let (setting, protocol) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                set("OTEL_EXPORTER_OTLP_PROTOCOL"),
            ),
        };
        let transport = match protocol.as_deref().map(str::trim) {
            None | Some("grpc") => Transport::Grpc,
            Some("http/protobuf") => Transport::HttpProtobuf,
            Some(other) => {
                return Err(ConfigError::new(
                    setting,
                    other,
                    "expected grpc or http/protobuf",
                ));
            }
        };
        Ok(Some(Self {
            transport,
            sampler: sampler(set("OTEL_TRACES_SAMPLER"), set("OTEL_TRACES_SAMPLER_ARG"))?,
        }))
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` names, with `OTEL_TRACES_SAMPLER_ARG`
/// as the ratio of the ratio-based ones (default 1, as the specification says).
fn sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match &arg {
            None => Ok(1.0),
            Some(a) => a
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ConfigError::new("OTEL_TRACES_SAMPLER_ARG", a, "expected a ratio from 0 to 1")
                }),
        }
    };
    let (ratio, parent_based) = match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => (1.0, true),
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("parentbased_always_off") => (0.0, true),
        Some("traceidratio") => (ratio()?, false),
        Some("parentbased_traceidratio") => (ratio()?, true),
        Some(other) => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                other,
                "expected always_on, always_off, traceidratio or their parentbased_ forms",
            ));
        }
    };
    Ok(Sampler {
        ratio,
        parent_based,
    })
}

/// The sampler of the installed exporter (none: traces are off).
static SAMPLER: std::sync::OnceLock<Sampler> = std::sync::OnceLock::new();

/// The tracer of the installed exporter, for the spans of requests.
static TRACER: std::sync::OnceLock<SdkTracer> = std::sync::OnceLock::new();

/// Whether a trace starting here (with this parent) is kept.
fn keeps(parent: Option<&str>) -> bool {
    SAMPLER.get().is_some_and(|s| s.keeps(parent))
}

/// The installed exporter: flushed and stopped by [`Tracing::shutdown`].
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Builds the exporter (endpoint, headers, timeout and batching from the
    /// standard variables, read by the SDK) and the tracer. Call it inside the
    /// Tokio runtime: the gRPC client needs it.
    pub fn start(settings: &TraceSettings) -> anyhow::Result<Self> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match settings.transport {
            Transport::Grpc => builder.with_tonic().with_protocol(Protocol::Grpc).build()?,
            Transport::HttpProtobuf => builder
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()?,
        };
        let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
            opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        );
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        // The sampler's decision is made before a root span is made at all
        // (an unsampled request then costs nothing: no span beneath it is
        // made either); the SDK records every span it is given.
        let _ = SAMPLER.set(settings.sampler);
        let provider = SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::AlwaysOn,
            )))
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let _ = TRACER.set(provider.tracer(SERVICE_NAME));
        Ok(Self { provider })
    }

    /// The layer that turns this crate's spans into OpenTelemetry spans:
    /// requests and jobs, and the spans made inside them (a store call of
    /// an idle worker's poll or a background sweep starts no trace of its
    /// own). Events stay in the log: they are not exported.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::{LevelFilter, dynamic_filter_fn};
        // What each span costs is per request: no code location, thread or
        // target attributes, no idle/busy timings, and a `tracing` span's
        // OpenTelemetry context not made current on every poll (only a
        // request's is, by `RequestTrace::run`; a store span's context is
        // asked for by `traceparent` alone).
        EndAtClose(
            tracing_opentelemetry::layer()
                .with_tracer(self.provider.tracer(SERVICE_NAME))
                .with_error_events_to_status(false)
                .with_error_events_to_exceptions(false)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false),
        )
        .with_filter(
            dynamic_filter_fn(|meta, cx| {
                ours(meta)
                    && (meta.target() == module_path!()
                        || cx.lookup_current().is_some()
                        || in_a_traced_request())
            })
            // Decided once per call site: other crates' spans and every
            // event are never asked about again.
            .with_callsite_filter(|meta| {
                if ours(meta) {
                    tracing::subscriber::Interest::sometimes()
                } else {
                    tracing::subscriber::Interest::never()
                }
            })
            .with_max_level_hint(LevelFilter::INFO),
        )
    }

    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not export the last traces");
        }
    }
}

/// An OpenTelemetry layer without its enter and exit hooks: a span ends
/// when it closes. `tracing-opentelemetry` notes the time of every exit (a
/// lock and a clock read on each poll of a span's future, and on the SQLite
/// connection's thread, which sqlx lets enter the current span with each
/// command); a store call's span closes when its call returns, so its end
/// is the same.
struct EndAtClose<L>(L);

impl<S, L> tracing_subscriber::Layer<S> for EndAtClose<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: tracing_subscriber::Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.enabled(metadata, cx)
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, cx);
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(id, values, cx);
    }
    fn on_follows_from(
        &self,
        id: &tracing::span::Id,
        follows: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_follows_from(id, follows, cx);
    }
    fn on_event(&self, event: &tracing::Event<'_>, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_event(event, cx);
    }
    fn on_close(&self, id: tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, cx);
    }
    fn on_id_change(
        &self,
        old: &tracing::span::Id,
        new: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_id_change(old, new, cx);
    }
    // `OpenTelemetrySpanExt` (a span's context, its parent) finds the inner
    // layer through this; delegating is what `Layered` and `Filtered` do.
    #[allow(unsafe_code)]
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(std::ptr::from_ref(self).cast())
        } else {
            // SAFETY: the inner layer's own answer, for a type it knows.
            unsafe { self.0.downcast_raw(id) }
        }
    }
}

/// Whether the code runs inside a request whose trace is kept.
fn in_a_traced_request() -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    opentelemetry::Context::map_current(opentelemetry::Context::has_active_span)
}

/// Whether this is one of this crate's spans (all at `info` level, so that
/// the process's most verbose level stays the log's).
fn ours(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && *meta.level() <= tracing::Level::INFO
        && meta.target().starts_with("clinscribe")
}

/// The trace of one HTTP request: its span, made on the OpenTelemetry SDK
/// directly rather than as a `tracing` span. A request is the hot path: a
/// `tracing` span is entered and left on every poll of the request and, as
/// the current span, handed with each SQLite command to the connection's
/// thread (sqlx enters it there too), which cost a `get` more than the span
/// itself. The request's context is made current while it is polled, and
/// the store spans beneath it take it as their parent.
#[derive(Debug)]
pub struct RequestTrace(Option<opentelemetry::Context>);

impl RequestTrace {
    /// Starts the span of a request, named by its route template, continuing
    /// the trace of a W3C `traceparent` header when the client sent one; no
    /// span when the trace is not kept (or traces are off).
    pub fn start(method: &str, route: &str, request_id: &str, headers: &HeaderMap) -> Self {
        use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
        let Some(tracer) = TRACER.get() else {
            return Self(None);
        };
        let parent = headers.get("traceparent").and_then(|v| v.to_str().ok());
        if !keeps(parent) {
            return Self(None);
        }
        let parent = match parent {
            Some(_) => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
            None => opentelemetry::Context::new(),
        };
        // Room for the status, recorded at the end.
        let mut attributes = Vec::with_capacity(4);
        attributes.extend([
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("request_id", request_id.to_owned()),
        ]);
        let span = tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Self(Some(parent.with_span(span)))
    }

    /// Runs the request with its trace's context current.
    pub fn run<F: Future>(&self, request: F) -> impl Future<Output = F::Output> {
        use futures_util::future::Either;
        use opentelemetry::context::FutureExt as _;
        match &self.0 {
            Some(cx) => Either::Left(request.with_context(cx.clone())),
            None => Either::Right(request),
        }
    }

    /// Ends the span with the response's status (5xx marks it an error).
    pub fn end(self, status: u16) {
        use opentelemetry::trace::{Status, TraceContextExt as _};
        let Some(cx) = self.0 else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The span of one attempt at a job of `kind`: the child of the request that
/// queued it when the job kept that request's `traceparent`.
pub fn job_span(kind: &'static str, attempt: u32, trace_parent: Option<&str>) -> Span {
    if !keeps(trace_parent) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "job",
        otel.name = format!("job {kind}"),
        otel.kind = "consumer",
        job.kind = kind,
        job.attempt = attempt,
        job.outcome = tracing::field::Empty,
    );
    if let Some(parent) = trace_parent.filter(|_| !span.is_disabled()) {
        let carrier = HashMap::from([("traceparent".to_owned(), parent.to_owned())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
    span
}

/// The W3C `traceparent` of the current span, to be kept with work queued
/// for later; `None` when traces are off.
pub fn traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let span = Span::current();
    let cx = if span.is_disabled() {
        opentelemetry::Context::current()
    } else {
        span.context()
    };
    if !cx.has_active_span() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Reads propagation headers from a request.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceSettings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn traces_are_on_when_an_endpoint_or_the_originals_switch_says_so() {
        let grpc = Some(TraceSettings {
            transport: Transport::Grpc,
            sampler: Sampler::DEFAULT,
        });
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap(),
            grpc
        );
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]).unwrap(),
            grpc
        );
        assert_eq!(settings(&[("OTEL_ENABLED", "true")]).unwrap(), grpc);
        assert_eq!(
            settings(&[
                ("OTEL_ENABLED", "false"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
            ])
            .unwrap(),
            None
        );
        assert_eq!(
            settings(&[
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
            ])
            .unwrap(),
            None
        );
        assert_eq!(
            settings(&[("OTEL_TRACES_EXPORTER", "none"), ("OTEL_ENABLED", "true")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_sampler_is_read_from_the_standard_variables() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let sampler = |vars: &[(&str, &str)]| settings(vars).map(|s| s.unwrap().sampler);
        assert_eq!(sampler(&[on]).unwrap(), Sampler::DEFAULT);
        assert_eq!(
            sampler(&[
                on,
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25")
            ])
            .unwrap(),
            Sampler {
                ratio: 0.25,
                parent_based: true
            }
        );
        assert_eq!(
            sampler(&[on, ("OTEL_TRACES_SAMPLER", "always_off")]).unwrap(),
            Sampler {
                ratio: 0.0,
                parent_based: false
            }
        );
        let refused = sampler(&[on, ("OTEL_TRACES_SAMPLER", "jaeger_remote")]).unwrap_err();
        assert_eq!(refused.setting, "OTEL_TRACES_SAMPLER");
        let refused = sampler(&[
            on,
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .unwrap_err();
        assert_eq!(refused.setting, "OTEL_TRACES_SAMPLER_ARG");
    }

    #[test]
    fn a_callers_sampled_flag_decides_when_the_sampler_is_parent_based() {
        let none = Sampler {
            ratio: 0.0,
            parent_based: true,
        };
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(none.keeps(Some(sampled)));
        assert!(!none.keeps(Some(unsampled)));
        assert!(!none.keeps(None));
        assert!(!none.keeps(Some("garbage")));
        let all = Sampler {
            ratio: 1.0,
            parent_based: false,
        };
        assert!(
            all.keeps(Some(unsampled)),
            "not parent-based: the ratio decides"
        );
        let tenth = Sampler {
            ratio: 0.1,
            parent_based: false,
        };
        let kept = (0..10_000).filter(|_| tenth.keeps(None)).count();
        assert!((700..1300).contains(&kept), "{kept}");
    }

    #[test]
    fn the_protocol_is_grpc_unless_http_protobuf_is_asked_for() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            settings(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
                .unwrap()
                .map(|s| s.transport),
            Some(Transport::HttpProtobuf)
        );
        assert_eq!(
            settings(&[
                on,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
            ])
            .unwrap()
            .map(|s| s.transport),
            Some(Transport::Grpc)
        );
        let refused = settings(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert_eq!(refused.setting, "OTEL_EXPORTER_OTLP_PROTOCOL");
        let refused = settings(&[("OTEL_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(refused.setting, "OTEL_ENABLED");
        let refused = settings(&[on, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert_eq!(refused.setting, "OTEL_TRACES_EXPORTER");
    }
}
