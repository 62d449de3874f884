//! Prometheus metrics: requests by route and status, tokens in and out, time to first token and
//! per output token, queue depth, loaded and failed models and engine crashes per model.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use minerva_runtime::{ModelPool, Usage};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    prompt_tokens: Family<ModelLabels, Counter>,
    completion_tokens: Family<ModelLabels, Counter>,
    ttft: Family<ModelLabels, Histogram, fn() -> Histogram>,
    per_token: Family<ModelLabels, Histogram, fn() -> Histogram>,
    queue_depth: Family<ModelLabels, Gauge>,
    loaded: Family<ModelLabels, Gauge>,
    failed: Family<ModelLabels, Gauge>,
    crashes: Family<ModelLabels, Gauge>,
    loads: Family<ModelLabels, Gauge>,
    unloads: Family<ModelLabels, Gauge>,
    evictions: Family<ModelLabels, Gauge>,
    /// Serialises scrapes (gauges are refreshed from the pool at scrape time).
    scrape: Mutex<()>,
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("minerva");
        let requests = Family::<RouteLabels, Counter>::default();
        let prompt_tokens = Family::<ModelLabels, Counter>::default();
        let completion_tokens = Family::<ModelLabels, Counter>::default();
        let ttft = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let per_token = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        let loaded = Family::<ModelLabels, Gauge>::default();
        let failed = Family::<ModelLabels, Gauge>::default();
        let crashes = Family::<ModelLabels, Gauge>::default();
        let loads = Family::<ModelLabels, Gauge>::default();
        let unloads = Family::<ModelLabels, Gauge>::default();
        let evictions = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed",
            prompt_tokens.clone(),
        );
        registry.register(
            "completion_tokens",
            "Tokens generated",
            completion_tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to first streamed token",
            ttft.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Mean time per generated token after the first",
            per_token.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests running or waiting per model",
            queue_depth.clone(),
        );
        registry.register("model_loaded", "1 when the model is loaded", loaded.clone());
        registry.register(
            "model_failed",
            "1 when the model's engine died and it is not loaded again yet",
            failed.clone(),
        );
        registry.register(
            "engine_crashes",
            "Times the model's engine process died since the server started",
            crashes.clone(),
        );
        registry.register("model_loads", "Times the model was loaded", loads.clone());
        registry.register(
            "model_unloads",
            "Times the model was unloaded (idle, asked for or evicted)",
            unloads.clone(),
        );
        registry.register(
            "model_evictions",
            "Times the model was evicted to make room for another (max_loaded_models)",
            evictions.clone(),
        );
        Metrics {
            registry,
            requests,
            prompt_tokens,
            completion_tokens,
            ttft,
            per_token,
            queue_depth,
            loaded,
            failed,
            crashes,
            loads,
            unloads,
            evictions,
            scrape: Mutex::new(()),
        }
    }

    /// Count one HTTP request.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Record a finished generation.
    pub fn generation(&self, model: &str, usage: &Usage, ttft: Option<Duration>, total: Duration) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        self.prompt_tokens
            .get_or_create(&labels)
            .inc_by(usage.prompt_tokens.into());
        self.completion_tokens
            .get_or_create(&labels)
            .inc_by(usage.completion_tokens.into());
        if let Some(ttft) = ttft {
            self.ttft.get_or_create(&labels).observe(ttft.as_secs_f64());
            if usage.completion_tokens > 1 {
                let rest = total.saturating_sub(ttft).as_secs_f64();
                self.per_token
                    .get_or_create(&labels)
                    .observe(rest / f64::from(usage.completion_tokens - 1));
            }
        }
    }

    /// The text exposition, with gauges refreshed from `pool`.
    pub fn render(&self, pool: &ModelPool) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for (model, depth) in pool.queue_depths() {
            self.queue_depth
                .get_or_create(&ModelLabels { model })
                .set(depth as i64);
        }
        let statuses = pool.statuses();
        for model in &pool.runtime().config().models {
            let labels = ModelLabels {
                model: model.id.clone(),
            };
            let status = statuses.get(&model.id);
            let loaded = status.is_some_and(|s| s.loaded);
            let failed = status.is_some_and(|s| !s.loaded && s.failure.is_some());
            self.loaded.get_or_create(&labels).set(i64::from(loaded));
            self.failed.get_or_create(&labels).set(i64::from(failed));
            let count = |f: fn(&minerva_runtime::ModelStatus) -> u64| {
                status.map_or(0, |s| i64::try_from(f(s)).unwrap_or(i64::MAX))
            };
            self.crashes
                .get_or_create(&labels)
                .set(count(|s| s.crashes));
            self.loads.get_or_create(&labels).set(count(|s| s.loads));
            self.unloads
                .get_or_create(&labels)
                .set(count(|s| s.unloads));
            self.evictions
                .get_or_create(&labels)
                .set(count(|s| s.evictions));
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
