//! Loaded models for a long-running process: each configured model is loaded once, on first use
//! (concurrent first requests share one load) or up front, and admits a bounded number of
//! requests at a time so overload turns into a clear error instead of unbounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::request::GenerationRequest;
use crate::response::{Completion, TokenStream};
use crate::runtime::{ModelHandle, Runtime};

/// One configured model's place in the pool: its model once loaded, and its admissions.
struct PoolEntry {
    model: OnceCell<ModelHandle>,
    admission: Arc<Semaphore>,
}

/// Lazily loaded, admission-controlled models of one [`Runtime`].
pub struct ModelPool {
    runtime: Runtime,
    queue_limit: usize,
    entries: Mutex<HashMap<String, Arc<PoolEntry>>>,
}

impl ModelPool {
    /// A pool over the configured models of `runtime`, admitting at most `queue_limit` requests
    /// per model (running plus waiting).
    pub fn new(runtime: Runtime, queue_limit: usize) -> Self {
        ModelPool {
            runtime,
            queue_limit: queue_limit.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn entry(&self, id: &str) -> Result<Arc<PoolEntry>> {
        if self.runtime.config().model(id).is_none() {
            return Err(Error::ModelNotFound(format!(
                "no model `{id}` is configured"
            )));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(entries.entry(id.to_string()).or_insert_with(
            || {
                Arc::new(PoolEntry {
                    model: OnceCell::new(),
                    admission: Arc::new(Semaphore::new(self.queue_limit)),
                })
            },
        )))
    }

    /// The loaded model `id`, loading it first if needed (one load however many callers race).
    pub async fn get(&self, id: &str) -> Result<ModelHandle> {
        let entry = self.entry(id)?;
        entry
            .model
            .get_or_try_init(|| self.runtime.load(id))
            .await
            .cloned()
    }

    /// Ids of the models loaded so far.
    pub fn loaded(&self) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = entries
            .iter()
            .filter(|(_, s)| s.model.initialized())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Requests admitted but not finished, per loaded model.
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut depths: Vec<(String, usize)> = entries
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    self.queue_limit - s.admission.available_permits(),
                )
            })
            .collect();
        depths.sort();
        depths
    }

    /// Take one of model `id`'s admissions (or fail with `Overloaded`), then load it if needed.
    async fn admit(&self, id: &str) -> Result<(OwnedSemaphorePermit, ModelHandle)> {
        let entry = self.entry(id)?;
        let permit = Arc::clone(&entry.admission)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                model: id.to_string(),
                limit: self.queue_limit,
            })?;
        Ok((permit, self.get(id).await?))
    }

    /// Admit, load if needed, and stream `request` on model `id`; the admission is held until the
    /// stream ends or is dropped.
    pub async fn stream(
        &self,
        id: &str,
        request: GenerationRequest,
    ) -> Result<(ModelHandle, TokenStream)> {
        let (permit, model) = self.admit(id).await?;
        let stream = model.stream(request).await?;
        let stream = stream.map(move |event| {
            let _held = &permit;
            event
        });
        Ok((model, Box::pin(stream)))
    }

    /// Admit, load if needed, and embed `inputs` with model `id`.
    pub async fn embed(&self, id: &str, inputs: Vec<String>) -> Result<crate::backend::Embeddings> {
        let (_permit, model) = self.admit(id).await?;
        model.embed(inputs).await
    }

    /// Admit, load if needed, and generate a whole completion on model `id`.
    pub async fn generate(
        &self,
        id: &str,
        request: GenerationRequest,
    ) -> Result<(ModelHandle, Completion)> {
        let (_permit, model) = self.admit(id).await?;
        let completion = model.generate(request).await?;
        Ok((model, completion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{InferenceBackend, LoadSpec, LoadedModel, ModelDescriptor};
    use crate::capabilities::Capabilities;
    use crate::config::{Config, ModelConfig};
    use crate::format::ModelFormat;
    use crate::response::{StreamEvent, Usage};
    use crate::router::Router;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// An engine that counts loads and streams until dropped (unit-tests the pool only; the
    /// real engines are tested in tests/).
    struct Counting(Arc<AtomicUsize>);

    struct Endless(ModelDescriptor);

    #[async_trait]
    impl InferenceBackend for Counting {
        fn name(&self) -> &str {
            "llama"
        }
        fn version(&self) -> String {
            "test".into()
        }
        fn formats(&self) -> &[ModelFormat] {
            &[ModelFormat::Gguf]
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::all()
        }
        async fn load_model(&self, spec: &LoadSpec) -> Result<Arc<dyn LoadedModel>> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(Endless(ModelDescriptor {
                id: spec.id.clone(),
                engine: "llama".into(),
                context_size: 64,
                vocab_size: 1,
                has_chat_template: true,
            })))
        }
    }

    #[async_trait]
    impl LoadedModel for Endless {
        fn descriptor(&self) -> &ModelDescriptor {
            &self.0
        }
        fn tokenize(&self, _: &crate::Input) -> Result<Vec<u32>> {
            Ok(vec![0])
        }
        async fn stream(&self, _: GenerationRequest) -> Result<TokenStream> {
            let delta = || StreamEvent::Delta {
                choice: 0,
                text: "x".into(),
                logprobs: Vec::new(),
            };
            let events = futures::stream::repeat_with(move || Ok(delta()))
                .take(3)
                .chain(futures::stream::once(async {
                    Ok(StreamEvent::Done {
                        choice: 0,
                        finish_reason: crate::FinishReason::Length,
                        usage: Usage::default(),
                    })
                }));
            Ok(Box::pin(events))
        }
    }

    fn pool(loads: &Arc<AtomicUsize>, queue: usize) -> ModelPool {
        let dir = std::env::temp_dir().join(format!("minerva-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gguf = dir.join("tiny.gguf");
        crate::format::gguf::tests::write_tiny_gguf(&gguf);
        let config = Config {
            models: vec![ModelConfig::new("m", gguf.display().to_string())],
            ..Default::default()
        };
        let router = Router::new(vec![Arc::new(Counting(Arc::clone(loads)))]);
        ModelPool::new(Runtime::new(config, router), queue)
    }

    #[tokio::test]
    async fn racing_first_requests_share_one_load() {
        let loads = Arc::new(AtomicUsize::new(0));
        let pool = pool(&loads, 4);
        let gets = (0..8).map(|_| pool.get("m"));
        for r in futures::future::join_all(gets).await {
            r.unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(pool.loaded(), vec!["m".to_string()]);
        assert!(matches!(
            pool.get("other").await,
            Err(Error::ModelNotFound(_))
        ));
    }

    #[tokio::test]
    async fn admission_is_bounded_and_released_with_the_stream() {
        let loads = Arc::new(AtomicUsize::new(0));
        let pool = pool(&loads, 1);
        let chat = || GenerationRequest::chat("hi", None);
        let (_, held) = pool.stream("m", chat()).await.unwrap();
        assert_eq!(pool.queue_depths(), vec![("m".to_string(), 1)]);
        let busy = pool.stream("m", chat()).await.err().unwrap();
        assert!(matches!(busy, Error::Overloaded { limit: 1, .. }), "{busy}");
        drop(held);
        assert_eq!(pool.queue_depths(), vec![("m".to_string(), 0)]);
        assert!(pool.generate("m", chat()).await.is_ok());
    }
}
