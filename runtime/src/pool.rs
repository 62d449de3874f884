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

struct Slot {
    model: OnceCell<ModelHandle>,
    admission: Arc<Semaphore>,
}

/// Lazily loaded, admission-controlled models of one [`Runtime`].
pub struct ModelPool {
    runtime: Runtime,
    queue_limit: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl ModelPool {
    /// A pool over the configured models of `runtime`, admitting at most `queue_limit` requests
    /// per model (running plus waiting).
    pub fn new(runtime: Runtime, queue_limit: usize) -> Self {
        ModelPool {
            runtime,
            queue_limit: queue_limit.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>> {
        if self.runtime.config().model(id).is_none() {
            return Err(Error::ModelNotFound(format!(
                "no model `{id}` is configured"
            )));
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(slots.entry(id.to_string()).or_insert_with(
            || {
                Arc::new(Slot {
                    model: OnceCell::new(),
                    admission: Arc::new(Semaphore::new(self.queue_limit)),
                })
            },
        )))
    }

    /// The loaded model `id`, loading it first if needed (one load however many callers race).
    pub async fn get(&self, id: &str) -> Result<ModelHandle> {
        let slot = self.slot(id)?;
        slot.model
            .get_or_try_init(|| self.runtime.load(id))
            .await
            .cloned()
    }

    /// Ids of the models loaded so far.
    pub fn loaded(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.model.initialized())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Requests admitted but not finished, per loaded model.
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut depths: Vec<(String, usize)> = slots
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

    fn admit(&self, id: &str, slot: &Slot) -> Result<OwnedSemaphorePermit> {
        Arc::clone(&slot.admission)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                model: id.to_string(),
                limit: self.queue_limit,
            })
    }

    /// Admit, load if needed, and stream `request` on model `id`; the admission is held until the
    /// stream ends or is dropped.
    pub async fn stream(
        &self,
        id: &str,
        request: GenerationRequest,
    ) -> Result<(ModelHandle, TokenStream)> {
        let slot = self.slot(id)?;
        let permit = self.admit(id, &slot)?;
        let model = self.get(id).await?;
        let stream = model.stream(request).await?;
        let stream = stream.map(move |event| {
            let _held = &permit;
            event
        });
        Ok((model, Box::pin(stream)))
    }

    /// Admit, load if needed, and embed `inputs` with model `id`.
    pub async fn embed(&self, id: &str, inputs: Vec<String>) -> Result<crate::backend::Embeddings> {
        let slot = self.slot(id)?;
        let _permit = self.admit(id, &slot)?;
        self.get(id).await?.embed(inputs).await
    }

    /// Admit, load if needed, and generate a whole completion on model `id`.
    pub async fn generate(
        &self,
        id: &str,
        request: GenerationRequest,
    ) -> Result<(ModelHandle, Completion)> {
        let slot = self.slot(id)?;
        let _permit = self.admit(id, &slot)?;
        let model = self.get(id).await?;
        let completion = model.generate(request).await?;
        Ok((model, completion))
    }
}
