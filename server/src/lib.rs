//! Minerva's OpenAI-compatible HTTP server: a thin axum layer over the runtime's [`ModelPool`].

mod anthropic;
mod auth;
mod convert;
mod error;
mod handlers;
mod manage;
mod metrics;
mod ollama;
mod openai;
mod page;
mod responses;
mod stream;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use minerva_runtime::{Error, ModelPool, Result, Runtime};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use error::ApiError;

/// Shared state of the handlers.
pub struct AppState {
    pool: Arc<ModelPool>,
    metrics: metrics::Metrics,
}

/// The application: routes, auth, body limit and CORS per the runtime's `[server]` config.
pub fn app(runtime: Runtime) -> (Router, Arc<AppState>) {
    let server = runtime.config().server.clone();
    let state = Arc::new(AppState {
        pool: Arc::new(ModelPool::new(runtime, server.queue_size)),
        metrics: metrics::Metrics::new(),
    });
    let api = Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{model}/load", post(handlers::load_model))
        .route("/v1/models/{model}/unload", post(handlers::unload_model))
        .route("/v1/models/pull", post(manage::pull))
        // A repo id has a slash, which clients send as is.
        .route("/v1/models/{model}", delete(manage::delete))
        .route("/v1/models/{model}/{name}", delete(manage::delete))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/messages", post(handlers::messages))
        .route("/v1/messages/count_tokens", post(handlers::count_tokens))
        .route("/tokenize", post(handlers::tokenize))
        .route("/detokenize", post(handlers::detokenize))
        .route("/apply-template", post(handlers::apply_template))
        .route("/v1/responses", post(handlers::responses))
        .route("/api/chat", post(handlers::ollama_chat))
        .route("/api/generate", post(handlers::ollama_generate))
        .route("/api/version", get(handlers::ollama_version))
        .route("/api/show", post(handlers::ollama_show))
        .route("/api/embed", post(handlers::ollama_embed))
        .route("/api/embeddings", post(handlers::ollama_embed))
        .route("/api/tags", get(handlers::ollama_models))
        .route("/api/pull", post(manage::ollama_pull))
        .route("/api/delete", delete(manage::ollama_delete))
        .route("/api/ps", get(handlers::ollama_models))
        .route(
            "/api/{route}",
            post(handlers::ollama_unsupported).delete(handlers::ollama_unsupported),
        )
        .route("/metrics", get(handlers::metrics))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_api_key,
        ));
    let mut router = Router::new()
        .route("/health", get(handlers::health))
        .route("/", get(page::index))
        .route("/chat.js", get(page::script))
        .route("/chat.css", get(page::style))
        .merge(api)
        .fallback(|| async {
            ApiError::status(StatusCode::NOT_FOUND, "no such route", "not_found")
        })
        .layer(DefaultBodyLimit::max(server.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            handlers::count_requests,
        ))
        .with_state(Arc::clone(&state));
    if !server.cors_origins.is_empty() {
        let origins = if server.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                server
                    .cors_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(Any)
                .allow_headers(Any),
        );
    }
    (router, state)
}

/// Load these configured models before serving.
pub async fn preload(state: &AppState, ids: &[String]) -> Result<()> {
    for id in ids {
        state.pool.get(id).await?;
    }
    Ok(())
}

/// Serve `runtime` on its configured address until `shutdown` resolves; in-flight requests then
/// get `server.shutdown_grace_s` seconds to finish. `on_ready` receives the bound address.
pub async fn serve(
    runtime: Runtime,
    preload_ids: &[String],
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let server = runtime.config().server.clone();
    let (router, state) = app(runtime);
    ModelPool::reap_idle_models(Arc::downgrade(&state.pool));
    preload(&state, preload_ids).await?;
    let address = format!("{}:{}", server.host, server.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("cannot listen on {address}: {e}")))?;
    on_ready(bound);
    // Token-sized SSE writes must not wait for Nagle's algorithm (it added ~100 ms to TTFT).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let graceful = axum::serve(listener, router).with_graceful_shutdown({
        let mut rx = stop_rx;
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    });
    let grace = Duration::from_secs(server.shutdown_grace_s);
    tokio::select! {
        result = graceful => result.map_err(|e| Error::engine("http", e.to_string())),
        () = async move {
            shutdown.await;
            tracing::info!(grace_s = grace.as_secs(), "shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
            tokio::time::sleep(grace).await;
            tracing::warn!("grace period over: cancelling the remaining requests");
        } => Ok(()),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
