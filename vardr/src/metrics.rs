//! Prometheus metrics (OpenMetrics text), served on `--metrics-addr`.
use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MatchLabels {
    pub rule: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabel {
    pub map: String,
}

/// Time to evaluate one event against the Cedar policies: 1 µs to ~0.5 s.
#[derive(Clone)]
pub struct EvalHistogram(pub Histogram);

impl Default for EvalHistogram {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(1e-6, 2.0, 20)))
    }
}

impl EvalHistogram {
    pub fn observe(&self, secs: f64) {
        self.0.observe(secs);
    }
}

/// Every metric the agent keeps; cheap to clone (shared atomics).
#[derive(Clone, Default)]
pub struct Metrics {
    pub events: Family<TypeLabel, Counter>,
    pub policy_matches: Family<MatchLabels, Counter>,
    pub kernel_events_lost: Counter,
    pub subscriber_events_lost: Counter,
    pub process_cache_size: Gauge,
    pub map_entries: Family<MapLabel, Gauge>,
    pub map_capacity: Family<MapLabel, Gauge>,
    pub policy_reloads: Counter,
    pub policy_reload_errors: Counter,
    /// Layer 2 verdicts, labelled type=allow|alert|deny.
    pub layer2_verdicts: Family<TypeLabel, Counter>,
    pub layer2_kills: Counter,
    /// Events Layer 2 could not turn into a request.
    pub layer2_request_errors: Counter,
    /// Policies that failed to evaluate on some event (Cedar skips them).
    pub layer2_policy_errors: Counter,
    pub layer2_eval_seconds: EvalHistogram,
    /// TLS server names seen, labelled type=allow|alert|audit|deny.
    pub tls_server_names: Family<TypeLabel, Counter>,
    /// Addresses learnt from DNS answers, and DNS responses not understood.
    pub dns_answers: Counter,
    pub dns_parse_errors: Counter,
    /// Connections whose process was killed after a denied ClientHello.
    pub tls_kills: Counter,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("vardr");
        r.register("events", "Events exported, by type", self.events.clone());
        r.register(
            "policy_matches",
            "Policy matches, by rule and verdict",
            self.policy_matches.clone(),
        );
        r.register(
            "kernel_events_lost",
            "Events the kernel could not queue (ring buffer full)",
            self.kernel_events_lost.clone(),
        );
        r.register(
            "subscriber_events_lost",
            "Events gRPC subscribers missed by reading too slowly",
            self.subscriber_events_lost.clone(),
        );
        r.register(
            "process_cache_size",
            "Processes in the process cache",
            self.process_cache_size.clone(),
        );
        r.register(
            "map_entries",
            "Entries in a rule map",
            self.map_entries.clone(),
        );
        r.register(
            "map_capacity",
            "Capacity of a rule map",
            self.map_capacity.clone(),
        );
        r.register(
            "policy_reloads",
            "Policy reloads that took effect",
            self.policy_reloads.clone(),
        );
        r.register(
            "policy_reload_errors",
            "Policy reloads rejected",
            self.policy_reload_errors.clone(),
        );
        r.register(
            "layer2_verdicts",
            "Layer 2 (Cedar) verdicts, by type allow, alert or deny",
            self.layer2_verdicts.clone(),
        );
        r.register(
            "layer2_kills",
            "Processes killed by a Layer 2 deny with @response(\"kill\")",
            self.layer2_kills.clone(),
        );
        r.register(
            "layer2_request_errors",
            "Events Layer 2 could not evaluate",
            self.layer2_request_errors.clone(),
        );
        r.register(
            "layer2_policy_errors",
            "Cedar policies skipped on an event because they failed to evaluate",
            self.layer2_policy_errors.clone(),
        );
        r.register(
            "layer2_eval_seconds",
            "Time to evaluate one event against the Cedar policies",
            self.layer2_eval_seconds.0.clone(),
        );
        r.register(
            "tls_server_names",
            "TLS server names seen in ClientHellos, by verdict",
            self.tls_server_names.clone(),
        );
        r.register(
            "dns_answers",
            "Address records learnt from DNS responses",
            self.dns_answers.clone(),
        );
        r.register(
            "dns_parse_errors",
            "DNS responses that could not be parsed",
            self.dns_parse_errors.clone(),
        );
        r.register(
            "tls_kills",
            "Processes killed after their ClientHello was dropped by a domain deny",
            self.tls_kills.clone(),
        );
        r
    }

    pub fn set_map(&self, map: &str, entries: usize, capacity: usize) {
        let l = MapLabel { map: map.into() };
        self.map_entries.get_or_create(&l).set(entries as i64);
        self.map_capacity.get_or_create(&l).set(capacity as i64);
    }
}

pub fn encode(r: &Registry) -> String {
    let mut s = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut s, r) {
        tracing::warn!("encoding metrics: {e}");
    }
    s
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("metrics on http://{addr}/metrics");
    loop {
        let (stream, _) = listener.accept().await?;
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(encode(&registry))))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found; try /metrics\n")))
                    };
                    resp
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}
